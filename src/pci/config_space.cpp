// Config-space decoding. Everything read here comes from a device (or from a file claiming to be
// one): every offset taken from the data is checked before it is followed, every read goes through
// ConfigView, and the walks bound themselves by remembering where they have been.
#include "ring3/pci/config_space.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <bitset>

#include "ring3/core/error.hpp"

namespace ring3::pci {
namespace {

// Bits hi..lo of a register, as the specs print fields (high bit first).
constexpr unsigned field(std::uint32_t value, unsigned hi, unsigned lo) {
    return static_cast<unsigned>((value >> lo) & ((std::uint64_t{1} << (hi - lo + 1)) - 1));
}
constexpr bool bit(std::uint32_t value, unsigned n) {
    return ((value >> n) & 1u) != 0;
}
const char* flag(bool value) {
    return value ? "+" : "-";
}

// Type 0 header, PCI Local Bus 3.0 §6.1 (Figure 6-1) and §6.2.1 (Header Type: bits 6:0 layout,
// bit 7 multi-function).
constexpr unsigned kHeaderTypeMultifunctionBit = 7;
constexpr std::uint8_t kLayoutEndpoint = 0;
constexpr std::uint8_t kLayoutBridge = 1;
constexpr std::uint8_t kLayoutCardbus = 2;
constexpr unsigned kEndpointBarCount = 6;
// Type 1 header, PCI-to-PCI Bridge Architecture 1.2 §3.2: two BARs, then the bus numbers.
constexpr unsigned kBridgeBarCount = 2;
constexpr std::size_t kPrimaryBus = 0x18;
constexpr std::size_t kSecondaryBus = 0x19;
constexpr std::size_t kSubordinateBus = 0x1a;
constexpr std::uint16_t kNoDevice = 0xffff;  // what a read of an absent function returns

// Base Address Registers, PCI 3.0 §6.2.5.1: bit 0 selects I/O space; a memory BAR has its type
// in bits 2:1 (00 32-bit, 01 reserved since PCI 3.0 (PCI 2.x: below 1 MiB), 10 64-bit, 11
// reserved) and Prefetchable in bit 3; the address is bits 31:4 (memory) or 31:2 (I/O).
constexpr unsigned kBarIoSpaceBit = 0;
constexpr unsigned kBarPrefetchableBit = 3;
constexpr unsigned kBarType32 = 0b00;
constexpr unsigned kBarTypeBelow1M = 0b01;
constexpr unsigned kBarType64 = 0b10;
constexpr std::uint32_t kBarMemoryAddressMask = ~std::uint32_t{0xf};
constexpr std::uint32_t kBarIoAddressMask = ~std::uint32_t{0x3};

// Capability list, PCI 3.0 §6.7: each entry starts with the ID byte and the next pointer; the
// pointers' two low bits are reserved and software must mask them. The list lives after the
// header, inside the first 256 bytes (8-bit pointers).
constexpr std::size_t kCapNext = 0x01;
constexpr std::uint8_t kCapPointerMask = 0xfc;
constexpr std::size_t kCapHeaderSize = 2;

// PCI Bus Power Management Interface 1.2 §3.2: PMC at +2 (version in bits 2:0), PMCSR at +4
// (PowerState bits 1:0, No_Soft_Reset bit 3); the register block is 8 bytes.
constexpr std::size_t kPmCapabilities = 0x02;
constexpr std::size_t kPmControlStatus = 0x04;
constexpr unsigned kPmcsrNoSoftResetBit = 3;
constexpr std::size_t kPmSize = 8;

// MSI, PCI 3.0 §6.8.1: Message Control at +2 (Enable bit 0, Multiple Message Capable 3:1,
// Multiple Message Enable 6:4, 64-bit address 7, per-vector masking 8). The structure is 10, 14,
// 20 or 24 bytes depending on the last two (Figure 6-9).
constexpr std::size_t kMsiControl = 0x02;
constexpr unsigned kMsiEnableBit = 0;
constexpr unsigned kMsi64BitBit = 7;
constexpr unsigned kMsiPerVectorMaskBit = 8;
constexpr std::size_t kMsiSize32 = 10;
constexpr std::size_t kMsiSize64 = 14;
constexpr std::size_t kMsiSize32Masked = 20;
constexpr std::size_t kMsiSize64Masked = 24;

// MSI-X, PCI 3.0 §6.8.2: Message Control at +2 (Table Size N-1 in bits 10:0, Function Mask 14,
// Enable 15), Table Offset/BIR at +4 and PBA Offset/BIR at +8 (BIR bits 2:0, offset bits 31:3).
constexpr std::size_t kMsixControl = 0x02;
constexpr std::size_t kMsixTable = 0x04;
constexpr std::size_t kMsixPba = 0x08;
constexpr unsigned kMsixFunctionMaskBit = 14;
constexpr unsigned kMsixEnableBit = 15;
constexpr std::uint32_t kMsixOffsetMask = ~std::uint32_t{0x7};
constexpr std::size_t kMsixSize = 12;

// PCI Express Capability, PCIe Base 4.0 §7.5.3: PCIe Capabilities at +2 (version 3:0, Device/Port
// Type 7:4), Device Capabilities at +4 (Max_Payload_Size Supported 2:0, FLR bit 28), Link
// Capabilities at +0xc (Max Link Speed 3:0, Maximum Link Width 9:4), Link Status at +0x12
// (Current Link Speed 3:0, Negotiated Link Width 9:4). We read up to the end of Link Status.
constexpr std::size_t kPcieCapabilities = 0x02;
constexpr std::size_t kPcieDeviceCapabilities = 0x04;
constexpr std::size_t kPcieLinkCapabilities = 0x0c;
constexpr std::size_t kPcieLinkStatus = 0x12;
constexpr unsigned kPcieFlrBit = 28;
constexpr std::size_t kPcieSizeDecoded = 0x14;

// Vendor Specific, PCI 3.0 §6.7 / Code and ID Assignment §2: a Length byte at +2 covers the
// whole capability, its 3-byte header included.
constexpr std::size_t kVendorLength = 0x02;
constexpr std::size_t kVendorHeaderSize = 3;

// Extended capabilities, PCIe Base 4.0 §7.6 and §7.6.3: from 0x100, each starts with a 32-bit
// header (ID 15:0, version 19:16, next offset 31:20 with its two low bits reserved). A header of 0
// at 0x100 means there are none; all-ones is what an unreadable dword returns.
constexpr std::size_t kExtStart = 0x100;
constexpr std::size_t kExtHeaderSize = 4;
constexpr std::uint32_t kExtNextMask = 0xffc;
constexpr std::uint32_t kExtUnreadable = 0xffffffff;

[[noreturn]] void throw_out_of_range(std::size_t offset, std::size_t width, std::size_t size) {
    throw Error::invalid(fmt::format("read {} bits of config space", width * 8),
                         fmt::format("at {:#x}", offset),
                         fmt::format("past the end of the {} bytes available", size));
}

// Why the header cannot be decoded at all, if it cannot.
std::optional<std::string> unreadable_header(const ConfigView& config) {
    if (config.size() < kConfigHeaderSize) {
        return fmt::format("{} bytes of config space, shorter than the {}-byte header",
                           config.size(), kConfigHeaderSize);
    }
    if (config.read16(cfg::vendor_id) == kNoDevice) {
        return std::string(
            "vendor ID reads 0xffff: no device answers (absent, removed or "
            "powered off)");
    }
    return std::nullopt;
}

// Fills header.bars from `count` BAR registers (PCI 3.0 §6.2.5.1).
void decode_bars(const ConfigView& config, unsigned count, Header& header) {
    const auto note = [&](std::string problem) {
        if (header.bar_error.empty()) {
            header.bar_error = std::move(problem);
        }
    };
    for (unsigned index = 0; index < count; ++index) {
        const std::size_t offset = cfg::bar0 + 4 * index;
        const std::uint32_t low = config.read32(offset);
        BarRegister bar;
        bar.index = index;
        if (bit(low, kBarIoSpaceBit)) {
            bar.kind = BarKind::io;
            bar.address = low & kBarIoAddressMask;
        } else if (low != 0) {
            bar.prefetchable = bit(low, kBarPrefetchableBit);
            bar.address = low & kBarMemoryAddressMask;
            const unsigned type = field(low, 2, 1);
            if (type == kBarType32 || type == kBarTypeBelow1M) {
                bar.kind = BarKind::memory32;
            } else if (type == kBarType64) {
                bar.kind = BarKind::memory64;
                if (index + 1 < count) {
                    bar.address |= std::uint64_t{config.read32(offset + 4)} << 32;
                    ++index;  // the upper half is this BAR's, not a BAR of its own
                } else {
                    note(
                        fmt::format("BAR{} at {:#x} is 64-bit but is the last BAR register: its "
                                    "upper 32 bits have no register",
                                    index, offset));
                }
            } else {
                note(fmt::format("BAR{} at {:#x} has the reserved memory type 3", index, offset));
                bar.kind = BarKind::unused;
                bar.prefetchable = false;
                bar.address = 0;
            }
        }
        header.bars.push_back(bar);
    }
}

// Bytes a standard capability needs for this decoder to read it; reads only what `config` holds.
std::size_t required_length(const ConfigView& config, std::size_t offset, std::uint8_t id) {
    switch (id) {
        case cap::power_management:
            return kPmSize;
        case cap::msi: {
            if (!config.has(offset + kMsiControl, 2)) {
                return kMsiSize32;  // the smallest layout; the view is shorter even than that
            }
            const std::uint16_t control = config.read16(offset + kMsiControl);
            const bool wide = bit(control, kMsi64BitBit);
            if (bit(control, kMsiPerVectorMaskBit)) {
                return wide ? kMsiSize64Masked : kMsiSize32Masked;
            }
            return wide ? kMsiSize64 : kMsiSize32;
        }
        case cap::msix:
            return kMsixSize;
        case cap::pci_express:
            return kPcieSizeDecoded;
        case cap::vendor_specific: {
            if (!config.has(offset, kVendorHeaderSize)) {
                return kVendorHeaderSize;
            }
            const std::size_t length = config.read8(offset + kVendorLength);
            return length < kVendorHeaderSize ? kVendorHeaderSize : length;
        }
        default:
            return kCapHeaderSize;
    }
}

// Decodes the registers of one standard capability; `required_length` bytes are in the view.
Capability decode_capability(const ConfigView& config, std::uint16_t offset, std::uint8_t id) {
    Capability capability;
    capability.offset = offset;
    capability.id = id;
    switch (id) {
        case cap::power_management: {
            PowerManagementInfo pm;
            pm.version =
                static_cast<std::uint8_t>(field(config.read16(offset + kPmCapabilities), 2, 0));
            const std::uint16_t pmcsr = config.read16(offset + kPmControlStatus);
            pm.power_state = static_cast<std::uint8_t>(field(pmcsr, 1, 0));
            pm.no_soft_reset = bit(pmcsr, kPmcsrNoSoftResetBit);
            capability.detail = pm;
            break;
        }
        case cap::msi: {
            const std::uint16_t control = config.read16(offset + kMsiControl);
            MsiInfo msi;
            msi.enabled = bit(control, kMsiEnableBit);
            msi.address_64bit = bit(control, kMsi64BitBit);
            msi.per_vector_masking = bit(control, kMsiPerVectorMaskBit);
            // Encoded as log2 of the count; 6 and 7 are reserved and decode to 64 and 128, so
            // such a device shows up as the oddity it is.
            msi.vectors_capable = 1u << field(control, 3, 1);
            msi.vectors_enabled = 1u << field(control, 6, 4);
            capability.detail = msi;
            break;
        }
        case cap::msix: {
            const std::uint16_t control = config.read16(offset + kMsixControl);
            const std::uint32_t table = config.read32(offset + kMsixTable);
            const std::uint32_t pba = config.read32(offset + kMsixPba);
            MsixInfo msix;
            msix.enabled = bit(control, kMsixEnableBit);
            msix.function_masked = bit(control, kMsixFunctionMaskBit);
            msix.table_size = field(control, 10, 0) + 1;
            msix.table_bir = static_cast<std::uint8_t>(field(table, 2, 0));
            msix.table_offset = table & kMsixOffsetMask;
            msix.pba_bir = static_cast<std::uint8_t>(field(pba, 2, 0));
            msix.pba_offset = pba & kMsixOffsetMask;
            capability.detail = msix;
            break;
        }
        case cap::pci_express: {
            const std::uint16_t capabilities = config.read16(offset + kPcieCapabilities);
            const std::uint32_t device = config.read32(offset + kPcieDeviceCapabilities);
            const std::uint32_t link = config.read32(offset + kPcieLinkCapabilities);
            const std::uint16_t link_status = config.read16(offset + kPcieLinkStatus);
            PcieInfo pcie;
            pcie.version = static_cast<std::uint8_t>(field(capabilities, 3, 0));
            pcie.port_type = static_cast<std::uint8_t>(field(capabilities, 7, 4));
            pcie.function_level_reset = bit(device, kPcieFlrBit);
            pcie.max_payload_supported = 128u << field(device, 2, 0);
            pcie.link_speed_max = field(link, 3, 0);
            pcie.link_width_max = field(link, 9, 4);
            pcie.link_speed = field(link_status, 3, 0);
            pcie.link_width = field(link_status, 9, 4);
            capability.detail = pcie;
            break;
        }
        case cap::vendor_specific:
            capability.detail = VendorSpecificInfo{config.read8(offset + kVendorLength)};
            break;
        default:
            break;
    }
    return capability;
}

}  // namespace

std::uint8_t ConfigView::read8(std::size_t offset) const {
    if (!has(offset, 1)) {
        throw_out_of_range(offset, 1, bytes_.size());
    }
    return bytes_[offset];
}

std::uint16_t ConfigView::read16(std::size_t offset) const {
    if (!has(offset, 2)) {
        throw_out_of_range(offset, 2, bytes_.size());
    }
    return static_cast<std::uint16_t>(bytes_[offset] | bytes_[offset + 1] << 8);
}

std::uint32_t ConfigView::read32(std::size_t offset) const {
    if (!has(offset, 4)) {
        throw_out_of_range(offset, 4, bytes_.size());
    }
    return std::uint32_t{bytes_[offset]} | std::uint32_t{bytes_[offset + 1]} << 8 |
           std::uint32_t{bytes_[offset + 2]} << 16 | std::uint32_t{bytes_[offset + 3]} << 24;
}

Header decode_header(const ConfigView& config) {
    if (const auto problem = unreadable_header(config)) {
        throw Error::invalid("decode config space header", "", *problem);
    }
    Header header;
    header.vendor_id = config.read16(cfg::vendor_id);
    header.device_id = config.read16(cfg::device_id);
    header.command = config.read16(cfg::command);
    header.status = config.read16(cfg::status);
    header.revision = config.read8(cfg::revision_id);
    header.class_code = config.read32(cfg::revision_id) >> 8;
    const std::uint8_t type = config.read8(cfg::header_type);
    header.header_layout = static_cast<std::uint8_t>(field(type, 6, 0));
    header.multifunction = bit(type, kHeaderTypeMultifunctionBit);
    if (header.header_layout == kLayoutCardbus) {
        throw Error::invalid("decode config space header", "",
                             "header type 2 (CardBus bridge) is not supported");
    }
    if (header.header_layout != kLayoutEndpoint && header.header_layout != kLayoutBridge) {
        throw Error::invalid("decode config space header", "",
                             fmt::format("header type {:#x} is undefined", header.header_layout));
    }
    if (header.status & cfg::status_capabilities_list) {
        header.capabilities_pointer = config.read8(cfg::capabilities_pointer) & kCapPointerMask;
    }
    header.interrupt_line = config.read8(cfg::interrupt_line);
    header.interrupt_pin = config.read8(cfg::interrupt_pin);
    if (header.header_layout == kLayoutEndpoint) {
        header.subsystem_vendor_id = config.read16(cfg::subsystem_vendor_id);
        header.subsystem_id = config.read16(cfg::subsystem_id);
        decode_bars(config, kEndpointBarCount, header);
    } else {
        header.primary_bus = config.read8(kPrimaryBus);
        header.secondary_bus = config.read8(kSecondaryBus);
        header.subordinate_bus = config.read8(kSubordinateBus);
        decode_bars(config, kBridgeBarCount, header);
    }
    return header;
}

CapabilityWalk walk_capabilities(const ConfigView& config) {
    CapabilityWalk walk;
    if (auto problem = unreadable_header(config)) {
        walk.error = std::move(*problem);
        return walk;
    }
    if (!(config.read16(cfg::status) & cfg::status_capabilities_list)) {
        return walk;
    }
    std::size_t offset = config.read8(cfg::capabilities_pointer) & kCapPointerMask;
    if (offset == 0) {
        walk.error = "status says there is a capability list but the capabilities pointer is 0";
        return walk;
    }
    std::string from = "capabilities pointer";
    std::bitset<kConfigConventionalSize / 4> visited;  // pointers are 8-bit and dword-aligned
    for (;;) {
        if (offset < kConfigHeaderSize) {
            walk.error = fmt::format("{} points to {:#x}, inside the header", from, offset);
            return walk;
        }
        if (offset >= config.size()) {
            if (config.size() == kConfigHeaderSize) {
                walk.error = fmt::format(
                    "capabilities start at {:#x}, beyond the {} bytes readable without root; run "
                    "as root to decode them",
                    offset, kConfigHeaderSize);
            } else {
                walk.error =
                    fmt::format("{} points to {:#x}, past the end of the {} bytes available", from,
                                offset, config.size());
            }
            return walk;
        }
        if (visited.test(offset / 4)) {
            walk.error = fmt::format("capability list loops back to {:#x}", offset);
            return walk;
        }
        visited.set(offset / 4);

        // A standard capability ends where the view or the PCI-compatible space (256 bytes) does.
        const std::size_t left = std::min(config.size(), kConfigConventionalSize) - offset;
        const std::uint8_t id = config.read8(offset);
        const std::size_t needed = required_length(config, offset, id);
        if (needed > left) {
            walk.error =
                fmt::format("capability at {:#x} ({}) is truncated: needs {} bytes, {} left",
                            offset, capability_name(id), needed, left);
            return walk;
        }
        if (id == cap::vendor_specific &&
            config.read8(offset + kVendorLength) < kVendorHeaderSize) {
            walk.error = fmt::format(
                "capability at {:#x} ({}) has length {}, shorter than its {}-byte header", offset,
                capability_name(id), config.read8(offset + kVendorLength), kVendorHeaderSize);
            return walk;
        }
        walk.capabilities.push_back(
            decode_capability(config, static_cast<std::uint16_t>(offset), id));

        const std::size_t next = config.read8(offset + kCapNext) & kCapPointerMask;
        if (next == 0) {
            return walk;
        }
        from = fmt::format("capability at {:#x}", offset);
        offset = next;
    }
}

CapabilityWalk walk_extended_capabilities(const ConfigView& config) {
    CapabilityWalk walk;
    if (config.size() <= kExtStart) {
        return walk;  // a conventional (256-byte) or unprivileged view: no extended space to walk
    }
    std::size_t offset = kExtStart;
    std::string from;
    std::bitset<kConfigExtendedSize / 4> visited;  // next offsets are 12-bit and dword-aligned
    for (;;) {
        if (offset < kExtStart) {
            walk.error =
                fmt::format("{} points to {:#x}, below {:#x} where extended capabilities start",
                            from, offset, kExtStart);
            return walk;
        }
        if (offset >= config.size()) {
            walk.error = fmt::format("{} points to {:#x}, past the end of the {} bytes available",
                                     from, offset, config.size());
            return walk;
        }
        if (visited.test(offset / 4)) {
            walk.error = fmt::format("extended capability list loops back to {:#x}", offset);
            return walk;
        }
        visited.set(offset / 4);
        if (!config.has(offset, kExtHeaderSize)) {
            walk.error =
                fmt::format("extended capability at {:#x} is truncated: needs {} bytes, {} left",
                            offset, kExtHeaderSize, config.size() - offset);
            return walk;
        }

        const std::uint32_t header = config.read32(offset);
        if (header == kExtUnreadable) {
            walk.error = fmt::format(
                "extended capability header at {:#x} reads 0xffffffff: nothing is readable there "
                "(device removed, or no extended config access)",
                offset);
            return walk;
        }
        if (header == 0) {
            return walk;  // "no extended capabilities" at 0x100; elsewhere an empty last entry
        }
        Capability capability;
        capability.offset = static_cast<std::uint16_t>(offset);
        capability.id = static_cast<std::uint16_t>(field(header, 15, 0));
        capability.extended = true;
        capability.version = static_cast<std::uint8_t>(field(header, 19, 16));
        walk.capabilities.push_back(capability);

        const std::size_t next = (header >> 20) & kExtNextMask;
        if (next == 0) {
            return walk;
        }
        from = fmt::format("extended capability at {:#x}", offset);
        offset = next;
    }
}

std::string describe(const Capability& capability) {
    if (capability.extended) {
        return fmt::format("{} (v{})", extended_capability_name(capability.id), capability.version);
    }
    if (const auto* pm = std::get_if<PowerManagementInfo>(&capability.detail)) {
        return fmt::format("Power Management version {}", pm->version);
    }
    if (const auto* msi = std::get_if<MsiInfo>(&capability.detail)) {
        return fmt::format("MSI: Enable{} Count={}/{} 64bit{} Maskable{}", flag(msi->enabled),
                           msi->vectors_enabled, msi->vectors_capable, flag(msi->address_64bit),
                           flag(msi->per_vector_masking));
    }
    if (const auto* msix = std::get_if<MsixInfo>(&capability.detail)) {
        return fmt::format(
            "MSI-X: Enable{} Count={} Masked{} Table: BAR{}+{:#06x} PBA: BAR{}+{:#06x}",
            flag(msix->enabled), msix->table_size, flag(msix->function_masked), msix->table_bir,
            msix->table_offset, msix->pba_bir, msix->pba_offset);
    }
    if (const auto* pcie = std::get_if<PcieInfo>(&capability.detail)) {
        std::string text =
            fmt::format("Express (v{}) {}, FLR{}", pcie->version,
                        pcie_port_type_name(pcie->port_type), flag(pcie->function_level_reset));
        if (pcie->link_width_max != 0) {  // functions without a link leave these registers 0
            text += fmt::format(", Link: {} x{} (max {} x{})", link_speed_name(pcie->link_speed),
                                pcie->link_width, link_speed_name(pcie->link_speed_max),
                                pcie->link_width_max);
        }
        return text;
    }
    if (const auto* vendor = std::get_if<VendorSpecificInfo>(&capability.detail)) {
        return fmt::format("Vendor Specific: Len={:#04x}", vendor->length);
    }
    return capability_name(capability.id);
}

}  // namespace ring3::pci
