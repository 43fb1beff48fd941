// Register windows: an mmio::RegisterIo over part of a device region, whatever the backend can do.
// When the region maps, or the window lies inside one of its mappable sparse areas (vfio-user's
// NVMe doorbells), the window is a MappedIo into one shared mapping of it (each access one load or
// store, no system call); when it does not (an I/O BAR, vfio-user without mmap, a trapped part of
// a sparse region), every access is one Device::region_read/region_write call of its width.
// A driver asks for windows and never learns which of the two it got.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include "ring3/device/device.hpp"
#include "ring3/mmio/register.hpp"

namespace ring3 {

class RegisterWindows {
  public:
    // `device` must outlive the windows.
    explicit RegisterWindows(Device& device, MapMode mode = MapMode::uncached)
        : device_(device), mode_(mode) {}

    // The `length` bytes at `offset` of region `index`. Throws ring3::Error (naming the device,
    // region and range) when the region is absent or too small. Accesses inside a window are
    // trusted to lie within `length` (offsets come from register declarations checked against
    // the window's size by the driver).
    std::unique_ptr<mmio::RegisterIo> open(unsigned index, std::uint64_t offset,
                                           std::uint64_t length);
    // Whether windows of region `index` are mapped (after open()).
    bool mapped(unsigned index) const { return mappings_.count(index) != 0; }

  private:
    Device& device_;
    MapMode mode_;
    std::map<unsigned, std::shared_ptr<RegionMapping>> mappings_;
    std::map<unsigned, RegionInfo> infos_;
};

// A window accessed only through Device::region_read/region_write (what RegisterWindows gives for
// an unmappable region; usable directly for registers that must be trapped).
class RegionIo final : public mmio::RegisterIo {
  public:
    RegionIo(Device& device, unsigned index, std::uint64_t offset, std::uint64_t length) noexcept
        : device_(device), index_(index), offset_(offset), length_(length) {}

    std::size_t size() const noexcept override { return static_cast<std::size_t>(length_); }
    std::uint8_t read8(std::size_t offset) override { return load<std::uint8_t>(offset); }
    std::uint16_t read16(std::size_t offset) override { return load<std::uint16_t>(offset); }
    std::uint32_t read32(std::size_t offset) override { return load<std::uint32_t>(offset); }
    std::uint64_t read64(std::size_t offset) override { return load<std::uint64_t>(offset); }
    void write8(std::size_t offset, std::uint8_t v) override { store(offset, v); }
    void write16(std::size_t offset, std::uint16_t v) override { store(offset, v); }
    void write32(std::size_t offset, std::uint32_t v) override { store(offset, v); }
    void write64(std::size_t offset, std::uint64_t v) override { store(offset, v); }

  private:
    template <typename T>
    T load(std::size_t offset) {
        T value{};
        device_.region_read(index_, offset_ + offset,
                            std::span<std::byte>(reinterpret_cast<std::byte*>(&value), sizeof(T)));
        return value;
    }
    template <typename T>
    void store(std::size_t offset, T value) {
        device_.region_write(
            index_, offset_ + offset,
            std::span<const std::byte>(reinterpret_cast<const std::byte*>(&value), sizeof(T)));
    }

    Device& device_;
    unsigned index_;
    std::uint64_t offset_;
    std::uint64_t length_;
};

}  // namespace ring3
