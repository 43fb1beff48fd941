// Google-benchmark of the data-path DMA operations: BufferPool get/put and CPU -> IOVA
// translation. Host-only (a fake IOVA space stands in for the IOMMU); figures in ns/op.
//   build/gcc/bench/ring3_dma_bench [--benchmark_format=json]
#include <benchmark/benchmark.h>

#include <optional>
#include <random>
#include <vector>

#include "ring3/dma/pool.hpp"

namespace {

using namespace ring3;

// Contiguous per chunk, like a VFIO container.
class ContiguousSpace final : public dma::IovaSpace {
  public:
    std::size_t granule() const noexcept override { return kAnyGranule; }
    void map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) override {
        for (std::size_t i = 0; i < iovas.size(); ++i) {
            iovas[i] = next_ + i * (chunk.size / iovas.size());
        }
        next_ += chunk.size;
    }
    void unmap(const dma::ChunkView&, std::span<const std::uint64_t>) noexcept override {}
    std::string name() const override { return "bench space"; }

  private:
    std::uint64_t next_ = 1ull << 32;
};

struct Fixture {
    Fixture() {
        dma::ArenaOptions options;
        options.max_size = 64 << 20;
        options.huge_pages = dma::HugePages::never;
        arena = dma::DmaArena::create(options);
        index = arena->attach(space);
        pool.emplace(*arena, index);
    }
    ContiguousSpace space;
    std::unique_ptr<dma::DmaArena> arena;
    std::size_t index = 0;
    std::optional<dma::DmaPool> pool;
};

void BM_BufferPoolGetPut(benchmark::State& state) {
    Fixture f;
    dma::BufferPool buffers(*f.pool, 2048, 4096);
    dma::Buffer b;
    for (auto _ : state) {
        buffers.get(b);
        benchmark::DoNotOptimize(b);
        buffers.put(b);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BufferPoolGetPut);

// A burst of 32, as a NIC queue refills its ring.
void BM_BufferPoolBurst32(benchmark::State& state) {
    Fixture f;
    dma::BufferPool buffers(*f.pool, 2048, 4096);
    dma::Buffer burst[32];
    for (auto _ : state) {
        for (auto& b : burst) {
            buffers.get(b);
        }
        benchmark::DoNotOptimize(burst);
        for (const auto& b : burst) {
            buffers.put(b);
        }
    }
    state.SetItemsProcessed(state.iterations() * 32);
}
BENCHMARK(BM_BufferPoolBurst32);

void BM_IovaTranslation(benchmark::State& state) {
    Fixture f;
    for (int i = 0; i < 8; ++i) {
        f.arena->grow();
    }
    std::mt19937_64 rng(1);
    std::vector<const std::byte*> addresses(1024);
    for (auto& a : addresses) {
        a = f.arena->base() + rng() % f.arena->size();
    }
    std::size_t i = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(f.arena->iova(addresses[i++ & 1023], f.index));
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IovaTranslation);

}  // namespace

BENCHMARK_MAIN();
