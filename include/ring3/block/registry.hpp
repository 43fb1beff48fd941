// The driver registry of the block face (DESIGN.md: "the registry from (vendor, device, class) to
// a driver's factory beside each face"). The block layer knows only the shape of an entry; the
// list itself is explicit, in a small library above the drivers (src/drivers/block_registry),
// because static-initialiser self-registration does not survive static linking (the linker drops
// objects nothing references).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "ring3/block/block_device.hpp"
#include "ring3/block/open.hpp"
#include "ring3/device/device.hpp"

namespace ring3::block {

using DriverFactory = std::unique_ptr<BlockDevice> (*)(std::unique_ptr<Device> device,
                                                       const OpenBlockOptions& options);

inline constexpr std::uint16_t kAnyId = 0xffff;  // matches every vendor or device id

struct DriverEntry {
    const char* name = "";          // "NVMe", "virtio-blk"
    std::uint16_t vendor = kAnyId;  // PCI vendor id, or kAnyId
    std::uint16_t device = kAnyId;  // PCI device id, or kAnyId
    std::uint32_t class_code = 0;   // base class << 16 | subclass << 8 | prog-if
    std::uint32_t class_mask = 0;   // the class bits that must match (0: any class)
    DriverFactory factory = nullptr;
    const char* note = "";  // shown in the "what ring3 drives" list ("modern")
};

// The first entry matching the ids, or nullptr.
const DriverEntry* find_driver(std::span<const DriverEntry> drivers, std::uint16_t vendor,
                               std::uint16_t device, std::uint32_t class_code) noexcept;

// "NVMe (class 01:08:02), virtio-blk (1af4:1042, modern)": for error messages.
std::string describe_drivers(std::span<const DriverEntry> drivers);

// Opens `device` with the driver the registry picks; ring3::Error (ENODEV) naming the device's
// ids and what ring3 drives when none matches.
std::unique_ptr<BlockDevice> open_block_device(std::unique_ptr<Device> device,
                                               std::span<const DriverEntry> drivers,
                                               const OpenBlockOptions& options = {});

}  // namespace ring3::block
