// The driver's own CPU cost per I/O, natively (bench/emu-cost): ring3's NVMe driver through the
// block face against `ring3 emu nvme` (vfio-user), one queue, poll mode, 4 KiB random reads at a
// fixed depth.
//
// A poll-mode driver keeps its core busy whether or not the device has anything for it, so the
// process's CPU time says how fast the device is, not what the driver costs. As SPDK's reactors
// do, this splits the loop's cycles into busy (enqueue and flush a burst; a poll that reaped
// completions, callbacks included) and idle (a poll that found nothing); busy cycles over I/Os
// is the driver's cost per I/O, independent of how quickly the emulated device answers.
//
//   ring3_emu_cost vfio-user:/path.sock [--qd 32] [--seconds 10]
// prints the figures and, last, `nvme_cycles_per_io: X cycles`.
//
//   ring3_emu_cost --line-transfer
// measures the floor under those figures: one cache line handed back and forth between the first
// two CPUs of the process's affinity mask (pure spinning, no pause), and prints
// `cache_line_transfer_cycles: X`, the cycles of one hand-over. Every line the driver shares with
// the device process (doorbell, submission and completion entries, descriptors, frames) costs
// about that much each time the other side touched it last.
#include <fmt/core.h>
#include <x86intrin.h>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ring3/block/block_device.hpp"
#include "ring3/block/open.hpp"
#include "ring3/core/error.hpp"

namespace {

using namespace ring3;

struct Run {
    std::uint64_t ios = 0;
    std::uint64_t errors = 0;
    std::uint64_t busy_cycles = 0;
    std::uint64_t idle_cycles = 0;
    std::uint64_t productive_polls = 0;
    double seconds = 0;
    double ghz = 0;  // the cycle counter's rate, measured over the run
};

struct Slot;

// Free slots on a stack: a refill costs what it submits, not a scan of the whole depth.
struct Slots {
    std::vector<Slot*> free;
    Run* run = nullptr;
};

struct Slot {
    block::Request request;
    Slots* owner = nullptr;
};

void on_done(void* context, const block::Status& status) {
    auto* slot = static_cast<Slot*>(context);
    slot->owner->free.push_back(slot);  // capacity reserved: no allocation
    if (status.ok()) {
        ++slot->owner->run->ios;
    } else {
        ++slot->owner->run->errors;
    }
}

// xorshift64*: cheap, so the generator does not weigh on the busy cycles.
std::uint64_t next_random(std::uint64_t& state) {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
}

Run measure(block::BlockDevice& device, unsigned depth, std::chrono::seconds length) {
    const block::Geometry geometry = device.geometry();
    const std::uint32_t blocks = 4096 / geometry.block_size;
    const std::uint64_t slots = geometry.block_count / blocks;
    block::Queue& queue = device.open_queue(0, depth, irq::WaitMode::poll);
    dma::DmaBuffer buffers = device.dma_pool().allocate(std::size_t{4096} * depth, 4096);
    std::vector<Slot> slot(depth);
    Run run;
    Slots slots_state;
    slots_state.run = &run;
    slots_state.free.reserve(depth);
    for (unsigned i = 0; i < depth; ++i) {
        slot[i].owner = &slots_state;
        slot[i].request = {block::Op::read, 0,       blocks, buffers.data() + std::size_t{4096} * i,
                           &on_done,        &slot[i]};
        slots_state.free.push_back(&slot[i]);
    }
    std::uint64_t random = 0x9E3779B97F4A7C15ULL;
    const std::uint64_t start = __rdtsc();
    const auto began = std::chrono::steady_clock::now();
    const auto deadline = began + length;
    // Two counter reads per turn: a turn starts where the last one's poll ended.
    std::uint64_t t0 = start;
    for (std::uint64_t loops = 0;; ++loops) {
        // Refill every free slot, then one flush: busy when it submitted anything.
        const bool refill = !slots_state.free.empty();
        while (!slots_state.free.empty()) {
            Slot* s = slots_state.free.back();
            s->request.lba = (next_random(random) % slots) * blocks;
            if (queue.enqueue(s->request) != 0) {
                break;
            }
            slots_state.free.pop_back();
        }
        if (refill) {
            queue.flush();
        }
        const std::uint64_t t1 = __rdtsc();
        const unsigned reaped = queue.poll();
        const std::uint64_t t2 = __rdtsc();
        (refill ? run.busy_cycles : run.idle_cycles) += t1 - t0;
        if (reaped != 0) {
            run.busy_cycles += t2 - t1;
            ++run.productive_polls;
        } else {
            run.idle_cycles += t2 - t1;
        }
        t0 = t2;
        if ((loops & 1023) == 0 && std::chrono::steady_clock::now() >= deadline) {
            break;
        }
    }
    const std::uint64_t total = __rdtsc() - start;
    run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    run.ghz = static_cast<double>(total) / run.seconds / 1e9;
    while (queue.outstanding() != 0) {
        queue.wait(std::chrono::milliseconds(10));
    }
    return run;
}

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        throw Error::from_errno(fmt::format("sched_setaffinity to CPU {}", cpu),
                                "for a cache line's hand-over");
    }
}

// Two threads on two CPUs take turns incrementing one counter in its own cache line: each turn
// is one transfer of the line (the waiter's load misses until the other's store invalidated
// its copy). Returns the median over `trials` of cycles per transfer.
double line_transfer_cycles(unsigned rounds, unsigned trials) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
        throw Error::from_errno("sched_getaffinity", "for a cache line's hand-over");
    }
    std::vector<int> cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu) {
        if (CPU_ISSET(cpu, &allowed)) {
            cpus.push_back(cpu);
        }
    }
    if (cpus.size() < 2) {
        throw Error::invalid("measure", "a cache line's hand-over",
                             "the process may run on one CPU only (two are needed)");
    }
    struct alignas(64) Line {
        std::atomic<std::uint64_t> turn{0};
    };
    std::vector<double> per_transfer;
    for (unsigned trial = 0; trial < trials; ++trial) {
        Line line;
        const std::uint64_t last = 2 * std::uint64_t{rounds};
        std::thread other([&] {
            pin_to(cpus[1]);
            for (std::uint64_t mine = 1; mine < last; mine += 2) {
                while (line.turn.load(std::memory_order_acquire) != mine) {
                }
                line.turn.store(mine + 1, std::memory_order_release);
            }
        });
        pin_to(cpus[0]);
        const std::uint64_t start = __rdtsc();
        for (std::uint64_t mine = 0; mine < last; mine += 2) {
            while (line.turn.load(std::memory_order_acquire) != mine) {
            }
            line.turn.store(mine + 1, std::memory_order_release);
        }
        while (line.turn.load(std::memory_order_acquire) != last) {
        }
        const std::uint64_t cycles = __rdtsc() - start;
        other.join();
        per_transfer.push_back(static_cast<double>(cycles) / static_cast<double>(last));
    }
    std::sort(per_transfer.begin(), per_transfer.end());
    return per_transfer[per_transfer.size() / 2];
}

int usage() {
    fmt::print(stderr,
               "usage: ring3_emu_cost vfio-user:/path.sock [--qd N] [--seconds S]\n"
               "       ring3_emu_cost --line-transfer\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        return usage();
    }
    std::string spec = argv[1];
    if (spec == "--line-transfer") {
        if (argc != 2) {
            return usage();
        }
        try {
            const double cycles = line_transfer_cycles(1000000, 5);
            fmt::print("cache_line_transfer_cycles: {:.0f} cycles\n", cycles);
            return 0;
        } catch (const std::exception& e) {
            fmt::print(stderr, "ring3_emu_cost: {}\n", e.what());
            return 1;
        }
    }
    unsigned depth = 32;
    long seconds = 10;
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string_view option = argv[i];
        char* end = nullptr;
        const long value = std::strtol(argv[i + 1], &end, 10);
        if (*end != '\0' || value <= 0 || value > 100000) {
            fmt::print(stderr, "ring3_emu_cost: {} '{}' is not a positive number\n", option,
                       argv[i + 1]);
            return 2;
        }
        if (option == "--qd") {
            depth = static_cast<unsigned>(value);
        } else if (option == "--seconds") {
            seconds = value;
        } else {
            return usage();
        }
    }
    try {
        block::OpenBlockOptions options;
        options.mode = irq::WaitMode::poll;
        auto device = block::open_block_device(spec, options);
        const Run run = measure(*device, depth, std::chrono::seconds(seconds));
        const double ghz = run.ghz;
        const double per_io =
            run.ios == 0 ? 0 : static_cast<double>(run.busy_cycles) / static_cast<double>(run.ios);
        fmt::print("device: {}\n", device->name());
        fmt::print(
            "reads: {} in {:.2f} s, {} errors: {:.0f} IOPS (4 KiB random, qd {}, 1 queue, "
            "poll)\n",
            run.ios, run.seconds, run.errors, static_cast<double>(run.ios) / run.seconds, depth);
        fmt::print(
            "cycles: {:.2f} GHz; busy {} ({:.1f}%), idle {}; {:.1f} completions per "
            "productive poll\n",
            ghz, run.busy_cycles,
            100.0 * static_cast<double>(run.busy_cycles) /
                static_cast<double>(run.busy_cycles + run.idle_cycles),
            run.idle_cycles,
            run.productive_polls == 0
                ? 0
                : static_cast<double>(run.ios) / static_cast<double>(run.productive_polls));
        fmt::print("nvme_iops: {:.0f} IOPS\n", static_cast<double>(run.ios) / run.seconds);
        fmt::print("nvme_cycles_per_io: {:.0f} cycles\n", per_io);
        return run.errors == 0 && run.ios != 0 ? 0 : 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "ring3_emu_cost: {}\n", e.what());
        return 1;
    }
}
