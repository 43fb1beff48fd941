// `ring3 perf blk DEVICE ...`: a fio-like load over ring3's block driver (include/ring3/block/
// perf.hpp), and `ring3 perf pattern FILE ...`, which writes the --verify pattern into a file
// (a disk image to start from, and the known answer tests/guest/checks/block_pattern.py checks
// itself against).
#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ring3/block/open.hpp"
#include "ring3/block/pattern.hpp"
#include "ring3/block/perf.hpp"
#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/timeline.hpp"
#include "ring3/core/unique_fd.hpp"

namespace ring3::tool {
namespace {

// Set by SIGINT/SIGTERM while a run is under way: the run stops issuing, drains and reports.
// A signal handler can reach nothing else, hence the one global.
std::atomic<bool> interrupted{false};

extern "C" void on_stop_signal(int) {
    interrupted.store(true, std::memory_order_relaxed);
}

// Routes SIGINT and SIGTERM to `interrupted` for its lifetime.
class StopSignals {
  public:
    StopSignals() {
        interrupted.store(false);
        struct sigaction action {};
        action.sa_handler = &on_stop_signal;
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGINT, &action, &old_int_);
        ::sigaction(SIGTERM, &action, &old_term_);
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;
    ~StopSignals() {
        ::sigaction(SIGINT, &old_int_, nullptr);
        ::sigaction(SIGTERM, &old_term_, nullptr);
    }

  private:
    struct sigaction old_int_ {};
    struct sigaction old_term_ {};
};

struct BlkArguments {
    std::string device;
    std::string rw = "randread";
    std::string bs = "4k";
    unsigned qd = 32;
    unsigned queues = 1;
    std::string time;
    std::optional<std::uint64_t> ios;
    std::string mode = "poll";
    std::uint32_t nsid = 1;
    bool no_sgl = false;
    bool verify = false;
    std::optional<std::uint64_t> seed;
    std::string size = "all";
    std::string offset = "0";
    unsigned rwmixread = 50;
    bool json = false;
    bool quiet = false;
    bool verbose = false;
    unsigned retries = 0;
    std::optional<unsigned> io_timeout_ms;
    bool reconnect = false;
};

std::uint64_t time_seed() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

// Everything that can be checked without the device, so a typo fails before the device is
// touched.
block::PerfOptions options_from(const BlkArguments& a) {
    block::PerfOptions o;
    o.workload = block::parse_workload(a.rw);
    const std::uint64_t bs = block::parse_size(a.bs, "--bs");
    if (bs == 0 || bs > std::numeric_limits<std::uint32_t>::max()) {
        throw Error::invalid("perf blk", "--bs " + a.bs, "must be 1 byte to 4 GiB - 1");
    }
    o.request_bytes = static_cast<std::uint32_t>(bs);
    o.queue_depth = a.qd;
    o.queues = a.queues;
    const auto mode = irq::parse_wait_mode(a.mode);
    if (!mode) {
        throw Error::invalid("perf blk", "--mode " + a.mode, "one of poll, interrupt, adaptive");
    }
    o.mode = *mode;
    if (a.size != "all") {
        o.size = block::parse_size(a.size, "--size");
        if (o.size == 0) {
            throw Error::invalid("perf blk", "--size " + a.size,
                                 "must be positive (or \"all\": up to the end of the device)");
        }
    }
    o.offset = block::parse_size(a.offset, "--offset");
    o.read_percent = a.rwmixread;
    o.verify = a.verify;
    o.seed = a.seed.value_or(time_seed());
    o.retries = a.retries;
    if (!a.time.empty()) {
        o.time = block::parse_duration(a.time, "--time");
        if (o.time.count() == 0) {
            throw Error::invalid("perf blk", "--time " + a.time, "must be positive");
        }
    }
    if (a.ios) {
        if (*a.ios == 0) {
            throw Error::invalid("perf blk", "--ios 0", "must be at least 1");
        }
        o.ios = *a.ios;
    }
    // With --verify a sequential workload covers the range once, each block written (or read)
    // exactly once; --time and --ios may end it earlier.
    o.single_pass = a.verify && !block::is_random(o.workload);
    if (o.time.count() == 0 && o.ios == 0 && !o.single_pass) {
        o.time = std::chrono::seconds(10);
    }
    return o;
}

// Chunks of the DMA arena: large enough for one request's buffer, otherwise small, so the
// memory mapped for the device follows what the run uses (hugepage arenas round up to 2 MiB).
std::size_t dma_chunk_for(std::uint32_t request_bytes) {
    constexpr std::size_t kSmallest = 256 * 1024;
    return std::max(kSmallest, std::bit_ceil(std::size_t{request_bytes}));
}

std::string startup_text(const Timeline& timeline,
                         const std::optional<std::chrono::steady_clock::time_point>& first_io) {
    std::string text = "start-up:";
    const auto ms = [](std::chrono::nanoseconds d) {
        return std::chrono::duration<double, std::milli>(d).count();
    };
    for (const auto& step : timeline.steps()) {
        text += fmt::format(" {} {:.1f} ms,", step.name, ms(step.duration));
    }
    const auto end = timeline.start() + timeline.total();
    if (first_io) {
        text += fmt::format(" first I/O {:.1f} ms; total {:.1f} ms to the first completion",
                            ms(*first_io - end), ms(*first_io - timeline.start()));
    } else {
        text += " no I/O completed";
    }
    return text;
}

void run_blk(const BlkArguments& a) {
    block::PerfOptions options = options_from(a);
    Timeline timeline;
    block::OpenBlockOptions open;
    open.namespace_id = a.nsid;
    open.queues = a.queues;
    open.mode = options.mode;
    open.use_sgl = !a.no_sgl;
    open.dma_chunk_size = dma_chunk_for(options.request_bytes);
    open.timeline = &timeline;
    if (a.io_timeout_ms) {
        if (*a.io_timeout_ms == 0) {
            throw Error::invalid("perf blk", "--io-timeout 0", "must be at least 1 ms");
        }
        open.io_timeout = std::chrono::milliseconds(*a.io_timeout_ms);
    }
    open.device.vfio_user_reconnect = a.reconnect;
    options.timeline = &timeline;
    auto device = block::open_block_device(a.device, open);

    bool status_shown = false;
    if (!a.quiet && ::isatty(STDERR_FILENO) == 1) {
        options.on_progress = [&status_shown](const block::Progress& progress) {
            fmt::print(stderr, "\r{}\x1b[K", block::format_progress(progress));
            std::fflush(stderr);
            status_shown = true;
        };
    }
    options.cancel = &interrupted;
    block::PerfReport report;
    {
        const StopSignals signals;
        report = block::run_perf(*device, options);
    }
    if (status_shown) {
        fmt::print(stderr, "\r\x1b[K");
    }

    if (a.verbose) {
        fmt::print(stderr, "{}\n", startup_text(timeline, report.first_completion));
    }
    if (a.json) {
        fmt::print("{}\n", block::format_report_json(report));
    } else if (a.quiet) {
        for (const auto& m : report.first_mismatches) {
            fmt::print(stderr, "mismatch: {}\n", m);
        }
        for (const auto& e : report.first_errors) {
            fmt::print(stderr, "error: {}\n", e);
        }
        for (const auto& f : report.fatal) {
            fmt::print(stderr, "stopped: {}\n", f);
        }
        if (options.verify) {
            fmt::print("seed: {}\n", options.seed);
        }
        fmt::print("{}\n", block::figure_line(report));
    } else {
        fmt::print("{}", block::format_report(report));
    }
    std::fflush(stdout);
    if (report.failed()) {
        fmt::print(stderr,
                   "ring3: perf blk {}: failed: {} mismatches, {} I/O errors, {} queue(s) "
                   "stopped\n",
                   report.device, report.mismatches, report.errors(), report.fatal.size());
        throw CLI::RuntimeError(1);
    }
}

struct PatternArguments {
    std::string file;
    std::uint32_t block_size = 512;
    std::uint64_t seed = 0;
    std::uint64_t first_lba = 0;
    std::uint64_t count = 1;
    std::string offset = "0";
};

// Writes blocks first_lba .. first_lba + count - 1 of a disk image whose LBA 0 is at `offset`.
void write_pattern(const PatternArguments& a) {
    if (a.block_size < 32 || a.block_size % 8 != 0) {
        throw Error::invalid("perf pattern", fmt::format("--block-size {}", a.block_size),
                             "must be a multiple of 8, at least 32");
    }
    const std::uint64_t offset = block::parse_size(a.offset, "--offset");
    auto fd = UniqueFd::open(a.file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    std::vector<std::byte> block(a.block_size);
    for (std::uint64_t lba = a.first_lba; lba < a.first_lba + a.count; ++lba) {
        block::fill_pattern(block, lba, a.seed);
        const auto at = static_cast<off_t>(offset + lba * a.block_size);
        if (::pwrite(fd.get(), block.data(), block.size(), at) !=
            static_cast<ssize_t>(block.size())) {
            throw Error::from_errno(fmt::format("write LBA {} to", lba), a.file);
        }
    }
}

}  // namespace

void add_perf_command(CLI::App& app) {
    auto* perf = app.add_subcommand("perf", "Benchmarks through ring3's drivers");
    perf->require_subcommand(1);
    add_perf_net_command(*perf);

    auto args = std::make_shared<BlkArguments>();
    auto* blk = perf->add_subcommand(
        "blk",
        "fio-like block I/O: IOPS, bandwidth, latency percentiles, CPU use; --verify "
        "writes and checks a self-describing pattern");
    blk->add_option("device", args->device,
                    "vfio:BDF, uio:BDF, or a BDF on vfio-pci/uio_pci_generic")
        ->required();
    blk->add_option("--rw", args->rw, "randread, randwrite, read, write, rw, randrw")
        ->capture_default_str();
    blk->add_option("--bs", args->bs, "request size: bytes or k/m/g; a multiple of the block size")
        ->capture_default_str();
    blk->add_option("--qd", args->qd, "requests in flight per queue")->capture_default_str();
    blk->add_option("--queues", args->queues, "I/O queues, one thread each")->capture_default_str();
    blk->add_option("--time", args->time,
                    "run time: 10s, 500ms, 2m (default 10s unless --ios, or a sequential "
                    "--verify pass)");
    blk->add_option("--ios", args->ios, "stop after this many requests in all");
    blk->add_option("--mode", args->mode, "poll, interrupt or adaptive")->capture_default_str();
    blk->add_option("--nsid", args->nsid, "NVMe namespace")->capture_default_str();
    blk->add_flag("--no-sgl", args->no_sgl,
                  "NVMe: describe data with PRPs even when the controller takes SGLs");
    blk->add_flag("--verify", args->verify,
                  "writes carry a pattern of (LBA, seed), reads check it; written blocks are read "
                  "back; a sequential workload makes one pass over the range");
    blk->add_option("--seed", args->seed, "pattern and offset seed (default: from the clock)");
    blk->add_option("--size", args->size, "bytes of the range, or all (to the end of the device)")
        ->capture_default_str();
    blk->add_option("--offset", args->offset, "where the range starts, in bytes")
        ->capture_default_str();
    blk->add_option("--rwmixread", args->rwmixread, "rw and randrw: percentage of reads")
        ->capture_default_str();
    blk->add_option("--retries", args->retries,
                    "submit a failed request again up to N times (e.g. across a device reset)")
        ->capture_default_str();
    blk->add_option("--io-timeout", args->io_timeout_ms,
                    "ms a request may take before the driver recovers the device (NVMe: 30000)");
    blk->add_flag("--reconnect", args->reconnect,
                  "vfio-user: re-attach to a server restarted at the same socket and go on");
    blk->add_flag("--json", args->json, "print one JSON object instead of the report");
    blk->add_flag("--quiet", args->quiet, "no status line and no report: only the figure line");
    blk->add_flag("--verbose", args->verbose,
                  "print the start-up steps and their times (open, DMA arena, controller "
                  "enable, identify, queues, first I/O) to stderr");
    blk->callback([args] { run_blk(*args); });

    auto pattern_args = std::make_shared<PatternArguments>();
    auto* pattern = perf->add_subcommand(
        "pattern", "Write the --verify pattern of some blocks into a file (a disk image)");
    pattern->add_option("file", pattern_args->file, "the file (created when missing)")->required();
    pattern->add_option("--block-size", pattern_args->block_size, "bytes per block")
        ->capture_default_str();
    pattern->add_option("--seed", pattern_args->seed, "the seed")->required();
    pattern->add_option("--first-lba", pattern_args->first_lba, "first block to write")
        ->capture_default_str();
    pattern->add_option("--count", pattern_args->count, "blocks to write")->capture_default_str();
    pattern->add_option("--offset", pattern_args->offset, "byte offset of LBA 0 in the file")
        ->capture_default_str();
    pattern->callback([pattern_args] { write_pattern(*pattern_args); });
}

}  // namespace ring3::tool
