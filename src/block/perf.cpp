// The engine of `ring3 perf blk` (perf.hpp): one Worker per queue on its own thread.
#include "ring3/block/perf.hpp"

#include <fmt/core.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "ring3/block/pattern.hpp"
#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/dma/pool.hpp"

namespace ring3::block {
namespace {

// The cycle counter, not steady_clock: timing every request must not cost a system call (see
// cycle_clock.hpp; in a TCG guest steady_clock reads the emulated HPET).
using Clock = CycleClock;

// How long one Queue::wait() may block before the loop looks at its stop conditions again.
constexpr std::chrono::microseconds kWaitSlice{1000};
// Buffers are page aligned: what a PRP entry wants, and no request straddles pages needlessly.
constexpr std::size_t kBufferAlignment = 4096;

// strerror() may share a buffer between threads; this does not.
std::string error_text(int error) {
    return std::system_category().message(error);
}

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
std::pair<std::uint64_t, std::uint64_t> share(std::uint64_t total, unsigned index, unsigned count) {
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
    std::unique_ptr<WrittenMap> written;  // with verify and writes
    Clock::time_point deadline = Clock::time_point::max();
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
    // When the worker's first request completed (the epoch when none has).
    Clock::time_point first_completion() const noexcept { return first_completion_; }
    std::size_t buffer_bytes() const noexcept {
        return std::size_t{options_.request_bytes} * options_.queue_depth;
    }
    QueueStats queue_stats() const noexcept { return queue_.stats(); }
    Clock::time_point finished() const noexcept { return finished_; }
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
    Clock::time_point finished_{};
    Clock::time_point first_completion_{};

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
    // A read whose data is known: the run writes too, and had written this slot before the read
    // was issued (a write racing with it writes the same bytes); or the run only reads and the
    // range is expected to hold the pattern already.
    bool check = false;
};

Worker::Worker(Shared& shared, unsigned index, Queue& queue, dma::DmaPool& pool)
    : shared_(shared),
      options_(shared.options),
      layout_(shared.layout),
      index_(index),
      queue_(queue),
      buffers_(std::in_place, pool, options_.request_bytes, options_.queue_depth, kBufferAlignment),
      slots_(options_.queue_depth),
      free_(options_.queue_depth),
      random_{options_.seed ^ (0xd1b54a32d192ed03ull * (index + 1))} {
    for (std::uint32_t i = 0; i < options_.queue_depth; ++i) {
        Slot& slot = slots_[i];
        slot.worker = this;
        if (!buffers_->get(slot.buffer)) {
            throw Error::invalid("perf blk", "buffer pool", "fewer buffers than the queue depth");
        }
        // Something other than zeros for writes without verify; overwritten when verifying,
        // and not needed at all when the run only reads (it costs start-up time).
        for (std::uint32_t b = 0; has_writes(options_.workload) && b < layout_.slot_blocks; ++b) {
            fill_pattern(
                {slot.buffer.data + std::size_t{b} * layout_.block_size, layout_.block_size}, b,
                options_.seed);
        }
        slot.request.data = slot.buffer.data;
        slot.request.callback = &Worker::on_completion;
        slot.request.context = &slot;
    }
}

void Worker::start_phase(Phase phase) {
    phase_ = phase;
    result_ = PhaseResult{};
    issuing_ = true;
    issued_ = 0;
    in_flight_ = 0;
    free_top_ = 0;
    for (std::uint32_t i = options_.queue_depth; i-- > 0;) {
        free_[free_top_++] = i;
    }
    published_ios_.store(0, std::memory_order_relaxed);
    published_bytes_.store(0, std::memory_order_relaxed);
    // Sequential and verify: each worker its own share of the range, in order.
    std::tie(begin_, end_) = share(layout_.slots, index_, options_.queues);
    cursor_ = begin_;
    if (phase == Phase::verify) {
        quota_ = ~std::uint64_t{0};  // every written slot once
        check_reads_ = true;
        return;
    }
    const auto [first, last] = share(options_.ios, index_, options_.queues);
    quota_ = options_.ios == 0 ? ~std::uint64_t{0} : last - first;
    check_reads_ = options_.verify;
}

// Chooses the next request into `slot`.
bool Worker::prepare(Slot& slot) noexcept {
    if (issued_ >= quota_) {
        return false;
    }
    Op op = Op::read;
    std::uint64_t index = 0;
    if (phase_ == Phase::verify) {
        while (cursor_ < end_ && !shared_.written->test(cursor_)) {
            ++cursor_;
        }
        if (cursor_ == end_) {
            return false;
        }
        index = cursor_++;
    } else {
        const Workload w = options_.workload;
        if (w == Workload::rw || w == Workload::randrw) {
            op = random_.below(100) < options_.read_percent ? Op::read : Op::write;
        } else {
            op = has_writes(w) ? Op::write : Op::read;
        }
        if (is_random(w)) {
            index = random_.below(layout_.full_slots);
        } else {
            if (cursor_ == end_) {
                if (options_.single_pass || begin_ == end_) {
                    return false;
                }
                cursor_ = begin_;  // wrap around
            }
            index = cursor_++;
        }
    }
    slot.slot = index;
    slot.request.op = op;
    slot.check = op == Op::read && check_reads_ &&
                 (phase_ == Phase::verify || !shared_.written || shared_.written->test(index));
    slot.request.lba = layout_.first_lba + index * layout_.slot_blocks;
    slot.request.blocks = layout_.blocks_of(index);
    if (op == Op::write && options_.verify) {
        for (std::uint32_t b = 0; b < slot.request.blocks; ++b) {
            fill_pattern(
                {slot.buffer.data + std::size_t{b} * layout_.block_size, layout_.block_size},
                slot.request.lba + b, options_.seed);
        }
    }
    return true;
}

void Worker::on_completion(void* context, const Status& status) {
    auto& slot = *static_cast<Slot*>(context);
    slot.worker->complete(slot, status);
}

void Worker::complete(Slot& slot, const Status& status) noexcept {
    if (abandoned_) {
        return;
    }
    const auto now = Clock::now();
    if (first_completion_ == Clock::time_point{}) {
        first_completion_ = now;
    }
    // Cycle counters of two CPUs may disagree a little: a thread moved between them can see time
    // go back, which counts as zero rather than as an enormous latency.
    result_.latency.record(
        static_cast<std::uint64_t>(std::max<Clock::rep>(0, (now - slot.submitted).count())));
    --in_flight_;
    free_[free_top_++] = static_cast<std::uint32_t>(&slot - slots_.data());
    const Request& request = slot.request;
    if (!status.ok()) {
        ++result_.errors;
        if (first_errors_.size() < options_.max_reported) {
            try {
                first_errors_.push_back(
                    fmt::format("{} of LBA {} ({} blocks) failed: {} (device status {:#06x})",
                                to_string(request.op), request.lba, request.blocks,
                                error_text(status.error), status.device_code));
            } catch (...) {  // out of memory on the error path: the count still says it
            }
        }
        return;
    }
    ++result_.ios;
    result_.bytes += std::uint64_t{request.blocks} * layout_.block_size;
    if (request.op == Op::write) {
        ++result_.writes;
        if (shared_.written) {
            shared_.written->mark(slot.slot);
        }
    } else {
        ++result_.reads;
        if (slot.check) {
            check(slot);
        }
    }
}

void Worker::check(const Slot& slot) noexcept {
    for (std::uint32_t b = 0; b < slot.request.blocks; ++b) {
        const std::span<const std::byte> block{
            slot.buffer.data + std::size_t{b} * layout_.block_size, layout_.block_size};
        ++blocks_checked_;
        try {
            // A match returns an empty string, which allocates nothing.
            std::string problem = check_pattern(block, slot.request.lba + b, options_.seed);
            if (!problem.empty()) {
                ++mismatches_;
                if (first_mismatches_.size() < options_.max_reported) {
                    first_mismatches_.push_back(std::move(problem));
                }
            }
        } catch (...) {
            ++mismatches_;
        }
    }
}

void Worker::stop_with(std::string message) noexcept {
    issuing_ = false;
    if (fatal_.empty()) {
        fatal_ = std::move(message);
    }
}

void Worker::run(Phase phase) noexcept {
    try {
        start_phase(phase);
        loop();
    } catch (const std::exception& e) {
        stop_with(fmt::format("queue {}: {}", index_, e.what()));
    } catch (...) {
        stop_with(fmt::format("queue {}: unknown exception", index_));
    }
    finished_ = Clock::now();
    published_ios_.store(result_.ios, std::memory_order_relaxed);
    published_bytes_.store(result_.bytes, std::memory_order_relaxed);
}

// The hot loop: fill the queue up to the depth (one burst, one flush), wait for completions,
// repeat. A request refused with -EAGAIN stays prepared in its slot and goes first next time.
void Worker::loop() {
    Slot* pending = nullptr;
    auto last_progress = Clock::now();
    std::uint64_t last_completed = 0;
    for (;;) {
        bool refused = false;
        while (issuing_ && in_flight_ < options_.queue_depth) {
            if (pending == nullptr) {
                Slot& slot = slots_[free_[--free_top_]];
                if (!prepare(slot)) {
                    free_[free_top_++] = static_cast<std::uint32_t>(&slot - slots_.data());
                    issuing_ = false;
                    break;
                }
                pending = &slot;
            }
            pending->submitted = Clock::now();
            const int rc = queue_.enqueue(pending->request);
            if (rc == -EAGAIN) {
                ++result_.queue_full;
                refused = true;
                break;
            }
            if (rc != 0) {
                stop_with(fmt::format("queue {}: submit {} of LBA {} ({} blocks) refused: {}",
                                      index_, to_string(pending->request.op), pending->request.lba,
                                      pending->request.blocks, error_text(-rc)));
                break;
            }
            last_progress = pending->submitted;
            pending = nullptr;
            ++issued_;
            ++in_flight_;
            result_.max_in_flight = std::max(result_.max_in_flight, in_flight_);
        }
        // The whole burst goes to the device with one notification.
        queue_.flush();
        if (!issuing_ && pending != nullptr) {
            free_[free_top_++] = static_cast<std::uint32_t>(pending - slots_.data());
            pending = nullptr;
        }
        if (in_flight_ == 0 && pending == nullptr) {
            return;
        }
        if (in_flight_ == 0) {
            // Refused with nothing in flight: the driver is busy (a reset under way).
            std::this_thread::yield();
        } else {
            queue_.wait(kWaitSlice);
        }
        const auto now = Clock::now();
        const std::uint64_t completed = result_.ios + result_.errors;
        published_ios_.store(result_.ios, std::memory_order_relaxed);
        published_bytes_.store(result_.bytes, std::memory_order_relaxed);
        if (completed != last_completed) {
            last_completed = completed;
            last_progress = now;
        } else if (now - last_progress > options_.stall_timeout) {
            stop_with(fmt::format(
                "queue {}: no progress for {} ms with {} request(s) in flight{}; abandoned", index_,
                options_.stall_timeout.count(), in_flight_, refused ? " (submits refused)" : ""));
            if (pending != nullptr) {
                free_[free_top_++] = static_cast<std::uint32_t>(pending - slots_.data());
            }
            return;  // whatever is in flight stays with the device: the Worker is not freed
        }
        const bool cancelled =
            options_.cancel != nullptr && options_.cancel->load(std::memory_order_relaxed);
        if (cancelled || (phase_ == Phase::run && now >= shared_.deadline)) {
            issuing_ = false;
        }
    }
}

// A run whose requests are still with the device.
struct RunState {
    Shared shared;
    std::vector<std::unique_ptr<Worker>> workers;
};

// Keeps an abandoned run's request contexts until the process ends: never freed, not even by
// static destructors, yet reachable, so leak checkers stay quiet about a deliberate choice.
void keep_until_exit(std::unique_ptr<RunState> state) {
    static std::mutex mutex;
    static auto* kept = new std::vector<std::unique_ptr<RunState>>;
    const std::lock_guard lock(mutex);
    kept->push_back(std::move(state));
}

double seconds_of(const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
}

double cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return seconds_of(usage.ru_utime) + seconds_of(usage.ru_stime);
}

// Runs `phase` on every worker, each on its own thread, and reports progress meanwhile.
PhaseResult run_phase(Shared& shared, std::vector<std::unique_ptr<Worker>>& workers, Phase phase,
                      const std::function<void(const Progress&)>& on_progress) {
    const PerfOptions& options = shared.options;
    std::latch start(1);
    std::mutex mutex;
    std::condition_variable done;
    unsigned finished = 0;
    std::vector<std::thread> threads;
    threads.reserve(workers.size());
    for (auto& worker : workers) {
        threads.emplace_back([&, w = worker.get()] {
            start.wait();
            w->run(phase);
            const std::lock_guard lock(mutex);
            ++finished;
            done.notify_one();
        });
    }
    const double cpu_before = cpu_seconds();
    const auto started = Clock::now();
    if (phase == Phase::run && options.time.count() > 0) {
        shared.deadline = started + options.time;
    }
    start.count_down();

    std::uint64_t last_ios = 0;
    std::uint64_t last_bytes = 0;
    auto last_tick = started;
    {
        std::unique_lock lock(mutex);
        while (finished < workers.size()) {
            const auto tick = last_tick + options.progress_interval;
            if (done.wait_until(lock, tick, [&] { return finished == workers.size(); })) {
                break;
            }
            if (!on_progress) {
                last_tick = tick;
                continue;
            }
            lock.unlock();
            Progress progress;
            progress.phase = phase == Phase::run ? "run" : "verify";
            const auto now = Clock::now();
            progress.elapsed = now - started;
            for (const auto& worker : workers) {
                progress.ios += worker->published_ios();
                progress.bytes += worker->published_bytes();
            }
            const double interval = std::chrono::duration<double>(now - last_tick).count();
            if (interval > 0) {
                progress.iops = static_cast<double>(progress.ios - last_ios) / interval;
                progress.mib_per_s =
                    static_cast<double>(progress.bytes - last_bytes) / interval / (1 << 20);
            }
            last_ios = progress.ios;
            last_bytes = progress.bytes;
            last_tick = now;
            on_progress(progress);
            lock.lock();
        }
    }
    for (auto& thread : threads) {
        thread.join();
    }
    const double cpu_after = cpu_seconds();

    PhaseResult total;
    auto ended = started;
    for (const auto& worker : workers) {
        const PhaseResult& r = worker->result();
        total.ios += r.ios;
        total.reads += r.reads;
        total.writes += r.writes;
        total.bytes += r.bytes;
        total.errors += r.errors;
        total.queue_full += r.queue_full;
        total.max_in_flight = std::max(total.max_in_flight, r.max_in_flight);
        total.latency.merge(r.latency);
        ended = std::max(ended, worker->finished());
    }
    total.elapsed = ended - started;
    const double wall = std::chrono::duration<double>(total.elapsed).count();
    total.cpu_percent = wall > 0 ? (cpu_after - cpu_before) / wall * 100 : 0;
    return total;
}

}  // namespace

// ---- run -------------------------------------------------------------------------------------

PerfReport run_perf(BlockDevice& device, const PerfOptions& options) {
    const Geometry g = device.geometry();
    const std::string name = device.name();
    validate(options, g, name);

    PerfReport report;
    report.device = name;
    report.geometry = g;
    report.options = options;
    report.options.on_progress = nullptr;
    report.options.cancel = nullptr;

    auto state = std::make_unique<RunState>();
    Shared* shared = &state->shared;
    shared->options = options;
    shared->options.on_progress = nullptr;
    Layout& layout = shared->layout;
    layout.block_size = g.block_size;
    layout.first_lba = options.offset / g.block_size;
    layout.lba_count =
        options.size == 0 ? g.block_count - layout.first_lba : options.size / g.block_size;
    layout.slot_blocks = options.request_bytes / g.block_size;
    layout.slots = (layout.lba_count + layout.slot_blocks - 1) / layout.slot_blocks;
    layout.full_slots = layout.lba_count / layout.slot_blocks;
    report.first_lba = layout.first_lba;
    report.lba_count = layout.lba_count;
    if (options.verify && has_writes(options.workload)) {
        shared->written = std::make_unique<WrittenMap>(layout.slots);
    }

    // A request above max_transfer takes several entries of the queue: make room for qd of them.
    const std::uint32_t commands =
        g.max_transfer == 0 ? 1
                            : static_cast<std::uint32_t>(
                                  (options.request_bytes + g.max_transfer - 1) / g.max_transfer);
    report.commands_per_request = commands;
    const auto depth = static_cast<unsigned>(
        std::min<std::uint64_t>(std::uint64_t{options.queue_depth} * commands, g.max_queue_depth));

    // Queues and buffers are set up here, on one thread: open_queue and DmaPool are not for
    // concurrent use.
    auto& workers = state->workers;
    for (unsigned i = 0; i < options.queues; ++i) {
        Queue& queue = device.open_queue(i, depth, options.mode);
        workers.push_back(std::make_unique<Worker>(*shared, i, queue, device.dma_pool()));
    }
    mark(options.timeline, "queues");

    const auto cancelled = [&] {
        return options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed);
    };

    report.run = run_phase(*shared, workers, Phase::run, options.on_progress);
    report.cancelled = cancelled();
    // The first completion, from the cycle counter to both clocks (read once each, now).
    Clock::time_point first{};
    for (const auto& worker : workers) {
        const auto t = worker->first_completion();
        if (t != Clock::time_point{} && (first == Clock::time_point{} || t < first)) {
            first = t;
        }
    }
    if (first != Clock::time_point{}) {
        const auto ago = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - first);
        report.first_completion = std::chrono::steady_clock::now() - ago;
        report.first_completion_wall =
            std::chrono::system_clock::now() -
            std::chrono::duration_cast<std::chrono::system_clock::duration>(ago);
    }
    const auto stopped = [&] {
        return std::any_of(workers.begin(), workers.end(),
                           [](const auto& w) { return !w->fatal().empty(); });
    };
    if (shared->written && !stopped() && !report.cancelled) {
        report.verify_pass = true;
        report.verify = run_phase(*shared, workers, Phase::verify, options.on_progress);
        report.cancelled = cancelled();
    }

    bool abandoned = false;
    for (const auto& worker : workers) {
        report.blocks_checked += worker->blocks_checked();
        report.mismatches += worker->mismatches();
        const auto keep = [&](std::vector<std::string>& into,
                              const std::vector<std::string>& from) {
            for (const auto& message : from) {
                if (into.size() < options.max_reported) {
                    into.push_back(message);
                }
            }
        };
        keep(report.first_mismatches, worker->first_mismatches());
        keep(report.first_errors, worker->first_errors());
        if (!worker->fatal().empty()) {
            report.fatal.push_back(worker->fatal());
        }
        abandoned = abandoned || worker->in_flight() != 0;
        report.queue_stats.push_back(worker->queue_stats());
        report.data_buffer_bytes += worker->buffer_bytes();
    }
    report.dma_mapped_bytes = device.dma_pool().arena().size();
    report.dma_in_use_bytes = device.dma_pool().bytes_in_use();
    if (abandoned) {
        // Requests still with the device name these slots as their callback context: keep the
        // slots (not the DMA buffers, which must go back before the device's pool goes).
        log_warn("perf blk {}: requests abandoned in flight; close the device to stop them", name);
        for (auto& worker : workers) {
            worker->abandon();
        }
        keep_until_exit(std::move(state));
    }
    return report;
}

}  // namespace ring3::block
