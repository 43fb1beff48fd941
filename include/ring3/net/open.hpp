// Opening a network port by spec:
//   tap:NAME                    a Linux TAP device (tap_port.hpp), opened or created;
//   vfio:BDF, uio:BDF, BDF      a PCI NIC (include/ring3/device/device.hpp), driven by the driver
//                               that the registry below names for its (vendor, device, class).
//
// The registry is an explicit list in src/net/drivers.cpp, compiled into the ring3_net_open
// library, which links every NIC driver: no static-initialiser self-registration (a static
// library drops the objects nobody references, and their registrations with them).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "ring3/device/device.hpp"
#include "ring3/net/net_port.hpp"

namespace ring3::net {

struct OpenNetOptions {
    unsigned queues = 1;  // queue pairs to set up (TAP: IFF_MULTI_QUEUE if > 1)
    irq::WaitMode mode = irq::WaitMode::poll;  // a PCI driver sets up interrupt vectors unless poll
    OpenOptions device;                        // PCI backends
};

// A driver's constructor: takes the opened PCI device.
using NetDriverFactory = std::unique_ptr<NetPort> (*)(std::unique_ptr<Device> device,
                                                      const OpenNetOptions& options);

// One registry entry. A device matches when its vendor equals `vendor`, its device id equals
// `device` (or `device` is kAnyDevice) and (class_code & class_mask) == class_code of the entry.
struct NetDriver {
    static constexpr std::uint32_t kAnyDevice = 0xffffffff;
    const char* name;  // "virtio-net", "e1000e", "e1000 (refused)"
    std::uint16_t vendor;
    std::uint32_t device;      // a 16-bit id, or kAnyDevice
    std::uint32_t class_code;  // 24 bits: base class, subclass, programming interface
    std::uint32_t class_mask;
    NetDriverFactory factory;
};

// The drivers ring3 has. An entry whose name ends in "(refused)" matches a device only to refuse it
// with a reason (its factory throws); no_driver_reason() does not list it as driven.
std::span<const NetDriver> net_drivers() noexcept;

// The first entry of `drivers` matching the device; nullptr when none does.
const NetDriver* find_net_driver(std::span<const NetDriver> drivers, std::uint16_t vendor,
                                 std::uint16_t device, std::uint32_t class_code) noexcept;

// "no network driver for [1af4:1041] class 020000 (Ethernet controller); ring3 drives: none yet"
std::string no_driver_reason(std::span<const NetDriver> drivers, std::uint16_t vendor,
                             std::uint16_t device, std::uint32_t class_code);

// Opens the port `spec` names. Throws ring3::Error (ENODEV when no driver fits the device).
std::unique_ptr<NetPort> open_net_port(std::string_view spec, const OpenNetOptions& options = {});

}  // namespace ring3::net
