// `ring3 perf net DEVICE --tx | --rx | --fwd PEER ...`: packets per second, Gbit/s and CPU cycles
// per packet through a NetPort (include/ring3/net/perf.hpp): a TAP device now, ring3's NIC
// drivers as they come.
#include <fmt/core.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "commands.hpp"
#include "ring3/block/perf.hpp"
#include "ring3/core/error.hpp"
#include "ring3/device/vfio.hpp"
#include "ring3/net/open.hpp"
#include "ring3/net/perf.hpp"

namespace ring3::tool {
namespace {

// Set by SIGINT/SIGTERM while a run is under way: the run stops and reports. A signal handler
// can reach nothing else, hence the one global. (cmd_perf.cpp has the same for perf blk; the two
// can share one helper once neither file is being reworked.)
std::atomic<bool> net_interrupted{false};

extern "C" void on_net_stop_signal(int) {
    net_interrupted.store(true, std::memory_order_relaxed);
}

class NetStopSignals {
  public:
    NetStopSignals() {
        net_interrupted.store(false);
        struct sigaction action {};
        action.sa_handler = &on_net_stop_signal;
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGINT, &action, &old_int_);
        ::sigaction(SIGTERM, &action, &old_term_);
    }
    NetStopSignals(const NetStopSignals&) = delete;
    NetStopSignals& operator=(const NetStopSignals&) = delete;
    ~NetStopSignals() {
        ::sigaction(SIGINT, &old_int_, nullptr);
        ::sigaction(SIGTERM, &old_term_, nullptr);
    }

  private:
    struct sigaction old_int_ {};
    struct sigaction old_term_ {};
};

struct NetArguments {
    std::string device;
    bool tx = false;
    bool rx = false;
    std::string peer;  // --fwd
    std::string size = "64";
    std::string time;
    std::optional<std::uint64_t> count;
    unsigned queues = 1;
    std::string mode = "poll";
    unsigned burst = 32;
    unsigned depth = 0;
    std::string dst_mac = "02:00:00:00:00:02";
    std::uint64_t seed = 1;
    bool json = false;
    bool quiet = false;
};

// Everything that can be checked without the device, so a typo fails before it is touched.
net::NetPerfOptions options_from(const NetArguments& a) {
    net::NetPerfOptions o;
    const int directions = (a.tx ? 1 : 0) + (a.rx ? 1 : 0) + (a.peer.empty() ? 0 : 1);
    if (directions != 1) {
        throw Error::invalid("perf net", a.device, "give exactly one of --tx, --rx and --fwd PEER");
    }
    o.direction = a.tx ? net::Direction::tx : a.rx ? net::Direction::rx : net::Direction::fwd;
    o.sizes = net::parse_size_range(a.size, "--size");
    o.queues = a.queues;
    o.burst = a.burst;
    o.depth = a.depth;
    const auto mode = irq::parse_wait_mode(a.mode);
    if (!mode) {
        throw Error::invalid("perf net", "--mode " + a.mode, "one of poll, interrupt, adaptive");
    }
    o.mode = *mode;
    const auto mac = net::MacAddress::parse(a.dst_mac);
    if (!mac) {
        throw Error::invalid("perf net", "--dst-mac " + a.dst_mac,
                             "not a MAC address (six hex pairs: 02:00:00:00:00:02)");
    }
    o.destination_mac = *mac;
    o.seed = a.seed;
    if (!a.time.empty()) {
        try {
            o.time = block::parse_duration(a.time, "--time");
        } catch (const Error& e) {
            throw Error::invalid("perf net", e.object(), e.reason());
        }
        if (o.time.count() == 0) {
            throw Error::invalid("perf net", "--time " + a.time, "must be positive");
        }
    }
    if (a.count) {
        if (*a.count == 0) {
            throw Error::invalid("perf net", "--count 0", "must be at least 1");
        }
        o.count = *a.count;
    }
    if (o.time.count() == 0 && o.count == 0) {
        o.time = std::chrono::seconds(10);
    }
    net::validate_options(o);
    return o;
}

void run_net(const NetArguments& a) {
    net::NetPerfOptions options = options_from(a);
    net::OpenNetOptions open;
    open.queues = a.queues;
    open.mode = options.mode;
    if (options.direction == net::Direction::fwd && a.device.starts_with("vfio:") &&
        a.peer.starts_with("vfio:")) {
        // The peer transmits from the port's buffers: both devices in one VFIO container, so the
        // port's DMA mappings are the peer's too.
        open.device.vfio_container = vfio::Container::create(open.device.dev_root);
    }
    auto port = net::open_net_port(a.device, open);
    std::unique_ptr<net::NetPort> peer;  // destroyed before `port`: it may use port's buffers
    if (options.direction == net::Direction::fwd) {
        peer = net::open_net_port(a.peer, open);
    }
    for (const net::NetPort* p : {port.get(), peer.get()}) {
        if (p != nullptr && !p->link().up) {
            fmt::print(stderr, "ring3: perf net: warning: the link of {} is down\n", p->name());
        }
    }

    bool status_shown = false;
    const bool tty = ::isatty(STDERR_FILENO) == 1;
    if (!a.quiet) {
        options.on_progress = [&status_shown, tty](const net::NetProgress& progress) {
            if (tty) {
                fmt::print(stderr, "\r{}\x1b[K", net::format_progress(progress));
                status_shown = true;
            } else {
                fmt::print(stderr, "{}\n", net::format_progress(progress));
            }
            std::fflush(stderr);
        };
    }
    options.cancel = &net_interrupted;
    net::NetPerfReport report;
    {
        const NetStopSignals signals;
        report = net::run_net_perf(*port, options, peer.get());
    }
    if (status_shown) {
        fmt::print(stderr, "\r\x1b[K");
    }

    if (a.json) {
        fmt::print("{}\n", net::format_report_json(report));
    } else if (a.quiet) {
        for (const auto& p : report.problems) {
            fmt::print(stderr, "problem: {}\n", p);
        }
        for (const auto& f : report.fatal) {
            fmt::print(stderr, "stopped: {}\n", f);
        }
        fmt::print("{}\n", net::figure_line(report));
    } else {
        fmt::print("{}", net::format_report(report));
    }
    std::fflush(stdout);
    if (report.failed()) {
        fmt::print(
            stderr,
            "ring3: perf net {}: failed: {} queue(s) stopped{}, {} tx and {} rx errors, {} "
            "corrupt, {} duplicates{}\n",
            report.device, report.fatal.size(),
            report.fatal.empty() ? "" : " (" + report.fatal.front() + ")",
            report.total.port.tx_errors, report.total.port.rx_errors, report.total.rx.corrupt,
            report.total.rx.duplicates,
            options.direction == net::Direction::rx && options.count != 0
                ? fmt::format(", {} test frames of {}", report.total.rx.test_frames, options.count)
                : "");
        throw CLI::RuntimeError(1);
    }
}

}  // namespace

void add_perf_net_command(CLI::App& perf) {
    auto args = std::make_shared<NetArguments>();
    auto* net = perf.add_subcommand(
        "net",
        "Packets per second, Gbit/s and CPU cycles per packet through a network port: send "
        "(--tx) or receive and check (--rx) UDP test frames carrying per-queue sequence numbers "
        "and a seed-derived payload, or forward between two ports (--fwd PEER, MAC addresses "
        "swapped). Prints a status line each second on stderr, then the report; the last line is "
        "`net_<direction>..._pps: N pps`.");
    net->add_option("device", args->device,
                    "tap:NAME (a TAP device, opened or created; needs CAP_NET_ADMIN), or vfio:BDF, "
                    "uio:BDF, a BDF (a NIC ring3 has a driver for)")
        ->required();
    auto* tx = net->add_flag("--tx", args->tx, "send test frames");
    auto* rx = net->add_flag("--rx", args->rx,
                             "receive: count and check test frames (content, loss, reordering, "
                             "duplicates, per stream); other traffic counts as foreign");
    auto* fwd = net->add_option("--fwd", args->peer,
                                "forward: frames from DEVICE's queue q leave on PEER's queue q and "
                                "back, MAC addresses swapped");
    tx->excludes(rx, fwd);
    rx->excludes(tx, fwd);
    fwd->excludes(tx, rx);
    net->add_option("--size", args->size,
                    "tx: frame bytes without FCS, 60..1514 (and at most the MTU + 14), or a range "
                    "MIN-MAX drawn per frame")
        ->capture_default_str();
    net->add_option("--time", args->time,
                    "run time: 10s, 500ms, 2m (default 10s unless --count is given)");
    net->add_option("--count", args->count,
                    "stop after this many packets in all: tx sent (split over the queues), rx test "
                    "frames received (fewer by --time fails the run), fwd forwarded");
    net->add_option("--queues", args->queues, "queue pairs, one thread each (at most 64)")
        ->capture_default_str();
    net->add_option("--mode", args->mode,
                    "poll, interrupt or adaptive (TAP: poll(2) on the fd; poll mode spins)")
        ->capture_default_str();
    net->add_option("--burst", args->burst, "packets per rx/tx burst, 1..256")
        ->capture_default_str();
    net->add_option("--depth", args->depth,
                    "descriptors per ring (0: the port's default; TAP: sizes the buffer pool)")
        ->capture_default_str();
    net->add_option("--dst-mac", args->dst_mac, "tx: destination MAC address")
        ->capture_default_str();
    net->add_option("--seed", args->seed, "frame contents; --rx must use the sender's")
        ->capture_default_str();
    net->add_flag("--json", args->json, "print one JSON object instead of the report");
    net->add_flag("--quiet", args->quiet, "no status line and no report: only the figure line");
    net->callback([args] { run_net(*args); });
}

}  // namespace ring3::tool
