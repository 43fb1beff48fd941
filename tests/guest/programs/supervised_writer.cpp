// ring3_guest_writer: the supervised NVMe writer of the ring3d-supervise guest case. It runs as
// a [device.driver] under ring3d, claims its device over the connection it inherited, and
// writes its region in passes, reporting on stdout every block range it considers acknowledged
// (docs: "acknowledged" in src/broker/PROTOCOL.md, "Supervised drivers").
//
//   ring3_guest_writer DEVICE --seed S [--region-mib M] [--bs B] [--qd Q] [--flush-every N]
//                      [--passes P] [--restarted-passes R] [--mode poll|interrupt|adaptive]
//                      [--probe-sandbox]
//
// Generation G is $RING3D_RESTARTS (0 for the first start): it writes LBAs
// [G*M MiB, (G+1)*M MiB) with the block pattern (include/ring3/block/pattern.hpp), pass k under
// seed S + 1000*G + k. Output lines (one per event, flushed at once):
//   writer gen=G pid=P start realtime_ns=T
//   opened gen=G realtime_ns=T                 once the device is claimed and initialised
//   sandbox: <what>: denied (<errno text>)    | sandbox: <what>: ALLOWED (then exit 3)
//   first-io gen=G realtime_ns=T               after the first completed write
//   ack gen=G pass=K seed=S first=L count=N    after a completed flush: LBAs L..L+N-1 hold seed S
//   writer gen=G done                          after P passes (P = 0: until killed; R passes,
//                                              default 1, once restarted)
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "ring3/block/open.hpp"
#include "ring3/block/pattern.hpp"
#include "ring3/core/error.hpp"

namespace {

using namespace ring3;

struct Options {
    std::string device;
    std::uint64_t seed = 0;
    std::uint64_t region_mib = 16;
    std::uint32_t bs = 4096;
    unsigned qd = 8;
    unsigned flush_every = 64;
    unsigned passes = 0;
    unsigned restarted_passes = 1;
    bool probe_sandbox = false;
    irq::WaitMode mode = irq::WaitMode::poll;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "ring3_guest_writer: %s\nusage: ring3_guest_writer DEVICE --seed S "
                 "[--region-mib M] [--bs B] [--qd Q] [--flush-every N] [--passes P] "
                 "[--restarted-passes R] [--mode poll|interrupt|adaptive] [--probe-sandbox]\n",
                 why);
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::uint64_t {
            if (i + 1 >= argc) {
                usage(("missing value after " + a).c_str());
            }
            return std::strtoull(argv[++i], nullptr, 0);
        };
        if (a == "--seed") {
            o.seed = value();
        } else if (a == "--region-mib") {
            o.region_mib = value();
        } else if (a == "--bs") {
            o.bs = static_cast<std::uint32_t>(value());
        } else if (a == "--qd") {
            o.qd = static_cast<unsigned>(value());
        } else if (a == "--flush-every") {
            o.flush_every = static_cast<unsigned>(value());
        } else if (a == "--passes") {
            o.passes = static_cast<unsigned>(value());
        } else if (a == "--restarted-passes") {
            o.restarted_passes = static_cast<unsigned>(value());
        } else if (a == "--mode") {
            if (i + 1 >= argc || !irq::parse_wait_mode(argv[i + 1])) {
                usage("--mode takes poll, interrupt or adaptive");
            }
            o.mode = *irq::parse_wait_mode(argv[++i]);
        } else if (a == "--probe-sandbox") {
            o.probe_sandbox = true;
        } else if (a[0] != '-' && o.device.empty()) {
            o.device = a;
        } else {
            usage(("unknown argument " + a).c_str());
        }
    }
    if (o.device.empty() || o.bs == 0 || o.qd == 0 || o.flush_every == 0) {
        usage("DEVICE, --bs, --qd and --flush-every are needed");
    }
    return o;
}

// One refusal the sandbox must produce; prints it and returns whether it was refused.
bool refused(const char* what, bool failed, int error) {
    if (failed) {
        std::printf("sandbox: %s: denied (%s)\n", what, std::strerror(error));
        return true;
    }
    std::printf("sandbox: %s: ALLOWED\n", what);
    return false;
}

bool probe_sandbox() {
    bool all = true;
    errno = 0;
    const int shadow = ::open("/etc/shadow", O_RDONLY | O_CLOEXEC);
    const int shadow_error = errno;
    all &= refused("open /etc/shadow", shadow < 0, shadow_error);
    errno = 0;
    const int inet = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int inet_error = errno;
    all &= refused("socket(AF_INET)", inet < 0, inet_error);
    errno = 0;
    const long traced = ::ptrace(PTRACE_ATTACH, ::getppid(), nullptr, nullptr);
    const int ptrace_error = errno;
    all &= refused("ptrace(PTRACE_ATTACH, ring3d)", traced < 0, ptrace_error);
    struct stat st {};
    errno = 0;
    const bool no_sysfs = ::stat("/sys/bus/pci/devices", &st) != 0;
    const int sysfs_error = errno;
    all &= refused("stat /sys/bus/pci/devices", no_sysfs, sysfs_error);
    errno = 0;
    const int group = ::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    const int group_error = errno;
    all &= refused("open /dev/vfio/vfio", group < 0, group_error);
    std::fflush(stdout);
    return all;
}

std::uint64_t realtime_ns() {
    timespec t{};
    ::clock_gettime(CLOCK_REALTIME, &t);
    return static_cast<std::uint64_t>(t.tv_sec) * 1000000000u +
           static_cast<std::uint64_t>(t.tv_nsec);
}

struct Slot {
    std::byte* data = nullptr;
    std::uint64_t lba = 0;
    bool busy = false;
    bool ok = true;
    std::vector<std::uint8_t>* completed = nullptr;
    std::uint64_t chunk = 0;
};

void on_write(void* context, const block::Status& status) {
    auto* slot = static_cast<Slot*>(context);
    slot->ok = status.ok();
    slot->busy = false;
    (*slot->completed)[slot->chunk] = 1;
}

struct FlushState {
    bool busy = false;
    bool ok = true;
};

void on_flush(void* context, const block::Status& status) {
    auto* f = static_cast<FlushState*>(context);
    f->ok = status.ok();
    f->busy = false;
}

int run(const Options& o) {
    const char* restarts = std::getenv("RING3D_RESTARTS");
    const unsigned gen = restarts != nullptr ? static_cast<unsigned>(std::atoi(restarts)) : 0;
    std::printf("writer gen=%u pid=%d start realtime_ns=%llu\n", gen, static_cast<int>(::getpid()),
                static_cast<unsigned long long>(realtime_ns()));
    std::fflush(stdout);
    if (o.probe_sandbox && !probe_sandbox()) {
        return 3;
    }
    Timeline timeline;
    block::OpenBlockOptions options;
    options.timeline = &timeline;
    options.mode = o.mode;
    auto dev = block::open_block_device(o.device, options);
    std::string steps;
    for (const Timeline::Step& step : timeline.steps()) {
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(step.duration);
        steps += " " + step.name + "=" + std::to_string(static_cast<double>(us.count()) / 1000.0);
    }
    std::printf("opened gen=%u realtime_ns=%llu steps(ms):%s\n", gen,
                static_cast<unsigned long long>(realtime_ns()), steps.c_str());
    const block::Geometry g = dev->geometry();
    if (o.bs % g.block_size != 0) {
        std::fprintf(stderr, "writer: --bs %u is not a multiple of the block size %u\n", o.bs,
                     g.block_size);
        return 2;
    }
    const std::uint64_t per_io = o.bs / g.block_size;
    const std::uint64_t chunks = (o.region_mib << 20) / o.bs;
    const std::uint64_t first_lba = gen * ((o.region_mib << 20) / g.block_size);
    if (first_lba + chunks * per_io > g.block_count) {
        std::fprintf(stderr, "writer: generation %u's region ends beyond the namespace\n", gen);
        return 2;
    }
    block::Queue& q = dev->open_queue(0, o.qd + 1, o.mode);  // the writes and a flush
    std::vector<std::uint8_t> completed(chunks, 0);
    std::vector<Slot> slots(o.qd);
    std::vector<dma::DmaBuffer> buffers;
    for (Slot& s : slots) {
        buffers.push_back(dev->dma_pool().allocate(o.bs, 4096));
        s.data = buffers.back().data();
        s.completed = &completed;
    }
    FlushState flush;
    bool first_io = false;
    const unsigned passes = gen == 0 ? o.passes : o.restarted_passes;
    for (unsigned pass = 0; passes == 0 || pass < passes; ++pass) {
        const std::uint64_t seed = o.seed + 1000u * gen + pass;
        std::fill(completed.begin(), completed.end(), 0);
        std::uint64_t next = 0;   // next chunk to submit
        std::uint64_t acked = 0;  // chunks [0, acked) acknowledged in this pass
        std::uint64_t since_flush = 0;
        std::uint64_t flushing_to = 0;  // the prefix the flush in flight covers
        while (acked < chunks) {
            for (Slot& s : slots) {
                if (s.busy || next >= chunks) {
                    continue;
                }
                if (!s.ok) {
                    std::fprintf(stderr, "writer: a write failed\n");
                    return 1;
                }
                s.chunk = next;
                s.lba = first_lba + next * per_io;
                for (std::uint64_t b = 0; b < per_io; ++b) {
                    block::fill_pattern(
                        std::span<std::byte>(s.data + b * g.block_size, g.block_size), s.lba + b,
                        seed);
                }
                block::Request r;
                r.op = block::Op::write;
                r.lba = s.lba;
                r.blocks = static_cast<std::uint32_t>(per_io);
                r.data = s.data;
                r.callback = on_write;
                r.context = &s;
                if (q.enqueue(r) != 0) {
                    std::fprintf(stderr, "writer: enqueue failed\n");
                    return 1;
                }
                s.busy = true;
                ++next;
                ++since_flush;
            }
            q.flush();
            q.wait(std::chrono::seconds(5));
            if (!first_io && completed[0] != 0) {
                first_io = true;
                std::printf("first-io gen=%u realtime_ns=%llu\n", gen,
                            static_cast<unsigned long long>(realtime_ns()));
                std::fflush(stdout);
            }
            if (flush.busy) {
                continue;
            }
            if (!flush.ok) {
                std::fprintf(stderr, "writer: a flush failed\n");
                return 1;
            }
            if (flushing_to > acked) {  // the flush in flight completed
                std::printf("ack gen=%u pass=%u seed=%llu first=%llu count=%llu\n", gen, pass,
                            static_cast<unsigned long long>(seed),
                            static_cast<unsigned long long>(first_lba + acked * per_io),
                            static_cast<unsigned long long>((flushing_to - acked) * per_io));
                std::fflush(stdout);
                acked = flushing_to;
            }
            // The completed prefix, flushed when enough is new or the pass is all submitted.
            std::uint64_t prefix = acked;
            while (prefix < chunks && completed[prefix] != 0) {
                ++prefix;
            }
            if (prefix > acked && (since_flush >= o.flush_every || next == chunks)) {
                block::Request f;
                f.op = block::Op::flush;
                f.callback = on_flush;
                f.context = &flush;
                if (q.submit(f) != 0) {
                    std::fprintf(stderr, "writer: flush enqueue failed\n");
                    return 1;
                }
                flush.busy = true;
                flushing_to = prefix;
                since_flush = 0;
            }
        }
    }
    std::printf("writer gen=%u done\n", gen);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "writer: %s\n", e.what());
        return 1;
    }
}
