// The engine of `ring3 perf net` (perf.hpp): one Worker per queue pair on its own thread, and the
// harness that starts them, shows progress and adds up their figures.
#include "ring3/net/perf.hpp"

#include <fmt/core.h>
#include <sys/resource.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <latch>
#include <memory>
#include <mutex>
#include <thread>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/error.hpp"

namespace ring3::net {
namespace {

// The cycle counter, not steady_clock: checking the time every burst must not cost a system call
// (see cycle_clock.hpp; in a TCG guest steady_clock reads the emulated HPET).
using Clock = CycleClock;

// How long one Queue::wait() may block before the loop looks at its stop conditions again.
constexpr std::chrono::microseconds kWaitSlice{1000};
// fwd waits on one port, then on the other: the shorter, the less a frame on the other waits.
constexpr std::chrono::microseconds kForwardWaitSlice{100};

// Raw ticks of the cycle counter, for cycles per packet (0 where there is none).
std::uint64_t cycles() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    return __rdtsc();
#else
    return 0;
#endif
}

constexpr bool kHaveCycleCounter =
#if defined(__x86_64__) || defined(__i386__)
    true;
#else
    false;
#endif

// Part `index` of `count` of `total`: as even as possible.
std::uint64_t share(std::uint64_t total, unsigned index, unsigned count) {
    const auto part = [&](unsigned i) {
        return static_cast<std::uint64_t>(static_cast<unsigned __int128>(total) * i / count);
    };
    return part(index + 1) - part(index);
}

// What every worker shares; read-only while they run, but for the atomics.
struct Shared {
    Shared(const NetPerfOptions& o, const TestFlow& f) : options(o), flow(f), pattern(o.seed) {}
    NetPerfOptions options;
    TestFlow flow;
    FillPattern pattern;
    Clock::time_point deadline = Clock::time_point::max();
    std::atomic<std::uint64_t> counted{0};  // rx: test frames, fwd: frames forwarded, in all
    std::atomic<bool> stop{false};          // the count was reached
};

class Worker {
  public:
    Worker(Shared& shared, unsigned index, Queue& queue, Queue* peer)
        : shared_(shared),
          options_(shared.options),
          index_(index),
          queue_(queue),
          peer_(peer),
          checker_(shared.pattern, shared.options.max_reported) {
        result_.queue = index;
    }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Runs to the end; never throws (what goes wrong is in fatal()).
    void run() noexcept;

    const NetQueueResult& result() const noexcept { return result_; }
    const std::vector<std::string>& problems() const noexcept { return checker_.problems(); }
    const std::string& fatal() const noexcept { return fatal_; }
    Clock::time_point finished() const noexcept { return finished_; }
    std::uint64_t published_packets() const noexcept {
        return published_packets_.load(std::memory_order_relaxed);
    }
    std::uint64_t published_bytes() const noexcept {
        return published_bytes_.load(std::memory_order_relaxed);
    }

  private:
    // The queue's wait, its cycles counted as idle (NetQueueResult::idle_cycles).
    void idle_wait(unsigned events) {
        const std::uint64_t start = cycles();
        queue_.wait(events, kWaitSlice);
        result_.idle_cycles += cycles() - start;
    }
    void run_tx();
    void run_rx();
    void run_fwd();
    // Frames received on one side of a forwarder that the other side's ring had no room for
    // yet: sent first next time, and until they are, nothing more is received from that side.
    struct Held {
        std::array<Packet, kMaxBurst> packets{};
        unsigned first = 0;
        unsigned count = 0;
    };
    unsigned forward(Queue& from, Queue& to, Held& held) noexcept;
    unsigned send_held(Queue& to, Held& held) noexcept;
    bool stopping(Clock::time_point now) const noexcept;
    bool check_failure(const Queue& queue);
    void count_shared(std::uint64_t n) noexcept;
    void publish() noexcept {
        published_packets_.store(result_.packets, std::memory_order_relaxed);
        published_bytes_.store(result_.bytes, std::memory_order_relaxed);
    }
    void stop_with(std::string message) noexcept {
        if (fatal_.empty()) {
            fatal_ = std::move(message);
        }
    }

    Shared& shared_;
    const NetPerfOptions& options_;
    unsigned index_;
    Queue& queue_;
    Queue* peer_;  // fwd
    RxChecker checker_;
    NetQueueResult result_;
    std::string fatal_;
    Clock::time_point finished_{};
    std::array<Packet, kMaxBurst> burst_{};
    std::array<Held, 2> held_{};  // fwd: a -> b, b -> a
    std::atomic<std::uint64_t> published_packets_{0};
    std::atomic<std::uint64_t> published_bytes_{0};
};

bool Worker::stopping(Clock::time_point now) const noexcept {
    return now >= shared_.deadline || shared_.stop.load(std::memory_order_relaxed) ||
           (options_.cancel != nullptr && options_.cancel->load(std::memory_order_relaxed));
}

bool Worker::check_failure(const Queue& queue) {
    if (const int error = queue.failure(); error != 0) {
        stop_with(fmt::format("queue {}: the port failed: {}", index_,
                              std::system_category().message(error)));
        return true;
    }
    return false;
}

void Worker::count_shared(std::uint64_t n) noexcept {
    const std::uint64_t total = shared_.counted.fetch_add(n, std::memory_order_relaxed) + n;
    if (options_.count != 0 && total >= options_.count) {
        shared_.stop.store(true, std::memory_order_relaxed);
    }
}

// Keeps `burst` frames offered to the queue: builds what is missing, offers them, keeps what was
// refused for the next round (in order, so sequence numbers leave in order).
void Worker::run_tx() {
    const std::uint64_t budget =
        options_.count == 0 ? ~std::uint64_t{0} : share(options_.count, index_, options_.queues);
    FrameGenerator generator(shared_.flow, shared_.pattern, options_.sizes,
                             static_cast<std::uint16_t>(index_));
    dma::BufferPool& pool = queue_.pool();
    const std::uint16_t headroom = queue_.headroom();
    Packet* burst = burst_.data();
    unsigned held = 0;
    auto last_progress = Clock::now();
    for (;;) {
        const auto now = Clock::now();
        if (stopping(now) || check_failure(queue_)) {
            break;
        }
        while (held < options_.burst && generator.sequence() < budget) {
            Packet& p = burst[held];
            if (!pool.get(p.buffer)) {
                break;
            }
            p.offset = headroom;
            p.flags = kNoFlags;
            p.length = generator.next_length();
            generator.build(p.data());
            ++held;
        }
        if (held == 0) {
            if (generator.sequence() >= budget) {
                break;  // all sent
            }
            // Every buffer is with the device: wait for some to come back.
            queue_.reclaim();
            idle_wait(kReadyTx);
        } else {
            const unsigned accepted = queue_.tx_burst(burst, held);
            for (unsigned i = 0; i < accepted; ++i) {
                result_.bytes += burst[i].length;
            }
            result_.packets += accepted;
            if (accepted < held) {
                ++result_.refused;
                std::memmove(burst, burst + accepted, (held - accepted) * sizeof(Packet));
                held -= accepted;
                if (accepted == 0) {
                    idle_wait(kReadyTx);
                }
            } else {
                held = 0;
            }
            if (accepted != 0) {
                last_progress = now;
            }
        }
        publish();
        if (Clock::now() - last_progress > options_.stall_timeout) {
            stop_with(fmt::format("queue {}: could not send for {} ms; stopped", index_,
                                  options_.stall_timeout.count()));
            break;
        }
    }
    // Frames built but never offered go back (they were the last ones: no gap for a receiver).
    for (unsigned i = 0; i < held; ++i) {
        pool.put(burst[i].buffer);
    }
    // Let the device finish what it accepted, so the counters are complete.
    const auto drain_start = Clock::now();
    while (queue_.tx_pending() != 0 && !check_failure(queue_)) {
        queue_.reclaim();
        if (queue_.tx_pending() != 0) {
            queue_.wait(kReadyTx, kWaitSlice);
        }
        if (Clock::now() - drain_start > options_.stall_timeout) {
            stop_with(fmt::format("queue {}: {} frame(s) still unsent after {} ms", index_,
                                  queue_.tx_pending(), options_.stall_timeout.count()));
            break;
        }
    }
}

void Worker::run_rx() {
    dma::BufferPool& pool = queue_.pool();
    Packet* burst = burst_.data();
    for (;;) {
        const unsigned n = queue_.rx_burst(burst, options_.burst);
        std::uint64_t test_frames = 0;
        for (unsigned i = 0; i < n; ++i) {
            const Packet& p = burst[i];
            if (checker_.check({p.data(), p.length}) == FrameKind::test) {
                ++test_frames;
            }
            result_.bytes += p.length;
            pool.put(p.buffer);
        }
        result_.packets += n;
        if (test_frames != 0) {
            count_shared(test_frames);
        }
        publish();
        if (n == 0 && !stopping(Clock::now())) {
            queue_.wait(kReadyRx, kWaitSlice);
        }
        if (stopping(Clock::now()) || check_failure(queue_)) {
            break;
        }
    }
    result_.rx = checker_.result();
}

// Sends what `held` keeps back; returns how many went.
unsigned Worker::send_held(Queue& to, Held& held) noexcept {
    Packet* first = held.packets.data() + held.first;
    const unsigned sent = to.tx_burst(first, held.count);
    std::uint64_t bytes = 0;
    for (unsigned i = 0; i < sent; ++i) {
        bytes += first[i].length;
    }
    held.first += sent;
    held.count -= sent;
    if (held.count != 0) {
        ++result_.refused;
    }
    result_.packets += sent;
    result_.bytes += bytes;
    if (sent != 0) {
        count_shared(sent);
    }
    return sent;
}

// Moves one burst from `from` to `to` with the MAC addresses swapped; returns how many moved.
// What `to` has no room for is held back, not dropped, and `from` is not read again until it is
// sent: `from`'s receive ring fills and the device (or the kernel, for TAP) holds or drops the
// frames behind, as a wire would with a slow receiver.
unsigned Worker::forward(Queue& from, Queue& to, Held& held) noexcept {
    if (held.count != 0) {
        const unsigned sent = send_held(to, held);
        if (held.count != 0) {
            return sent;
        }
    }
    const unsigned n = from.rx_burst(held.packets.data(), options_.burst);
    for (unsigned i = 0; i < n; ++i) {
        swap_macs(held.packets[i].data());
    }
    held.first = 0;
    held.count = n;
    return n == 0 ? 0 : send_held(to, held) + 1;  // + 1: frames arrived, even if none left yet
}

void Worker::run_fwd() {
    Queue& a = queue_;
    Queue& b = *peer_;
    for (;;) {
        const unsigned moved = forward(a, b, held_[0]) + forward(b, a, held_[1]);
        publish();
        if (moved == 0 && !stopping(Clock::now())) {
            // Both idle: wait for room where frames are held, else for frames.
            if (held_[0].count != 0 || held_[1].count != 0) {
                (held_[0].count != 0 ? b : a).wait(kReadyTx, kForwardWaitSlice);
            } else if (a.wait(kReadyRx, kForwardWaitSlice) == kReadyNone) {
                b.wait(kReadyRx, kForwardWaitSlice);
            }
        }
        if (stopping(Clock::now()) || check_failure(a) || check_failure(b)) {
            break;
        }
    }
    // Frames still held at the end never left: dropped. Their buffers go back to the pool both
    // queues share, with the sent ones.
    for (Held& held : held_) {
        for (unsigned i = 0; i < held.count; ++i) {
            a.pool().put(held.packets[held.first + i].buffer);
        }
        result_.dropped += held.count;
        held.count = 0;
    }
    a.reclaim();
    b.reclaim();
}

void Worker::run() noexcept {
    const std::uint64_t start = cycles();
    try {
        switch (options_.direction) {
            case Direction::tx:
                run_tx();
                break;
            case Direction::rx:
                run_rx();
                break;
            case Direction::fwd:
                run_fwd();
                break;
        }
    } catch (const std::exception& e) {
        stop_with(fmt::format("queue {}: {}", index_, e.what()));
    } catch (...) {
        stop_with(fmt::format("queue {}: unknown exception", index_));
    }
    result_.cycles = cycles() - start;
    result_.port = queue_.stats();
    if (peer_ != nullptr) {
        result_.port += peer_->stats();
    }
    finished_ = Clock::now();
    publish();
}

double seconds_of(const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
}

double cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return seconds_of(usage.ru_utime) + seconds_of(usage.ru_stime);
}

void add(NetQueueResult& total, const NetQueueResult& r) {
    total.packets += r.packets;
    total.bytes += r.bytes;
    total.refused += r.refused;
    total.dropped += r.dropped;
    total.cycles += r.cycles;
    total.idle_cycles += r.idle_cycles;
    total.rx += r.rx;
    total.port += r.port;
}

// Runs every worker on its own thread and reports progress meanwhile.
void run_workers(Shared& shared, std::vector<std::unique_ptr<Worker>>& workers,
                 const std::function<void(const NetProgress&)>& on_progress,
                 NetPerfReport& report) {
    const NetPerfOptions& options = shared.options;
    std::latch start(1);
    std::mutex mutex;
    std::condition_variable done;
    unsigned finished = 0;
    std::vector<std::thread> threads;
    threads.reserve(workers.size());
    for (auto& worker : workers) {
        threads.emplace_back([&, w = worker.get()] {
            start.wait();
            w->run();
            const std::lock_guard lock(mutex);
            ++finished;
            done.notify_one();
        });
    }
    const double cpu_before = cpu_seconds();
    const auto started = Clock::now();
    if (options.time.count() > 0) {
        shared.deadline = started + options.time;
    }
    start.count_down();

    std::uint64_t last_packets = 0;
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
            NetProgress progress;
            const auto now = Clock::now();
            progress.elapsed = now - started;
            for (const auto& worker : workers) {
                progress.packets += worker->published_packets();
                progress.bytes += worker->published_bytes();
            }
            const double interval = std::chrono::duration<double>(now - last_tick).count();
            if (interval > 0) {
                progress.pps = static_cast<double>(progress.packets - last_packets) / interval;
                progress.gbps =
                    static_cast<double>(progress.bytes - last_bytes) * 8 / interval / 1e9;
            }
            last_packets = progress.packets;
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

    auto ended = started;
    for (const auto& worker : workers) {
        const NetQueueResult& r = worker->result();
        report.queues.push_back(r);
        add(report.total, r);
        ended = std::max(ended, worker->finished());
        for (const auto& p : worker->problems()) {
            if (report.problems.size() < options.max_reported) {
                report.problems.push_back(fmt::format("queue {}: {}", r.queue, p));
            }
        }
        if (!worker->fatal().empty()) {
            report.fatal.push_back(worker->fatal());
        }
    }
    report.elapsed = ended - started;
    const double wall = std::chrono::duration<double>(report.elapsed).count();
    report.cpu_percent = wall > 0 ? (cpu_after - cpu_before) / wall * 100 : 0;
}

}  // namespace

NetPerfReport run_net_perf(NetPort& port, const NetPerfOptions& options, NetPort* peer) {
    const PortInfo info = port.info();
    const std::string name = port.name();
    validate(options, info, name);
    if ((options.direction == Direction::fwd) != (peer != nullptr)) {
        throw Error::invalid("perf net", name,
                             options.direction == Direction::fwd
                                 ? "forwarding needs a peer port (--fwd PEER)"
                                 : "a peer port is only for forwarding");
    }
    if (peer != nullptr) {
        validate(options, peer->info(), peer->name());
    }
    CycleClock::calibrate();  // before timing starts: it takes about 20 ms

    NetPerfReport report;
    report.device = name;
    report.peer = peer != nullptr ? peer->name() : "";
    report.info = info;
    report.options = options;
    report.options.on_progress = nullptr;
    report.options.cancel = nullptr;
    report.cycle_counter = kHaveCycleCounter;

    TestFlow flow;
    flow.source_mac = info.mac;
    flow.destination_mac = options.destination_mac;
    Shared shared(options, flow);
    shared.options.on_progress = nullptr;

    // Queues are set up here, on one thread: open_queue and DmaPool are not for concurrent use.
    // fwd: queue q of the peer takes its buffers from queue q of the port (the peer must be
    // closed before the port).
    std::vector<std::unique_ptr<Worker>> workers;
    for (unsigned i = 0; i < options.queues; ++i) {
        Queue& queue = port.open_queue(i, options.depth, options.mode);
        Queue* other = nullptr;
        if (peer != nullptr) {
            other = &peer->open_queue(i, options.depth, options.mode, &queue.pool());
        }
        workers.push_back(std::make_unique<Worker>(shared, i, queue, other));
    }
    run_workers(shared, workers, options.on_progress, report);
    report.cancelled = options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed);
    return report;
}

}  // namespace ring3::net
