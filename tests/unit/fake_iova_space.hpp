// A fake IOMMU for unit tests: hands out deterministic device addresses and records what was
// mapped, so tests check translation without a device.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ring3/core/error.hpp"
#include "ring3/dma/arena.hpp"

namespace ring3::dma::testing {

class FakeIovaSpace : public IovaSpace {
  public:
    // `scatter`: give each granule an unrelated address (like physical pages), else one contiguous
    // run per chunk (like an IOMMU).
    FakeIovaSpace(std::size_t granule, bool scatter) : granule_(granule), scatter_(scatter) {}

    std::size_t granule() const noexcept override { return granule_; }
    void map(const ChunkView& chunk, std::span<std::uint64_t> iovas) override {
        if (fail_next_map) {
            fail_next_map = false;
            throw Error::invalid("map", "fake IOVA space", "injected failure");
        }
        const std::uint64_t step = chunk.size / iovas.size();  // the granule the arena chose
        for (std::size_t i = 0; i < iovas.size(); ++i) {
            // Scattered granules come out in descending order, 16 granules apart.
            iovas[i] =
                scatter_ ? 0x80000000ull - (next_++) * 16 * step : 0x10000000ull + (next_++) * step;
        }
        mapped.push_back(chunk.memfd_offset);
    }
    void unmap(const ChunkView& chunk, std::span<const std::uint64_t>) noexcept override {
        unmapped.push_back(chunk.memfd_offset);
    }
    std::string name() const override { return "fake IOVA space"; }

    bool fail_next_map = false;
    std::vector<std::uint64_t> mapped;
    std::vector<std::uint64_t> unmapped;

  private:
    std::size_t granule_;
    bool scatter_;
    std::uint64_t next_ = 0;
};

}  // namespace ring3::dma::testing
