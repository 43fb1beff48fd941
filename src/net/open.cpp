// open_net_port(): TAP specs to the TAP port, PCI specs through the registry (open.hpp).
#include <fmt/core.h>

#include "ring3/core/error.hpp"
#include "ring3/net/open.hpp"
#include "ring3/net/tap_port.hpp"

namespace ring3::net {

const NetDriver* find_net_driver(std::span<const NetDriver> drivers, std::uint16_t vendor,
                                 std::uint16_t device, std::uint32_t class_code) noexcept {
    for (const NetDriver& d : drivers) {
        if (d.vendor == vendor && (d.device == NetDriver::kAnyDevice || d.device == device) &&
            (class_code & d.class_mask) == d.class_code) {
            return &d;
        }
    }
    return nullptr;
}

std::string no_driver_reason(std::span<const NetDriver> drivers, std::uint16_t vendor,
                             std::uint16_t device, std::uint32_t class_code) {
    std::string known;
    for (const NetDriver& d : drivers) {
        if (std::string_view(d.name).find("(refused)") != std::string_view::npos) {
            continue;  // matched only to say why it is not driven (drivers.cpp)
        }
        known += known.empty() ? "" : ", ";
        known += d.device == NetDriver::kAnyDevice
                     ? fmt::format("{} ([{:04x}:*])", d.name, d.vendor)
                     : fmt::format("{} ([{:04x}:{:04x}])", d.name, d.vendor, d.device);
    }
    // PCI Code and ID Assignment Specification §1.3: base class 02h is a network controller,
    // 02:00:00 an Ethernet controller.
    const char* kind =
        (class_code >> 16) == 0x02
            ? ((class_code >> 8) == 0x0200 ? " (Ethernet controller)" : " (network controller)")
            : " (not a network controller)";
    return fmt::format("no network driver for [{:04x}:{:04x}] class {:06x}{}; ring3 drives: {}",
                       vendor, device, class_code, kind,
                       known.empty() ? "none yet (a TAP device works: tap:NAME)" : known);
}

std::unique_ptr<NetPort> open_net_port(std::string_view spec, const OpenNetOptions& options) {
    constexpr std::string_view kTap = "tap:";
    if (spec.substr(0, kTap.size()) == kTap) {
        TapOptions tap;
        tap.queues = options.queues;
        return open_tap_port(spec.substr(kTap.size()), tap);
    }
    auto device = open_device(spec, options.device);
    const std::uint16_t vendor = device->vendor_id();
    const std::uint16_t device_id = device->device_id();
    const std::uint32_t class_code = device->class_code();
    const std::span<const NetDriver> drivers = net_drivers();
    const NetDriver* driver = find_net_driver(drivers, vendor, device_id, class_code);
    if (driver == nullptr) {
        throw Error::invalid("open network port", device->name(),
                             no_driver_reason(drivers, vendor, device_id, class_code), ENODEV);
    }
    return driver->factory(std::move(device), options);
}

}  // namespace ring3::net
