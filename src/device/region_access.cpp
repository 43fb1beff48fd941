#include "ring3/device/region_access.hpp"

#include <fmt/core.h>

#include <cstring>

#include "ring3/core/error.hpp"

namespace ring3 {
namespace {

// Accesses through Device::region_read/region_write, one call of the access's width.
class DeviceRegion final : public pci::RegionAccess {
  public:
    DeviceRegion(Device& device, unsigned index, const RegionInfo& info)
        : device_(device),
          index_(index),
          size_(info.size),
          writable_(info.writable),
          name_(fmt::format("{} BAR{}", device.name(), index)) {}

    std::uint64_t size() const noexcept override { return size_; }
    const std::string& name() const noexcept override { return name_; }
    bool writable() const noexcept override { return writable_; }

  protected:
    std::uint64_t load(std::uint64_t offset, unsigned width_bytes) const override {
        std::uint64_t value = 0;
        device_.region_read(
            index_, offset,
            std::span<std::byte>(reinterpret_cast<std::byte*>(&value), width_bytes));
        return value;
    }
    void store(std::uint64_t offset, unsigned width_bytes, std::uint64_t value) override {
        device_.region_write(
            index_, offset,
            std::span<const std::byte>(reinterpret_cast<const std::byte*>(&value), width_bytes));
    }

  private:
    Device& device_;
    unsigned index_;
    std::uint64_t size_;
    bool writable_;
    std::string name_;
};

}  // namespace

std::unique_ptr<pci::RegionAccess> open_region_access(Device& device, unsigned index,
                                                      MapMode mode) {
    const RegionInfo info = device.region_info(index);
    if (info.size == 0) {
        throw Error::invalid(fmt::format("open BAR{}", index), device.name(),
                             "the device does not implement this BAR", ENOENT);
    }
    if (info.mappable && info.sparse_areas.empty()) {
        RegionMapping mapped = device.map_region(index, mode);
        return std::make_unique<pci::MappedRegion>(fmt::format("{} BAR{}", device.name(), index),
                                                   std::move(mapped.mapping), 0, info.size,
                                                   info.writable);
    }
    return std::make_unique<DeviceRegion>(device, index, info);
}

}  // namespace ring3
