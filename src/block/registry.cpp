#include "ring3/block/registry.hpp"

#include <fmt/core.h>

#include <cerrno>

#include "ring3/core/error.hpp"

namespace ring3::block {

const DriverEntry* find_driver(std::span<const DriverEntry> drivers, std::uint16_t vendor,
                               std::uint16_t device, std::uint32_t class_code) noexcept {
    for (const auto& entry : drivers) {
        if ((entry.vendor == kAnyId || entry.vendor == vendor) &&
            (entry.device == kAnyId || entry.device == device) &&
            (class_code & entry.class_mask) == (entry.class_code & entry.class_mask)) {
            return &entry;
        }
    }
    return nullptr;
}

std::string describe_drivers(std::span<const DriverEntry> drivers) {
    std::string text;
    for (const auto& entry : drivers) {
        if (!text.empty()) {
            text += ", ";
        }
        std::string what;
        if (entry.vendor != kAnyId) {
            what = entry.device != kAnyId ? fmt::format("{:04x}:{:04x}", entry.vendor, entry.device)
                                          : fmt::format("vendor {:04x}", entry.vendor);
        } else if (entry.class_mask != 0) {
            what = fmt::format("class {:02x}:{:02x}:{:02x}", entry.class_code >> 16,
                               entry.class_code >> 8 & 0xff, entry.class_code & 0xff);
        }
        if (*entry.note != '\0') {
            what += what.empty() ? entry.note : fmt::format(", {}", entry.note);
        }
        text += what.empty() ? std::string(entry.name) : fmt::format("{} ({})", entry.name, what);
    }
    return text;
}

std::unique_ptr<BlockDevice> open_block_device(std::unique_ptr<Device> device,
                                               std::span<const DriverEntry> drivers,
                                               const OpenBlockOptions& options) {
    const std::uint16_t vendor = device->vendor_id();
    const std::uint16_t id = device->device_id();
    const std::uint32_t class_code = device->class_code();
    const DriverEntry* entry = find_driver(drivers, vendor, id, class_code);
    if (entry == nullptr) {
        throw Error::invalid(
            "open block device", device->name(),
            fmt::format("no block driver for [{:04x}:{:04x}] class {:02x}:{:02x}:{:02x}; ring3 "
                        "drives {}",
                        vendor, id, class_code >> 16, class_code >> 8 & 0xff, class_code & 0xff,
                        describe_drivers(drivers)),
            ENODEV);
    }
    return entry->factory(std::move(device), options);
}

}  // namespace ring3::block
