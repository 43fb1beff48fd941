// emu::ConfigSpace: the config space an emulated function shows its client (PCI Local Bus 3.0
// §6.1-§6.2 header, §6.7 capability list, §6.8.2 MSI-X; PCI Express Base 4.0 §7.5.3).
#include <algorithm>
#include <bit>
#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/emu/server.hpp"
#include "ring3/pci/config_space.hpp"

namespace ring3::emu {
namespace {

constexpr std::size_t kPcieCapLength = 0x3c;  // PCIe 4.0 §7.5.3: the v2 capability structure
// PCI 3.0 §6.8.2.3 Message Control.
constexpr std::uint16_t kMsixEnable = 1u << 15;
constexpr std::uint16_t kMsixFunctionMask = 1u << 14;
// PCIe 4.0 §7.5.3.3 Device Capabilities bit 28, §7.5.3.4 Device Control bit 15.
constexpr std::uint32_t kDevCapFlr = 1u << 28;
constexpr std::uint16_t kDevCtlInitiateFlr = 1u << 15;

}  // namespace

ConfigSpace::ConfigSpace()
    : bytes_(pci::kConfigExtendedSize),
      writable_(pci::kConfigExtendedSize),
      initial_(pci::kConfigExtendedSize) {
    // Command (§6.2.2): I/O, memory and bus master enables, interrupt disable.
    put16(pci::cfg::command, 0,
          pci::cfg::command_io_space | pci::cfg::command_memory_space |
              pci::cfg::command_bus_master | pci::cfg::command_interrupt_disable);
    put8(pci::cfg::interrupt_line, 0, 0xff);
    initial_ = bytes_;
}

void ConfigSpace::put8(std::size_t at, std::uint8_t value, std::uint8_t writable) {
    bytes_[at] = value;
    writable_[at] = writable;
}
void ConfigSpace::put16(std::size_t at, std::uint16_t value, std::uint16_t writable) {
    put8(at, static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(writable));
    put8(at + 1, static_cast<std::uint8_t>(value >> 8), static_cast<std::uint8_t>(writable >> 8));
}
void ConfigSpace::put32(std::size_t at, std::uint32_t value, std::uint32_t writable) {
    put16(at, static_cast<std::uint16_t>(value), static_cast<std::uint16_t>(writable));
    put16(at + 2, static_cast<std::uint16_t>(value >> 16),
          static_cast<std::uint16_t>(writable >> 16));
}

void ConfigSpace::set_identity(std::uint16_t vendor, std::uint16_t device, std::uint32_t class_code,
                               std::uint8_t revision) {
    put16(pci::cfg::vendor_id, vendor);
    put16(pci::cfg::device_id, device);
    put8(pci::cfg::revision_id, revision);
    put8(pci::cfg::class_code, static_cast<std::uint8_t>(class_code));
    put8(pci::cfg::class_code + 1, static_cast<std::uint8_t>(class_code >> 8));
    put8(pci::cfg::class_code + 2, static_cast<std::uint8_t>(class_code >> 16));
    put16(pci::cfg::subsystem_vendor_id, vendor);
    put16(pci::cfg::subsystem_id, device);
    initial_ = bytes_;
}

void ConfigSpace::add_bar(unsigned index, std::uint64_t size, bool is_64bit, bool prefetchable) {
    if (index >= kBarCount || (is_64bit && index + 1 >= kBarCount) || size < 16 ||
        !std::has_single_bit(size) || (!is_64bit && size > (1ull << 31)) ||
        bar_sizes_[index] != 0 || upper_half_[index]) {
        throw Error::invalid("declare BAR", std::to_string(index),
                             "size must be a power of two >= 16 and the slot free");
    }
    // §6.2.5.1: the low bits say memory, type (10b: 64-bit) and prefetchable; the address bits
    // below the size read as zero, which is how software sizes the BAR.
    const std::uint32_t flags = (is_64bit ? 0x4u : 0u) | (prefetchable ? 0x8u : 0u);
    const std::uint64_t mask = ~(size - 1);
    const std::size_t at = pci::cfg::bar0 + 4 * index;
    put32(at, flags, static_cast<std::uint32_t>(mask) & ~0xfu);
    bar_sizes_[index] = size;
    if (is_64bit) {
        put32(at + 4, 0, static_cast<std::uint32_t>(mask >> 32));
        upper_half_[index + 1] = true;
    }
    initial_ = bytes_;
}

std::uint64_t ConfigSpace::bar_size(unsigned index) const noexcept {
    return index < kBarCount ? bar_sizes_[index] : 0;
}
bool ConfigSpace::bar_is_upper_half(unsigned index) const noexcept {
    return index < kBarCount && upper_half_[index];
}

std::uint8_t ConfigSpace::allocate(std::size_t length) {
    // §6.7: capabilities live in the device-specific area 0x40-0xff, dword aligned.
    const std::size_t at = (next_cap_ + 3) & ~std::size_t{3};
    if (at + length > pci::kConfigConventionalSize) {
        throw Error::invalid("add capability", "config space", "no room left below 0x100");
    }
    next_cap_ = at + length;
    return static_cast<std::uint8_t>(at);
}

std::uint8_t ConfigSpace::add_capability(std::uint8_t id, std::span<const std::uint8_t> body,
                                         std::span<const std::uint8_t> writable) {
    if (!writable.empty() && writable.size() != body.size()) {
        throw Error::invalid("add capability", std::to_string(id), "mask length != body length");
    }
    const std::uint8_t at = allocate(2 + body.size());
    put8(at, id);
    put8(at + 1u, 0);  // the end of the list until another is added
    for (std::size_t i = 0; i < body.size(); ++i) {
        put8(at + 2 + i, body[i], writable.empty() ? 0 : writable[i]);
    }
    if (last_cap_ == 0) {
        put8(pci::cfg::capabilities_pointer, at);
        const std::uint16_t status = static_cast<std::uint16_t>(bytes_[pci::cfg::status] |
                                                                bytes_[pci::cfg::status + 1] << 8);
        put16(pci::cfg::status, status | pci::cfg::status_capabilities_list);
    } else {
        put8(last_cap_ + 1u, at);
    }
    last_cap_ = at;
    initial_ = bytes_;
    return at;
}

void ConfigSpace::add_msix(unsigned vectors, unsigned bar, std::uint32_t table_offset,
                           std::uint32_t pba_offset) {
    if (vectors == 0 || vectors > 2048 || bar >= kBarCount || bar_sizes_[bar] == 0 ||
        (table_offset & 7u) != 0 || (pba_offset & 7u) != 0 ||
        table_offset + 16ull * vectors > bar_sizes_[bar] ||
        pba_offset + 8ull * ((vectors + 63) / 64) > bar_sizes_[bar] || msix_cap_ != 0) {
        throw Error::invalid("add MSI-X capability", std::to_string(vectors) + " vectors",
                             "table or PBA outside its BAR, or misaligned");
    }
    // §6.8.2: Message Control (table size N-1), Table Offset/BIR, PBA Offset/BIR.
    std::uint8_t body[10] = {};
    std::uint8_t mask[10] = {};
    const auto control = static_cast<std::uint16_t>(vectors - 1);
    std::memcpy(body, &control, 2);
    const std::uint32_t table = table_offset | bar;
    const std::uint32_t pba = pba_offset | bar;
    std::memcpy(body + 2, &table, 4);
    std::memcpy(body + 6, &pba, 4);
    mask[1] = static_cast<std::uint8_t>((kMsixEnable | kMsixFunctionMask) >> 8);
    msix_cap_ = add_capability(pci::cap::msix, body, mask);
    msix_vectors_ = vectors;
    msix_bar_ = bar;
    msix_table_ = table_offset;
    msix_pba_ = pba_offset;
}

void ConfigSpace::add_pcie_endpoint() {
    std::uint8_t body[kPcieCapLength - 2] = {};
    std::uint8_t mask[kPcieCapLength - 2] = {};
    body[0] = 0x02;  // capability version 2, device/port type 0000b: PCI Express endpoint
    std::memcpy(body + 2, &kDevCapFlr, 4);
    // Device Control: error reporting enables, relaxed ordering, max payload/read request,
    // and Initiate FLR (which always reads back 0).
    const std::uint16_t devctl_mask = 0x7fff | kDevCtlInitiateFlr;
    std::memcpy(mask + 6, &devctl_mask, 2);
    pcie_cap_ = add_capability(pci::cap::pci_express, body, mask);
    size_ = pci::kConfigExtendedSize;
}

bool ConfigSpace::msix_enabled() const noexcept {
    return msix_cap_ != 0 && (bytes_[msix_cap_ + 3u] & (kMsixEnable >> 8)) != 0;
}
bool ConfigSpace::msix_function_masked() const noexcept {
    return msix_cap_ != 0 && (bytes_[msix_cap_ + 3u] & (kMsixFunctionMask >> 8)) != 0;
}

void ConfigSpace::read(std::size_t offset, std::span<std::byte> out) const noexcept {
    std::memcpy(out.data(), bytes_.data() + offset, out.size());
}

bool ConfigSpace::write(std::size_t offset, std::span<const std::byte> in) noexcept {
    for (std::size_t i = 0; i < in.size(); ++i) {
        const std::size_t at = offset + i;
        const auto value = static_cast<std::uint8_t>(in[i]);
        bytes_[at] =
            static_cast<std::uint8_t>((bytes_[at] & ~writable_[at]) | (value & writable_[at]));
    }
    if (pcie_cap_ == 0) {
        return false;
    }
    const std::size_t devctl_high = pcie_cap_ + 8u + 1u;
    if (devctl_high >= offset && devctl_high < offset + in.size() &&
        (bytes_[devctl_high] & (kDevCtlInitiateFlr >> 8)) != 0) {
        bytes_[devctl_high] &= static_cast<std::uint8_t>(~(kDevCtlInitiateFlr >> 8));
        return true;
    }
    return false;
}

void ConfigSpace::reset() noexcept {
    bytes_ = initial_;
}

}  // namespace ring3::emu
