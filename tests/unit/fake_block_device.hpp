// A BlockDevice in memory for unit tests: blocks live in a vector, data buffers in a real DmaArena
// behind the fake IOMMU, and requests complete in poll() (FIFO, or LIFO to reorder). Faults are
// injected on demand: a corrupted or misdirected read, a failing request with a device status,
// -EAGAIN before the queue is full, completions that never come.
//
// Queues may run on different threads; the storage and the counters are shared under a mutex (a
// fake has no need to be fast). Set the faults before a run, read the counters after it.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fake_iova_space.hpp"
#include "ring3/block/block_device.hpp"
#include "ring3/dma/arena.hpp"
#include "ring3/dma/pool.hpp"

namespace ring3::block::testing {

struct FakeFaults {
    // A read covering `corrupt_read_lba` returns that block with byte `corrupt_byte` flipped.
    std::optional<std::uint64_t> corrupt_read_lba;
    std::size_t corrupt_byte = 100;
    // A read of block `first` returns what is stored at block `second`.
    std::optional<std::pair<std::uint64_t, std::uint64_t>> misdirected_read;
    // A request of `fail_op` covering `fail_lba` completes with `fail_status` (and moves no data).
    std::optional<std::uint64_t> fail_lba;
    Op fail_op = Op::write;
    Status fail_status{EIO, 0x0281};  // NVMe: media error, unrecovered read/write (SCT 2, SC 81h)
    unsigned fail_times = ~0u;        // the failure happens this many times, then the LBA works
    // Queue full before its depth: at most `capacity` requests in flight (0: the depth).
    unsigned capacity = 0;
    // Every n-th submit is refused with -EAGAIN even when there is room (0: never).
    unsigned refuse_every = 0;
    // Completions reaped per poll (0: all ready), and in which order.
    unsigned complete_per_poll = 0;
    bool lifo = false;
    // Requests are accepted but never complete (a hung device).
    bool hold_completions = false;
    // After `refuse_after` accepted requests, submit fails with -refuse_error (e.g. ENODEV).
    int refuse_error = 0;
    std::uint64_t refuse_after = 0;
};

class FakeBlockDevice;

class FakeQueue final : public Queue {
  public:
    FakeQueue(FakeBlockDevice& device, unsigned index, unsigned depth)
        : device_(device), index_(index), depth_(depth) {
        pending_.reserve(depth);
    }

    int enqueue(const Request& request) noexcept override;
    void flush() noexcept override { ++flushes_; }
    unsigned poll(unsigned max = 0) noexcept override;
    unsigned wait(std::chrono::microseconds) override { return poll(); }
    unsigned outstanding() const noexcept override {
        return static_cast<unsigned>(pending_.size());
    }
    unsigned depth() const noexcept override { return depth_; }
    QueueStats stats() const noexcept override {
        QueueStats s;
        s.requests = submitted_;
        s.notifications = flushes_;
        return s;
    }

    unsigned index() const noexcept { return index_; }
    std::uint64_t submitted() const noexcept { return submitted_; }
    std::uint64_t refused() const noexcept { return refused_; }
    std::uint64_t flushes() const noexcept { return flushes_; }
    unsigned max_outstanding() const noexcept { return max_outstanding_; }
    // Threads that called submit or poll; a queue belongs to one thread.
    const std::set<std::thread::id>& threads() const noexcept { return threads_; }

  private:
    void note_thread() {
        const std::lock_guard lock(threads_mutex_);
        threads_.insert(std::this_thread::get_id());
    }

    FakeBlockDevice& device_;
    unsigned index_;
    unsigned depth_;
    std::vector<Request> pending_;
    std::uint64_t submitted_ = 0;
    std::uint64_t submit_calls_ = 0;
    std::uint64_t refused_ = 0;
    std::uint64_t flushes_ = 0;
    unsigned max_outstanding_ = 0;
    std::mutex threads_mutex_;
    std::set<std::thread::id> threads_;
};

class FakeBlockDevice final : public BlockDevice {
  public:
    // `arena_bytes` of DMA memory in chunks of `chunk_bytes` (the largest buffer a BufferPool can
    // hand out); mind RLIMIT_MEMLOCK (often 8 MiB), the arena is locked.
    explicit FakeBlockDevice(Geometry geometry, std::size_t chunk_bytes = 256 * 1024,
                             std::size_t arena_bytes = 4 << 20)
        : geometry_(geometry),
          storage_(geometry.block_count * geometry.block_size),
          writes_per_block_(geometry.block_count),
          reads_per_block_(geometry.block_count),
          queues_(geometry.queue_count) {
        dma::ArenaOptions options;
        options.chunk_size = chunk_bytes;
        options.max_size = arena_bytes;
        options.huge_pages = dma::HugePages::never;
        options.name = "fake-block";
        arena_ = dma::DmaArena::create(options);
        arena_->attach(iommu_);
        pool_ = std::make_unique<dma::DmaPool>(*arena_);
    }

    static Geometry small_geometry() {
        Geometry g;
        g.block_count = 2048;
        g.block_size = 512;
        g.max_transfer = 16 * 1024;
        g.queue_count = 4;
        g.max_queue_depth = 64;
        return g;
    }

    std::string name() const override { return "fake0"; }
    Geometry geometry() const override { return geometry_; }
    Queue& open_queue(unsigned index, unsigned depth = 0,
                      irq::WaitMode = irq::WaitMode::poll) override {
        if (index >= geometry_.queue_count || depth > geometry_.max_queue_depth) {
            throw std::invalid_argument("fake0: bad queue index or depth");
        }
        if (!queues_[index]) {
            queues_[index] = std::make_unique<FakeQueue>(
                *this, index, depth == 0 ? geometry_.max_queue_depth : depth);
        }
        return *queues_[index];
    }
    dma::DmaPool& dma_pool() override { return *pool_; }

    FakeFaults faults;

    FakeQueue* queue(unsigned index) const { return queues_[index].get(); }
    std::span<std::byte> block(std::uint64_t lba) {
        return {storage_.data() + lba * geometry_.block_size, geometry_.block_size};
    }
    unsigned writes_of(std::uint64_t lba) const { return writes_per_block_[lba]; }
    unsigned reads_of(std::uint64_t lba) const { return reads_per_block_[lba]; }
    // Every request's first LBA and block count, in completion order.
    const std::vector<std::pair<std::uint64_t, std::uint32_t>>& requests() const {
        return requests_;
    }

  private:
    friend class FakeQueue;

    bool valid(const Request& r) const noexcept {
        const std::uint64_t bytes = std::uint64_t{r.blocks} * geometry_.block_size;
        return r.callback != nullptr && r.blocks != 0 && r.lba < geometry_.block_count &&
               r.blocks <= geometry_.block_count - r.lba && r.data != nullptr &&
               arena_->contains(r.data, bytes);
    }

    // The data transfer of one request, when it completes.
    Status execute(const Request& r) {
        const std::lock_guard lock(mutex_);
        requests_.emplace_back(r.lba, r.blocks);
        if (faults.fail_lba && r.op == faults.fail_op && *faults.fail_lba >= r.lba &&
            *faults.fail_lba < r.lba + r.blocks && faults.fail_times != 0) {
            --faults.fail_times;
            return faults.fail_status;
        }
        const std::size_t size = geometry_.block_size;
        for (std::uint32_t b = 0; b < r.blocks; ++b) {
            const std::uint64_t lba = r.lba + b;
            std::byte* buffer = r.data + b * size;
            if (r.op == Op::write) {
                std::memcpy(block(lba).data(), buffer, size);
                ++writes_per_block_[lba];
                continue;
            }
            ++reads_per_block_[lba];
            std::uint64_t from = lba;
            if (faults.misdirected_read && faults.misdirected_read->first == lba) {
                from = faults.misdirected_read->second;
            }
            std::memcpy(buffer, block(from).data(), size);
            if (faults.corrupt_read_lba == lba) {
                buffer[faults.corrupt_byte] ^= std::byte{0x40};
            }
        }
        return {};
    }

    Geometry geometry_;
    dma::testing::FakeIovaSpace iommu_{dma::IovaSpace::kAnyGranule, false};
    std::unique_ptr<dma::DmaArena> arena_;
    std::unique_ptr<dma::DmaPool> pool_;
    std::mutex mutex_;
    std::vector<std::byte> storage_;
    std::vector<unsigned> writes_per_block_;
    std::vector<unsigned> reads_per_block_;
    std::vector<std::pair<std::uint64_t, std::uint32_t>> requests_;
    std::vector<std::unique_ptr<FakeQueue>> queues_;
};

inline int FakeQueue::enqueue(const Request& request) noexcept {
    note_thread();
    const FakeFaults& faults = device_.faults;
    ++submit_calls_;
    if (!device_.valid(request)) {
        return -EINVAL;
    }
    if (faults.refuse_error != 0 && submitted_ >= faults.refuse_after) {
        return -faults.refuse_error;
    }
    const unsigned capacity = faults.capacity == 0 ? depth_ : std::min(faults.capacity, depth_);
    if (pending_.size() >= capacity ||
        (faults.refuse_every != 0 && submit_calls_ % faults.refuse_every == 0)) {
        ++refused_;
        return -EAGAIN;
    }
    pending_.push_back(request);
    ++submitted_;
    max_outstanding_ = std::max(max_outstanding_, static_cast<unsigned>(pending_.size()));
    return 0;
}

inline unsigned FakeQueue::poll(unsigned max) noexcept {
    note_thread();
    const FakeFaults& faults = device_.faults;
    if (faults.hold_completions) {
        return 0;
    }
    unsigned limit = static_cast<unsigned>(pending_.size());
    if (faults.complete_per_poll != 0) {
        limit = std::min(limit, faults.complete_per_poll);
    }
    if (max != 0) {
        limit = std::min(limit, max);
    }
    for (unsigned done = 0; done < limit; ++done) {
        Request request;
        if (faults.lifo) {
            request = pending_.back();
            pending_.pop_back();
        } else {
            request = pending_.front();
            pending_.erase(pending_.begin());
        }
        const Status status = device_.execute(request);
        request.callback(request.context, status);
    }
    return limit;
}

}  // namespace ring3::block::testing
