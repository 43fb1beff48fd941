// libFuzzer target for the split virtqueue's used-ring parser (STYLE.md §8: used rings are
// hostile input). The input is a script: the driver adds and publishes chains, the "device"
// writes any used entries and any used idx it likes, the driver polls. Whatever the device
// writes, the queue must stay in bounds (ASan), complete each chain at most once and only chains
// it has in flight, and keep its descriptor accounting exact. Anything else aborts: a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "ring3/dma/arena.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/mmio/register.hpp"
#include "ring3/virtio/virtqueue.hpp"

namespace {

using namespace ring3;

[[noreturn]] void finding(const char* what, unsigned long value) {
    std::fprintf(stderr, "used_ring_fuzz: %s (%lu)\n", what, value);
    std::abort();
}

// IOVA = CPU address: the fuzzer's "device" writes the rings through the CPU view.
class IdentitySpace final : public dma::IovaSpace {
  public:
    std::size_t granule() const noexcept override { return kAnyGranule; }
    void map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) override {
        const std::size_t step = chunk.size / iovas.size();
        for (std::size_t i = 0; i < iovas.size(); ++i) {
            iovas[i] = reinterpret_cast<std::uintptr_t>(chunk.cpu) + i * step;
        }
    }
    void unmap(const dma::ChunkView&, std::span<const std::uint64_t>) noexcept override {}
    std::string name() const override { return "identity"; }
};

class NullNotify final : public mmio::RegisterIo {
  public:
    std::size_t size() const noexcept override { return 4; }
    std::uint32_t read32(std::size_t) override { return 0; }
    void write32(std::size_t, std::uint32_t) override {}
    std::uint64_t read64(std::size_t) override { return 0; }
    void write64(std::size_t, std::uint64_t) override {}
    std::uint16_t read16(std::size_t) override { return 0; }
    void write16(std::size_t, std::uint16_t) override { ++notifications; }
    std::uint8_t read8(std::size_t) override { return 0; }
    void write8(std::size_t, std::uint8_t) override {}
    unsigned notifications = 0;
};

struct World {
    IdentitySpace space;
    std::unique_ptr<dma::DmaArena> arena;
    std::unique_ptr<dma::DmaPool> pool;
    NullNotify notify;
    World() {
        dma::ArenaOptions o;
        o.max_size = 4 << 20;
        o.huge_pages = dma::HugePages::never;
        arena = dma::DmaArena::create(o);
        arena->attach(space);
        pool = std::make_unique<dma::DmaPool>(*arena);
    }
};

constexpr std::uint16_t kSize = 16;
std::vector<std::uint8_t> g_state;  // per chain token: 1 while in flight

void completed(void*, void* context, std::uint16_t head, std::uint32_t written) noexcept {
    const auto token = reinterpret_cast<std::uintptr_t>(context);
    if (token >= g_state.size() || g_state[token] != 1) {
        finding("completion of a chain not in flight", token);
    }
    if (head >= kSize) {
        finding("head outside the queue", head);
    }
    (void)written;
    g_state[token] = 2;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static World world;
    virtio::SplitQueue queue(*world.pool, 0, kSize, (size > 0 && (data[0] & 1) != 0), world.notify,
                             0);
    auto* used = reinterpret_cast<std::uint8_t*>(queue.used_iova());
    g_state.clear();
    std::size_t at = 1;
    const auto next = [&]() -> std::uint8_t { return at < size ? data[at++] : 0; };
    while (at < size) {
        const std::uint8_t op = next();
        switch (op % 5) {
            case 0: {  // add a chain of 1..4 segments
                virtio::Segment segments[4];
                const unsigned n = 1 + next() % 4;
                for (unsigned i = 0; i < n; ++i) {
                    segments[i] = {0x1000u * (i + 1), next(), (next() & 1) != 0};
                }
                const auto token = g_state.size();
                const int head = queue.add(std::span<const virtio::Segment>(segments, n),
                                           reinterpret_cast<void*>(token));
                if (head >= 0) {
                    g_state.push_back(1);
                }
                break;
            }
            case 1:
                queue.publish();
                break;
            case 2: {  // the device writes a used entry
                const unsigned slot = next() % kSize;
                std::uint32_t element[2];
                for (auto& word : element) {
                    word = static_cast<std::uint32_t>(next()) | static_cast<std::uint32_t>(next())
                                                                    << 8;
                }
                std::memcpy(used + 4 + 8 * slot, element, sizeof element);
                break;
            }
            case 3: {  // the device moves used idx
                const std::uint16_t idx = static_cast<std::uint16_t>(next() | next() << 8);
                std::memcpy(used + 2, &idx, 2);
                break;
            }
            case 4:
                queue.poll(&completed, nullptr, next() % 8);
                if ((op & 0x80) != 0) {
                    queue.enable_interrupts();
                } else {
                    queue.disable_interrupts();
                }
                break;
        }
        unsigned flying = 0;
        for (auto s : g_state) {
            flying += s == 1 ? 1u : 0u;
        }
        if (flying != queue.in_flight()) {
            finding("chains in flight disagree with the completions", queue.in_flight());
        }
        if (queue.free_descriptors() > kSize ||
            (queue.in_flight() == 0 && queue.free_descriptors() != kSize)) {
            finding("descriptor accounting", queue.free_descriptors());
        }
    }
    queue.fail_all(&completed, nullptr);
    for (auto s : g_state) {
        if (s == 1) {
            finding("a chain survived fail_all", 0);
        }
    }
    if (queue.free_descriptors() != kSize) {
        finding("descriptors lost after fail_all", queue.free_descriptors());
    }
    return 0;
}
