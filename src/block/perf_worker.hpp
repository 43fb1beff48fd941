// The per-queue part of `ring3 perf blk` (perf.hpp), shared by perf_worker.cpp (the Worker: one
// queue's request loop, verification and figures) and perf.cpp (the thread harness: one Worker per
// queue, phases, progress, the report). Internal to src/block: not installed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ring3/block/perf.hpp"
#include "ring3/core/cycle_clock.hpp"
#include "ring3/dma/pool.hpp"

namespace ring3::block::detail {

// The cycle counter, not steady_clock: timing every request must not cost a system call (see
// cycle_clock.hpp; in a TCG guest steady_clock reads the emulated HPET).
using Clock = CycleClock;

// How long one Queue::wait() may block before the loop looks at its stop conditions again.
inline constexpr std::chrono::microseconds kWaitSlice{1000};
// Buffers are page aligned: what a PRP entry wants, and no request straddles pages needlessly.
inline constexpr std::size_t kBufferAlignment = 4096;

// strerror() may share a buffer between threads; this does not.
std::string error_text(int error);

// splitmix64 (Steele, Lea, Flood 2014): one add and three xor-shift-multiplies per number, good
// enough for offsets and mix decisions, and cheap next to an I/O.
struct Random {
    std::uint64_t state;
    std::uint64_t next() noexcept {
        state += 0x9e3779b97f4a7c15ull;
        std::uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // Uniform in [0, n) by multiply-shift (Lemire 2019), without a division.
    std::uint64_t below(std::uint64_t n) noexcept {
        return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
    }
};

// The range as a sequence of request-sized slots: slot k covers blocks
// [first_lba + k * slot_blocks, ...), the last one possibly shorter (sequential workloads only).
struct Layout {
    std::uint64_t first_lba = 0;
    std::uint64_t lba_count = 0;
    std::uint32_t block_size = 0;
    std::uint32_t slot_blocks = 0;
    std::uint64_t slots = 0;       // ceil(lba_count / slot_blocks)
    std::uint64_t full_slots = 0;  // floor: where random requests go

    std::uint32_t blocks_of(std::uint64_t slot) const noexcept {
        const std::uint64_t left = lba_count - slot * slot_blocks;
        return static_cast<std::uint32_t>(std::min<std::uint64_t>(left, slot_blocks));
    }
};

// Part `index` of `count` of [0, total): as even as possible, in order.
inline std::pair<std::uint64_t, std::uint64_t> share(std::uint64_t total, unsigned index,
                                                     unsigned count) {
    const auto part = [&](unsigned i) {
        return static_cast<std::uint64_t>(static_cast<unsigned __int128>(total) * i / count);
    };
    return {part(index), part(index + 1)};
}

// Slots written so far, for the read-back pass. Several queues may write the same slot (random
// workloads): the bits are set atomically, and they write the same bytes anyway.
class WrittenMap {
  public:
    explicit WrittenMap(std::uint64_t slots) : words_((slots + 63) / 64) {}
    void mark(std::uint64_t slot) noexcept {
        words_[slot / 64].fetch_or(std::uint64_t{1} << (slot % 64), std::memory_order_relaxed);
    }
    bool test(std::uint64_t slot) const noexcept {
        return (words_[slot / 64].load(std::memory_order_relaxed) >> (slot % 64)) & 1;
    }

  private:
    std::vector<std::atomic<std::uint64_t>> words_;
};

enum class Phase { run, verify };

// What every worker shares during a run; read-only while the threads run, but for `written`.
struct Shared {
    PerfOptions options;  // a copy: a late completion after run_perf() must still find it
    Layout layout;
    std::unique_ptr<WrittenMap> written;   // with verify and writes
    std::chrono::nanoseconds run_time{0};  // 0: no time limit; each worker times itself
};

struct Slot;

class Worker {
  public:
    Worker(Shared& shared, unsigned index, Queue& queue, dma::DmaPool& pool);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Runs one phase to its end; never throws (what goes wrong is in fatal()).
    void run(Phase phase) noexcept;
    // Gives the buffers back while requests are still with the device (it is about to be closed:
    // its pool must not outlive them); a late completion is ignored.
    void abandon() noexcept {
        abandoned_ = true;
        buffers_.reset();
    }

    const PhaseResult& result() const noexcept { return result_; }
    std::size_t buffer_bytes() const noexcept {
        return std::size_t{options_.request_bytes} * options_.queue_depth;
    }
    QueueStats queue_stats() const noexcept { return queue_.stats(); }
    // The phase's duration on the worker's own cycle counter (it is pinned to one CPU: counters
    // of different CPUs are not compared).
    Clock::duration elapsed() const noexcept { return finished_ - started_; }
    // How long before the end of the phase the first request completed, and the clocks at the end
    // (for the start-up figure of `--ios 1`); age < 0 when none completed.
    Clock::duration first_completion_age() const noexcept { return first_completion_age_; }
    std::chrono::steady_clock::time_point end_steady() const noexcept { return end_steady_; }
    std::chrono::system_clock::time_point end_wall() const noexcept { return end_wall_; }
    unsigned in_flight() const noexcept { return in_flight_; }
    std::uint64_t blocks_checked() const noexcept { return blocks_checked_; }
    std::uint64_t mismatches() const noexcept { return mismatches_; }
    const std::vector<std::string>& first_mismatches() const noexcept { return first_mismatches_; }
    const std::vector<std::string>& first_errors() const noexcept { return first_errors_; }
    const std::string& fatal() const noexcept { return fatal_; }
    std::uint64_t published_ios() const noexcept {
        return published_ios_.load(std::memory_order_relaxed);
    }
    std::uint64_t published_bytes() const noexcept {
        return published_bytes_.load(std::memory_order_relaxed);
    }

  private:
    void start_phase(Phase phase);
    bool prepare(Slot& slot) noexcept;  // false: nothing more to issue
    void loop();
    void complete(Slot& slot, const Status& status) noexcept;
    void check(const Slot& slot) noexcept;
    void stop_with(std::string message) noexcept;
    static void on_completion(void* context, const Status& status);

    Shared& shared_;
    const PerfOptions& options_;
    const Layout& layout_;
    unsigned index_;
    Queue& queue_;
    std::optional<dma::BufferPool> buffers_;
    bool abandoned_ = false;
    std::vector<Slot> slots_;
    std::vector<std::uint32_t> free_;  // stack of free slot indexes, capacity queue_depth
    std::uint32_t free_top_ = 0;
    std::vector<std::uint32_t> retry_;  // failed slots to submit again, capacity queue_depth
    std::uint32_t retry_top_ = 0;
    Random random_;

    // Per phase.
    Phase phase_ = Phase::run;
    bool issuing_ = true;
    bool check_reads_ = false;
    std::uint64_t begin_ = 0;  // this worker's slots (sequential, verify)
    std::uint64_t end_ = 0;
    std::uint64_t cursor_ = 0;  // the next one
    std::uint64_t quota_ = 0;   // requests to issue; ~0: unlimited
    std::uint64_t issued_ = 0;
    unsigned in_flight_ = 0;
    PhaseResult result_;
    Clock::time_point started_{};
    Clock::time_point deadline_ = Clock::time_point::max();
    Clock::time_point finished_{};
    Clock::time_point first_completion_{};
    Clock::duration first_completion_age_{-1};
    std::chrono::steady_clock::time_point end_steady_{};
    std::chrono::system_clock::time_point end_wall_{};

    std::uint64_t blocks_checked_ = 0;
    std::uint64_t mismatches_ = 0;
    std::vector<std::string> first_mismatches_;
    std::vector<std::string> first_errors_;
    std::string fatal_;

    // Read by the progress reporter on another thread.
    alignas(64) std::atomic<std::uint64_t> published_ios_{0};
    std::atomic<std::uint64_t> published_bytes_{0};
};

// One request's context: where it goes and when it left. Lives as long as its Worker.
struct Slot {
    Worker* worker = nullptr;
    dma::Buffer buffer;
    Request request;
    std::uint64_t slot = 0;  // index in the layout
    Clock::time_point submitted{};
    unsigned attempts = 0;  // failed submissions so far (PerfOptions::retries)
    // A read whose data is known: the run writes too, and had written this slot before the read
    // was issued (a write racing with it writes the same bytes); or the run only reads and the
    // range is expected to hold the pattern already.
    bool check = false;
};

}  // namespace ring3::block::detail
