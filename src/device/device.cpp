#include "ring3/device/device.hpp"

#include <fmt/core.h>

#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/pci/config_space.hpp"

namespace ring3 {

const char* to_string(IrqKind kind) noexcept {
    switch (kind) {
        case IrqKind::intx:
            return "INTx";
        case IrqKind::msi:
            return "MSI";
        case IrqKind::msix:
            return "MSI-X";
        case IrqKind::err:
            return "ERR";
        case IrqKind::req:
            return "REQ";
    }
    return "?";
}

namespace {

template <typename T>
T read_config_value(Device& device, std::uint32_t offset) {
    T value{};
    device.read_config(offset, std::as_writable_bytes(std::span<T, 1>(&value, 1)));
    return value;  // config space is little-endian, as is every host ring3 runs on
}

template <typename T>
void write_config_value(Device& device, std::uint32_t offset, T value) {
    device.write_config(offset, std::as_bytes(std::span<const T, 1>(&value, 1)));
}

}  // namespace

std::uint8_t Device::config_read8(std::uint32_t offset) {
    return read_config_value<std::uint8_t>(*this, offset);
}
std::uint16_t Device::config_read16(std::uint32_t offset) {
    return read_config_value<std::uint16_t>(*this, offset);
}
std::uint32_t Device::config_read32(std::uint32_t offset) {
    return read_config_value<std::uint32_t>(*this, offset);
}
void Device::config_write8(std::uint32_t offset, std::uint8_t value) {
    write_config_value(*this, offset, value);
}
void Device::config_write16(std::uint32_t offset, std::uint16_t value) {
    write_config_value(*this, offset, value);
}
void Device::config_write32(std::uint32_t offset, std::uint32_t value) {
    write_config_value(*this, offset, value);
}

std::uint16_t Device::vendor_id() {
    return config_read16(pci::cfg::vendor_id);
}
std::uint16_t Device::device_id() {
    return config_read16(pci::cfg::device_id);
}
std::uint32_t Device::class_code() {
    return config_read32(pci::cfg::revision_id) >> 8;
}

std::uint32_t Device::region_read32(unsigned index, std::uint64_t offset) {
    std::uint32_t value = 0;
    region_read(index, offset, std::as_writable_bytes(std::span<std::uint32_t, 1>(&value, 1)));
    return value;
}

void Device::region_write32(unsigned index, std::uint64_t offset, std::uint32_t value) {
    region_write(index, offset, std::as_bytes(std::span<const std::uint32_t, 1>(&value, 1)));
}

// PCI Local Bus 3.0 §6.2.2: Command register bit 2, Bus Master Enable.
void Device::set_bus_master(bool enable) {
    const std::uint16_t command = config_read16(pci::cfg::command);
    const auto updated = static_cast<std::uint16_t>(
        enable ? command | pci::cfg::command_bus_master : command & ~pci::cfg::command_bus_master);
    if (updated != command) {
        config_write16(pci::cfg::command, updated);
    }
}

bool Device::bus_master() {
    return (config_read16(pci::cfg::command) & pci::cfg::command_bus_master) != 0;
}

}  // namespace ring3
