// `ring3 perf blk`: a load generator over the generic BlockDevice face (DESIGN.md, "Performance
// method"), in the spirit of fio: one thread per queue, each keeping `queue_depth` requests in
// flight, with latency histograms, IOPS, bandwidth, CPU use, and an optional data check with the
// self-describing pattern of pattern.hpp.
//
// The steady-state loop allocates nothing and, in poll mode, makes no system call: buffers come
// from one dma::BufferPool per queue, request contexts are preallocated, and the completion
// callback is a plain function pointer. A completion frees its slot; the loop refills the queue
// after Queue::wait() returns, enqueueing the burst and flushing it once (the BlockDevice
// contract does not promise that enqueue() may be called from inside a callback).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/block/block_device.hpp"
#include "ring3/core/timeline.hpp"
#include "ring3/irq/interrupt.hpp"

namespace ring3::block {

// What each request does and where it goes (fio's names).
enum class Workload { read, write, randread, randwrite, rw, randrw };

const char* to_string(Workload workload) noexcept;
bool is_random(Workload workload) noexcept;
bool has_reads(Workload workload) noexcept;
bool has_writes(Workload workload) noexcept;

// Command-line values. Each throws ring3::Error naming `option` when `text` is not valid.
// "randread", "randwrite", "read", "write", "rw", "randrw".
Workload parse_workload(std::string_view text, std::string_view option = "--rw");
// Bytes: "4096", "4k", "2M", "1g" (k, m, g, t: powers of 1024; a trailing "b" or "ib" is allowed).
std::uint64_t parse_size(std::string_view text, std::string_view option);
// "10s", "500ms", "250us", "2m" (minutes); a bare number is seconds.
std::chrono::nanoseconds parse_duration(std::string_view text, std::string_view option);

// A snapshot for a live status line, taken about once per `progress_interval`.
struct Progress {
    const char* phase = "run";           // "run", or "verify" for the read-back pass
    std::chrono::nanoseconds elapsed{};  // since the phase started
    std::uint64_t ios = 0;               // completed so far in the phase
    std::uint64_t bytes = 0;
    double iops = 0;  // over the last interval
    double mib_per_s = 0;
};

struct PerfOptions {
    Workload workload = Workload::randread;
    std::uint32_t request_bytes = 4096;  // --bs: a multiple of the block size
    unsigned queue_depth = 32;           // requests in flight per queue
    unsigned queues = 1;                 // one thread per queue
    irq::WaitMode mode = irq::WaitMode::poll;
    std::uint64_t offset = 0;    // bytes; the range starts here
    std::uint64_t size = 0;      // bytes of the range; 0: up to the end of the device
    unsigned read_percent = 50;  // rw, randrw: share of reads

    // Stop conditions; the first one met ends the run. At least one must be given.
    std::chrono::nanoseconds time{0};  // 0: no time limit
    std::uint64_t ios = 0;             // requests in all (split over the queues); 0: no limit
    bool single_pass = false;  // sequential: each block of the range once (each queue its part)

    // Writes carry fill_pattern(lba, seed); reads check it. Written blocks are read back and
    // checked in a second pass after a workload with writes.
    bool verify = false;
    std::uint64_t seed = 0;

    // A queue that makes no progress for this long while it has requests in flight is abandoned
    // and the run fails.
    std::chrono::milliseconds stall_timeout{60000};
    // A request that fails is submitted again, up to this many times (a device reset or a
    // restarted vfio-user server fails what was in flight; the data is still the same). Only a
    // request that fails every attempt counts as an error.
    unsigned retries = 0;
    std::chrono::milliseconds progress_interval{1000};
    std::function<void(const Progress&)> on_progress;  // called on run_perf's thread
    const std::atomic<bool>* cancel = nullptr;         // set (e.g. by SIGINT) to stop early
    unsigned max_reported = 8;  // mismatch and error messages kept in the report
    // When given, run_perf marks "queues" on it once the queues and buffers are set up.
    Timeline* timeline = nullptr;
};

// Latencies in nanoseconds, log-linear like HdrHistogram: exact below 256 ns, then 128
// sub-buckets per power of two (relative error under 0.8 %), up to about 36 minutes. Fixed size.
class LatencyHistogram {
  public:
    static constexpr unsigned kSubBucketBits = 7;
    static constexpr unsigned kMaxShift = 33;
    static constexpr std::uint64_t kMaxValue =
        (std::uint64_t{2} << (kMaxShift + kSubBucketBits)) - 1;
    static constexpr std::size_t kBuckets = std::size_t{kMaxShift + 2} << kSubBucketBits;

    void record(std::uint64_t nanoseconds) noexcept {
        ++buckets_[index_of(nanoseconds)];
        ++count_;
        sum_ += nanoseconds;
        min_ = nanoseconds < min_ ? nanoseconds : min_;
        max_ = nanoseconds > max_ ? nanoseconds : max_;
    }
    void merge(const LatencyHistogram& other) noexcept;
    void clear() noexcept { *this = LatencyHistogram{}; }

    std::uint64_t count() const noexcept { return count_; }
    std::uint64_t min() const noexcept { return count_ == 0 ? 0 : min_; }
    std::uint64_t max() const noexcept { return max_; }
    double mean() const noexcept;
    // The smallest value v such that at least `percent` % of the samples are <= v (to the
    // bucket's precision: its upper bound, never above max()). 0 when empty.
    std::uint64_t percentile(double percent) const noexcept;

    static std::size_t index_of(std::uint64_t value) noexcept {
        if (value > kMaxValue) {
            value = kMaxValue;
        }
        const unsigned msb = 63u - static_cast<unsigned>(__builtin_clzll(value | 1));
        const unsigned shift = msb > kSubBucketBits ? msb - kSubBucketBits : 0;
        return (std::size_t{shift} << kSubBucketBits) + (value >> shift);
    }
    static std::uint64_t upper_bound_of(std::size_t index) noexcept;

  private:
    std::array<std::uint64_t, kBuckets> buckets_{};
    std::uint64_t count_ = 0;
    std::uint64_t sum_ = 0;
    std::uint64_t min_ = ~std::uint64_t{0};
    std::uint64_t max_ = 0;
};

// Figures of one phase (the workload, or the verify pass), all queues together.
struct PhaseResult {
    std::chrono::nanoseconds elapsed{0};  // start to the last completion
    std::uint64_t ios = 0;                // requests completed without error
    std::uint64_t reads = 0;
    std::uint64_t writes = 0;
    std::uint64_t bytes = 0;
    std::uint64_t errors = 0;      // requests completed with an error status
    std::uint64_t queue_full = 0;  // submits refused with -EAGAIN (retried later)
    std::uint64_t retried = 0;     // failed requests submitted again (PerfOptions::retries)
    unsigned max_in_flight = 0;    // the most requests one queue had in flight
    double cpu_percent = 0;        // process user+sys time over wall time; 100 = one core busy
    LatencyHistogram latency;      // submit to callback, per request (errors included)

    double seconds() const noexcept;
    double iops() const noexcept;
    double mib_per_s() const noexcept;
};

struct PerfReport {
    std::string device;
    Geometry geometry;
    PerfOptions options;
    std::uint64_t first_lba = 0;  // the range, in blocks
    std::uint64_t lba_count = 0;
    std::uint32_t commands_per_request = 1;  // the driver splits a request above max_transfer
    PhaseResult run;
    bool verify_pass = false;  // the read-back pass ran
    PhaseResult verify;
    std::uint64_t blocks_checked = 0;  // blocks whose pattern was checked (both phases)
    std::uint64_t mismatches = 0;
    std::vector<std::string> first_mismatches;  // check_pattern()'s messages
    std::vector<std::string> first_errors;      // failed requests, with the device's status
    std::vector<std::string> fatal;             // a queue that had to stop (refused, stalled)
    bool cancelled = false;
    // Per queue, what the driver did (both phases): notifications per request and completions
    // per reap say where an emulated device spends its time.
    std::vector<QueueStats> queue_stats;
    // DMA memory: bytes the device can reach (mapped into its IOVA space), and bytes of it
    // allocated (queues, rings, PRP lists, the run's data buffers), after the run.
    std::uint64_t dma_mapped_bytes = 0;
    std::uint64_t dma_in_use_bytes = 0;
    std::uint64_t data_buffer_bytes = 0;  // of which the run's data buffers
    // When the first request of the run completed (steady_clock and wall clock), for start-up
    // measurements (`--ios 1`).
    std::optional<std::chrono::steady_clock::time_point> first_completion;
    std::optional<std::chrono::system_clock::time_point> first_completion_wall;

    std::uint64_t errors() const noexcept { return run.errors + verify.errors; }
    // The run failed: a queue stopped, a block did not match, or (with verify) a request failed.
    bool failed() const noexcept {
        return !fatal.empty() || mismatches != 0 || (options.verify && errors() != 0);
    }
};

// Throws ring3::Error naming the option and the limit when `options` does not fit `geometry`
// (the device is only used for its name in messages).
void validate(const PerfOptions& options, const Geometry& geometry, std::string_view device);

// Opens options.queues queues of `device` (queue i with the depth the workload needs, in
// options.mode), runs the workload and, with verify and writes, the read-back pass. Throws
// ring3::Error for invalid options or when the device cannot be set up; errors during the run
// are in the report.
PerfReport run_perf(BlockDevice& device, const PerfOptions& options);

// The fixed-form figure line (DESIGN.md): "blk_randread_qd32_iops: 73120 IOPS".
std::string figure_line(const PerfReport& report);
// The human report, ending with figure_line() and a newline.
std::string format_report(const PerfReport& report);
// One JSON object with every figure, the settings and the errors.
std::string format_report_json(const PerfReport& report);
// "[ 3s] 7,312 IOPS 28.6 MiB/s" (no newline).
std::string format_progress(const Progress& progress);

}  // namespace ring3::block
