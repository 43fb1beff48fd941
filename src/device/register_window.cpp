#include "ring3/device/register_window.hpp"

#include <fmt/core.h>

#include <algorithm>

#include "ring3/core/error.hpp"

namespace ring3 {
namespace {

// A window into a mapping shared with the other windows of the same region.
class MappedWindow final : public mmio::RegisterIo {
  public:
    MappedWindow(std::shared_ptr<RegionMapping> mapping, std::byte* base, std::size_t length)
        : mapping_(std::move(mapping)), io_(base, length) {}

    std::size_t size() const noexcept override { return io_.size(); }
    std::uint8_t read8(std::size_t o) override { return io_.read8(o); }
    std::uint16_t read16(std::size_t o) override { return io_.read16(o); }
    std::uint32_t read32(std::size_t o) override { return io_.read32(o); }
    std::uint64_t read64(std::size_t o) override { return io_.read64(o); }
    void write8(std::size_t o, std::uint8_t v) override { io_.write8(o, v); }
    void write16(std::size_t o, std::uint16_t v) override { io_.write16(o, v); }
    void write32(std::size_t o, std::uint32_t v) override { io_.write32(o, v); }
    void write64(std::size_t o, std::uint64_t v) override { io_.write64(o, v); }

  private:
    std::shared_ptr<RegionMapping> mapping_;
    mmio::MappedIo io_;
};

}  // namespace

std::unique_ptr<mmio::RegisterIo> RegisterWindows::open(unsigned index, std::uint64_t offset,
                                                        std::uint64_t length) {
    auto known = infos_.find(index);
    if (known == infos_.end()) {
        known = infos_.emplace(index, device_.region_info(index)).first;
    }
    const RegionInfo& info = known->second;
    const auto what =
        fmt::format("open registers at BAR{} + {:#x} ({} bytes)", index, offset, length);
    if (info.size == 0) {
        throw Error::invalid(what, device_.name(), "the device does not implement this BAR",
                             ENODEV);
    }
    if (length == 0 || offset > info.size || length > info.size - offset) {
        throw Error::invalid(what, device_.name(),
                             fmt::format("outside the BAR's {} bytes", info.size), ENODEV);
    }
    // A window maps when the whole region maps, or when it lies inside one of the areas a
    // partly mappable region allows (vfio-user's doorbell page, VFIO's sparse areas).
    const bool inside_area =
        info.sparse_areas.empty() ||
        std::any_of(info.sparse_areas.begin(), info.sparse_areas.end(), [&](const auto& area) {
            return offset >= area.first && offset - area.first <= area.second &&
                   length <= area.second - (offset - area.first);
        });
    if (info.mappable && inside_area && !info.io_space) {
        auto mapping = mappings_[index];
        if (!mapping) {
            mapping = std::make_shared<RegionMapping>(device_.map_region(index, mode_));
            mappings_[index] = mapping;
        }
        const std::uint64_t start = offset - mapping->region_offset;
        if (offset >= mapping->region_offset && start + length <= mapping->mapping.size()) {
            return std::make_unique<MappedWindow>(mapping, mapping->mapping.data() + start,
                                                  static_cast<std::size_t>(length));
        }
    }
    return std::make_unique<RegionIo>(device_, index, offset, length);
}

}  // namespace ring3
