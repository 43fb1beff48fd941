// The engine of `ring3 perf blk` (perf.hpp): the thread harness. One Worker (perf_worker.cpp) per
// queue, each on its own thread pinned to a CPU; phases (run, then verify), live progress, and the
// report put together from the workers' figures.
#include "ring3/block/perf.hpp"

#include <fmt/core.h>
#include <pthread.h>
#include <sched.h>
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

#include "perf_worker.hpp"

namespace ring3::block {
namespace {

using detail::Clock;
using detail::Layout;
using detail::Phase;
using detail::Shared;
using detail::Worker;
using detail::WrittenMap;

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

// The CPUs this process may run on (its affinity mask), in order.
std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (CPU_ISSET(cpu, &set)) {
                cpus.push_back(cpu);
            }
        }
    }
    return cpus;
}

void pin_to(int cpu) noexcept {
    if (cpu < 0) {
        return;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (::pthread_setaffinity_np(::pthread_self(), sizeof set, &set) != 0) {
        log_warn("perf: cannot pin a worker to CPU {}; its timing may mix two CPUs' counters", cpu);
    }
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
    const std::vector<int> cpus = allowed_cpus();
    for (auto& worker : workers) {
        const int cpu = cpus.empty() ? -1 : cpus[threads.size() % cpus.size()];
        threads.emplace_back([&, w = worker.get(), cpu] {
            // One CPU per worker, for the run: its cycle counter is then one clock (see
            // cycle_clock.hpp), and a polling queue keeps its cache.
            pin_to(cpu);
            start.wait();
            w->run(phase);
            const std::lock_guard lock(mutex);
            ++finished;
            done.notify_one();
        });
    }
    const double cpu_before = cpu_seconds();
    // Progress is timed on this thread with steady_clock (a few reads a second).
    using Steady = std::chrono::steady_clock;
    const auto started = Steady::now();
    shared.run_time = options.time;
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
            const auto now = Steady::now();
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
    Clock::duration longest{0};
    for (const auto& worker : workers) {
        const PhaseResult& r = worker->result();
        total.ios += r.ios;
        total.reads += r.reads;
        total.writes += r.writes;
        total.bytes += r.bytes;
        total.errors += r.errors;
        total.queue_full += r.queue_full;
        total.retried += r.retried;
        total.max_in_flight = std::max(total.max_in_flight, r.max_in_flight);
        total.latency.merge(r.latency);
        longest = std::max(longest, worker->elapsed());
    }
    total.elapsed = longest;
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
    // The first completion on both clocks: each worker measured its age on its own counter.
    for (const auto& worker : workers) {
        if (worker->first_completion_age().count() < 0) {
            continue;
        }
        const auto age =
            std::chrono::duration_cast<std::chrono::nanoseconds>(worker->first_completion_age());
        const auto steady = worker->end_steady() - age;
        if (!report.first_completion || steady < *report.first_completion) {
            report.first_completion = steady;
            report.first_completion_wall =
                worker->end_wall() -
                std::chrono::duration_cast<std::chrono::system_clock::duration>(age);
        }
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
