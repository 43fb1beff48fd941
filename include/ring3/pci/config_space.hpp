// Decoding of PCI configuration space from any byte source (a sysfs `config` file, a VFIO config
// region, a vfio-user region read, a saved test file). Nothing here touches a device.
//
// PCI Local Bus Specification 3.0 §6.1 (header), §6.2.5 (BARs), §6.7 (capability list);
// PCI Express Base 4.0 §7.5 (PCIe capability), §7.6 (extended capabilities, from offset 0x100).
// Every offset taken from the data is checked before it is followed; a malformed list (a pointer
// into the header, past the end, a loop, a truncated capability) stops the walk with an error
// naming the offset, and what was decoded before it is kept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace ring3::pci {

// Sizes of the three views of config space a program can get.
inline constexpr std::size_t kConfigHeaderSize = 64;         // what an unprivileged read returns
inline constexpr std::size_t kConfigConventionalSize = 256;  // PCI
inline constexpr std::size_t kConfigExtendedSize = 4096;     // PCI Express

// Standard header registers, PCI Local Bus 3.0 §6.1 (type 0 and type 1 share the first 16 bytes).
namespace cfg {
inline constexpr std::uint16_t vendor_id = 0x00;
inline constexpr std::uint16_t device_id = 0x02;
inline constexpr std::uint16_t command = 0x04;
inline constexpr std::uint16_t status = 0x06;
inline constexpr std::uint16_t revision_id = 0x08;
inline constexpr std::uint16_t class_code = 0x09;  // 3 bytes: prog-if, subclass, base class
inline constexpr std::uint16_t cache_line_size = 0x0c;
inline constexpr std::uint16_t latency_timer = 0x0d;
inline constexpr std::uint16_t header_type = 0x0e;
inline constexpr std::uint16_t bar0 = 0x10;
inline constexpr std::uint16_t subsystem_vendor_id = 0x2c;  // type 0
inline constexpr std::uint16_t subsystem_id = 0x2e;         // type 0
inline constexpr std::uint16_t capabilities_pointer = 0x34;
inline constexpr std::uint16_t interrupt_line = 0x3c;
inline constexpr std::uint16_t interrupt_pin = 0x3d;

// Command register bits (§6.2.2).
inline constexpr std::uint16_t command_io_space = 1u << 0;
inline constexpr std::uint16_t command_memory_space = 1u << 1;
inline constexpr std::uint16_t command_bus_master = 1u << 2;
inline constexpr std::uint16_t command_interrupt_disable = 1u << 10;
// Status register bits (§6.2.3).
inline constexpr std::uint16_t status_interrupt = 1u << 3;
inline constexpr std::uint16_t status_capabilities_list = 1u << 4;
}  // namespace cfg

// A bounds-checked little-endian view of (part of) a config space. Reads past the end throw
// ring3::Error naming the offset and the size available:
//   "read 32 bits of config space at 0x3e: past the end of the 64 bytes available".
class ConfigView {
  public:
    explicit ConfigView(std::span<const std::uint8_t> bytes) noexcept : bytes_(bytes) {}

    std::size_t size() const noexcept { return bytes_.size(); }
    bool has(std::size_t offset, std::size_t length) const noexcept {
        return offset <= bytes_.size() && length <= bytes_.size() - offset;
    }
    std::uint8_t read8(std::size_t offset) const;
    std::uint16_t read16(std::size_t offset) const;
    std::uint32_t read32(std::size_t offset) const;
    std::span<const std::uint8_t> bytes() const noexcept { return bytes_; }

  private:
    std::span<const std::uint8_t> bytes_;
};

enum class BarKind { unused, memory32, memory64, io };

// One BAR as its register(s) describe it. Sizes are not in config space without writing it; they
// come from sysfs `resource` or VFIO region info and are attached by the caller.
// A register that reads 0 is `unused` (not implemented, or never assigned an address: the two
// cannot be told apart without sizing the BAR, which writes config space).
struct BarRegister {
    unsigned index = 0;  // 0..5 (type 0) or 0..1 (type 1)
    BarKind kind = BarKind::unused;
    bool prefetchable = false;
    std::uint64_t address = 0;  // base address with the flag bits masked off
};

struct Header {
    std::uint16_t vendor_id = 0;
    std::uint16_t device_id = 0;
    std::uint16_t command = 0;
    std::uint16_t status = 0;
    std::uint8_t revision = 0;
    std::uint32_t class_code = 0;    // 24 bits: base class << 16 | subclass << 8 | prog-if
    std::uint8_t header_layout = 0;  // header type bits 6:0: 0 endpoint, 1 PCI-PCI bridge
    bool multifunction = false;
    std::uint16_t subsystem_vendor_id = 0;  // type 0 only
    std::uint16_t subsystem_id = 0;         // type 0 only
    std::uint8_t capabilities_pointer = 0;  // 0 when status says there is no list
    std::uint8_t interrupt_line = 0;
    std::uint8_t interrupt_pin = 0;  // 0 none, 1..4 INTA..INTD
    // Type 1 only: bus numbers.
    std::uint8_t primary_bus = 0;
    std::uint8_t secondary_bus = 0;
    std::uint8_t subordinate_bus = 0;
    // Every BAR register that starts a BAR, in order, unused ones included (the upper half of a
    // 64-bit BAR is folded into it and has no entry of its own): so `bars[i].index` may skip.
    std::vector<BarRegister> bars;
    // The first malformed BAR register, empty when all are well-formed: a 64-bit BAR in the last
    // slot ("BAR5 at 0x24 is 64-bit but is the last BAR register: its upper 32 bits have no
    // register"), or a reserved memory type. Decoding goes on with the other BARs.
    std::string bar_error;
};

// Throws ring3::Error when fewer than 64 bytes are given, the vendor id is 0xffff (no device / a
// read of a removed device), or the header layout is not 0 or 1. The capabilities pointer has its
// two reserved low bits masked (PCI 3.0 §6.7).
Header decode_header(const ConfigView& config);

// Capability ids: PCI Code and ID Assignment Specification 1.11 §2 and §3.
namespace cap {
inline constexpr std::uint16_t power_management = 0x01;
inline constexpr std::uint16_t msi = 0x05;
inline constexpr std::uint16_t vendor_specific = 0x09;
inline constexpr std::uint16_t pci_express = 0x10;
inline constexpr std::uint16_t msix = 0x11;
}  // namespace cap
namespace ext_cap {
inline constexpr std::uint16_t advanced_error_reporting = 0x0001;
inline constexpr std::uint16_t device_serial_number = 0x0003;
inline constexpr std::uint16_t alternative_routing_id = 0x000e;
inline constexpr std::uint16_t single_root_io_virtualization = 0x0010;
}  // namespace ext_cap

struct PowerManagementInfo {  // PCI PM 1.2 §3.2
    std::uint8_t version = 0;
    std::uint8_t power_state = 0;  // D0..D3hot
    bool no_soft_reset = false;
};

struct MsiInfo {  // PCI 3.0 §6.8.1
    bool enabled = false;
    bool address_64bit = false;
    bool per_vector_masking = false;
    unsigned vectors_capable = 1;  // 1, 2, 4, ... 32
    unsigned vectors_enabled = 1;
};

struct MsixInfo {  // PCI 3.0 §6.8.2
    bool enabled = false;
    bool function_masked = false;
    unsigned table_size = 0;  // number of vectors (the register holds N-1)
    std::uint8_t table_bir = 0;
    std::uint32_t table_offset = 0;
    std::uint8_t pba_bir = 0;
    std::uint32_t pba_offset = 0;
};

struct PcieInfo {  // PCIe 4.0 §7.5.3
    std::uint8_t version = 0;
    std::uint8_t port_type = 0;          // Device/Port Type field
    bool function_level_reset = false;   // Device Capabilities bit 28
    unsigned max_payload_supported = 0;  // bytes
    unsigned link_speed_max = 0;  // Link Capabilities: 1 = 2.5 GT/s, 2 = 5, 3 = 8, 4 = 16, 5 = 32
    unsigned link_width_max = 0;
    unsigned link_speed = 0;  // Link Status
    unsigned link_width = 0;
};

struct VendorSpecificInfo {   // PCI 3.0 §6.7, Code and ID Assignment §2 (ID 09h)
    std::uint8_t length = 0;  // the Length byte at +2: bytes of the whole capability
};

struct Capability {
    std::uint16_t offset = 0;
    std::uint16_t id = 0;
    bool extended = false;
    std::uint8_t version = 0;  // extended capabilities only
    std::variant<std::monostate, PowerManagementInfo, MsiInfo, MsixInfo, PcieInfo,
                 VendorSpecificInfo>
        detail;
};

struct CapabilityWalk {
    std::vector<Capability> capabilities;  // everything decoded before any error
    std::string error;                     // empty when the whole list was walked
};

// The standard list (from the Capabilities Pointer) and the extended list (from 0x100; needs the
// 4096-byte view: a view that ends at or before 0x100 gives an empty list with no error). Neither
// throws: every problem ends the walk with `error` set, what was decoded before it kept. Errors
// (offsets in hex, sizes in decimal):
//   "41 bytes of config space, shorter than the 64-byte header"
//   "vendor ID reads 0xffff: no device answers (absent, removed or powered off)"
//   "status says there is a capability list but the capabilities pointer is 0"
//   "capabilities start at 0x40, beyond the 64 bytes readable without root; run as root to decode
//    them"                                           (the view is exactly the 64-byte header)
//   "capabilities pointer points to 0x20, inside the header"
//   "capability at 0x50 points to 0x20, inside the header"
//   "capability at 0x50 points to 0xc0, past the end of the 192 bytes available"
//   "capability list loops back to 0x40"
//   "capability at 0xf8 (MSI-X) is truncated: needs 12 bytes, 8 left"
//                           (cut by the end of the view or of the 256-byte PCI-compatible space)
//   "capability at 0x40 (Vendor Specific) has length 2, shorter than its 3-byte header"
//   "extended capability at 0x100 points to 0x40, below 0x100 where extended capabilities start"
//   "extended capability at 0x100 points to 0x148, past the end of the 320 bytes available"
//   "extended capability list loops back to 0x100"
//   "extended capability at 0x148 is truncated: needs 4 bytes, 2 left"
//   "extended capability header at 0x100 reads 0xffffffff: nothing is readable there (device
//    removed, or no extended config access)"
// Pointers have their two reserved low bits masked, as PCI 3.0 §6.7 and PCIe 4.0 §7.6.3 tell
// software to do, so an unaligned pointer is followed to the dword it lies in. An extended header
// of 0 (ID 0, version 0, next 0) means "no extended capabilities" (PCIe 4.0 §7.6.3) and ends the
// list without an entry.
CapabilityWalk walk_capabilities(const ConfigView& config);
CapabilityWalk walk_extended_capabilities(const ConfigView& config);

// Names as the PCI-SIG assigns them ("MSI-X", "Power Management", "Advanced Error Reporting"...).
std::string capability_name(std::uint16_t id);
std::string extended_capability_name(std::uint16_t id);
std::string pcie_port_type_name(std::uint8_t port_type);
std::string link_speed_name(unsigned speed);  // "2.5GT/s", ...

// One-line summaries for tools, in lspci-like terms:
//   "Power Management version 3"
//   "MSI: Enable- Count=1/1 64bit+ Maskable-"
//   "MSI-X: Enable+ Count=5 Masked- Table: BAR3+0x0000 PBA: BAR3+0x2000"
//   "Express (v2) Endpoint, FLR+, Link: 2.5GT/s x1 (max 2.5GT/s x1)"  (no Link part without a link)
//   "Vendor Specific: Len=0x14"
//   "Advanced Error Reporting (v2)"                                    (extended: name and version)
//   "Vital Product Data"                                               (others: the name)
std::string describe(const Capability& capability);

}  // namespace ring3::pci
