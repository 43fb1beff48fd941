// `ring3 emu virtio-net` and `ring3 emu virtio-blk`: emulated virtio devices served over vfio-user
// (src/emu/virtio_net.cpp, virtio_blk.cpp) for tests and demos without the device. Each runs in
// the foreground until SIGTERM/SIGINT (or, with --once, until its client leaves) and prints its
// counters on exit.
#include <fmt/core.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ring3/core/error.hpp"
#include "ring3/emu/server.hpp"
#include "ring3/emu/virtio_blk.hpp"
#include "ring3/emu/virtio_net.hpp"

namespace ring3::tool {
namespace {

// The server a signal stops (Server::stop() only stores a flag and writes an eventfd).
std::atomic<emu::Server*> g_virtio_server{nullptr};

extern "C" void on_virtio_stop_signal(int) {
    if (emu::Server* server = g_virtio_server.load()) {
        server->stop();
    }
}

// Runs `server` until a signal (or, with --once, its client) stops it; `banner` is printed once
// the signals are caught, so a test that stops the device on seeing it stops it cleanly.
void serve_until_stopped(emu::Server& server, const std::string& banner) {
    struct sigaction action {};
    action.sa_handler = on_virtio_stop_signal;
    sigemptyset(&action.sa_mask);
    g_virtio_server.store(&server);
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    fmt::print(stderr, "{}\n", banner);
    try {
        server.run();
    } catch (...) {
        g_virtio_server.store(nullptr);
        throw;
    }
    g_virtio_server.store(nullptr);
    std::signal(SIGTERM, SIG_DFL);
    std::signal(SIGINT, SIG_DFL);
}

struct VirtioNetArgs {
    std::string socket;
    bool loopback = false;
    std::string peer;
    std::string dgram;
    std::string capture;
    std::string mac = "02:00:00:00:00:01";
    unsigned queues = 1;
    unsigned queue_size = 256;
    unsigned mtu = 1500;
    std::vector<std::string> faults;
    bool once = false;
};

void run_virtio_net(const VirtioNetArgs& args) {
    emu::VirtioNetOptions options;
    options.queue_pairs = args.queues;
    options.queue_size = static_cast<std::uint16_t>(args.queue_size);
    if ((args.queue_size & (args.queue_size - 1)) != 0) {
        throw Error::invalid("ring3 emu virtio-net",
                             fmt::format("--queue-size {}", args.queue_size),
                             "a virtqueue's size is a power of two (VIRTIO 1.2 §2.7)");
    }
    options.mtu = static_cast<std::uint16_t>(args.mtu);
    options.mac = emu::parse_mac(args.mac);
    options.loopback = args.loopback;
    options.peer_path = args.peer;
    options.dgram_path = args.dgram;
    if (!args.peer.empty() && args.dgram.empty()) {
        options.dgram_path = args.socket + ".dgram";
    }
    if (args.peer.empty() && !args.dgram.empty()) {
        throw Error::invalid("ring3 emu virtio-net", "--dgram " + args.dgram,
                             "the device's own datagram socket is used with --peer only");
    }
    options.capture_path = args.capture;
    for (const std::string& fault : args.faults) {
        emu::parse_fault(fault, options.faults);
    }
    emu::PciFunction function("emu-virtio-net");
    emu::VirtioNetDevice device(function, options);
    emu::Server::Options server_options;
    server_options.once = args.once;
    emu::Server server(args.socket, function, server_options);

    const std::string backend =
        args.loopback ? std::string("loopback")
        : args.peer.empty()
            ? std::string("no backend: transmitted frames are dropped")
            : fmt::format("peer {}, receiving on {}", args.peer, options.dgram_path);
    serve_until_stopped(
        server,
        fmt::format("ring3 emu virtio-net: listening on {} ({} queue pair(s), {}{})", args.socket,
                    args.queues, backend, args.capture.empty() ? "" : ", capture " + args.capture));
    const emu::VirtioNetCounters c = device.counters();
    fmt::print(stderr,
               "ring3 emu virtio-net: stopped after {} client(s): tx {} frames {} bytes {} "
               "dropped; rx {} frames {} bytes {} dropped; {} interrupts, {} resets, {} "
               "needs-reset\n",
               server.clients_served(), c.tx_frames, c.tx_bytes, c.tx_dropped, c.rx_frames,
               c.rx_bytes, c.rx_dropped, c.interrupts, c.resets, c.needs_reset);
    if (c.tx_frames_by_pair.size() > 1) {
        fmt::print(stderr, "ring3 emu virtio-net: tx frames by queue pair: {}\n",
                   fmt::join(c.tx_frames_by_pair, " "));
    }
}

struct VirtioBlkArgs {
    std::string socket;
    std::string size = "64M";
    std::string backing;
    unsigned queues = 1;
    unsigned queue_size = 256;
    std::vector<std::string> faults;
    bool once = false;
};

void run_virtio_blk(const VirtioBlkArgs& args) {
    const char* command = "ring3 emu virtio-blk";
    emu::VirtioBlkOptions options;
    options.size = parse_emu_size(args.size, command, "--size");
    if (options.size % 512 != 0) {
        throw Error::invalid(command, fmt::format("--size {}", args.size),
                             "the disk holds whole 512-byte sectors (VIRTIO 1.2 §5.2.4)");
    }
    options.backing = args.backing;
    options.queues = args.queues;
    if ((args.queue_size & (args.queue_size - 1)) != 0) {
        throw Error::invalid(command, fmt::format("--queue-size {}", args.queue_size),
                             "a virtqueue's size is a power of two (VIRTIO 1.2 §2.7)");
    }
    options.queue_size = static_cast<std::uint16_t>(args.queue_size);
    for (const std::string& fault : args.faults) {
        emu::parse_fault(fault, options.faults);
    }
    emu::PciFunction function("emu-virtio-blk");
    emu::VirtioBlkDevice device(function, options);
    emu::Server::Options server_options;
    server_options.once = args.once;
    emu::Server server(args.socket, function, server_options);
    serve_until_stopped(
        server,
        fmt::format("ring3 emu virtio-blk: listening on {} ({} bytes = {} sectors in {}, "
                    "{} request queue(s))",
                    args.socket, options.size, device.capacity_sectors(),
                    args.backing.empty() ? std::string("memory") : args.backing, args.queues));
    const emu::VirtioBlkCounters c = device.counters();
    fmt::print(stderr,
               "ring3 emu virtio-blk: stopped after {} client(s): {} reads ({} bytes), {} writes "
               "({} bytes), {} flushes, {} get-id; {} IOERR, {} UNSUPP, {} without status; {} "
               "interrupts, {} resets, {} needs-reset\n",
               server.clients_served(), c.reads, c.bytes_read, c.writes, c.bytes_written, c.flushes,
               c.get_ids, c.ioerr, c.unsupported, c.no_status, c.interrupts, c.resets,
               c.needs_reset);
}

}  // namespace

void add_emu_virtio_blk_command(CLI::App& emu) {
    auto args = std::make_shared<VirtioBlkArgs>();
    auto* blk = emu.add_subcommand(
        "virtio-blk",
        "A virtio-blk disk (VIRTIO 1.2 §5.2, modern PCI transport, split virtqueues): registers "
        "trapped, notifications in a shared page, queues polled by a thread; requests IN, OUT, "
        "FLUSH and GET_ID, each checked (bad ones answered IOERR). The disk is memory or a "
        "file; runs until SIGTERM/SIGINT, removes its socket and prints its counters");
    blk->add_option("--socket", args->socket, "vfio-user socket path to listen at")->required();
    blk->add_option("--size", args->size,
                    "bytes of the disk, a multiple of 512 (K, M, G, T: powers of 1024)")
        ->capture_default_str();
    blk->add_option("--backing", args->backing,
                    "a file holding the disk (created or extended to --size, mapped shared, so "
                    "it holds what was written); default: memory");
    blk->add_option("--queues", args->queues,
                    "request queues offered (num_queues, with VIRTIO_BLK_F_MQ)")
        ->check(CLI::Range(1u, 1023u))
        ->capture_default_str();
    blk->add_option("--queue-size", args->queue_size, "descriptors per virtqueue at most")
        ->check(CLI::Range(4u, 32768u))
        ->capture_default_str();
    blk->add_option("--fault", args->faults,
                    "Inject KIND:N (repeatable), counted over requests completed: delay:US (every "
                    "used element US µs late), drop:N (the Nth request is never returned; ring3's "
                    "driver has no request timeout, so only perf's 60 s stall check ends a run), "
                    "corrupt:N (the Nth used element names no descriptor), cfs:N "
                    "(DEVICE_NEEDS_RESET after N), vanish:N (drop the connection after N)");
    blk->add_flag("--once", args->once, "Exit when the first client disconnects");
    blk->callback([args] { run_virtio_blk(*args); });
}

void add_emu_virtio_net_command(CLI::App& emu) {
    auto args = std::make_shared<VirtioNetArgs>();
    auto* net = emu.add_subcommand(
        "virtio-net",
        "A virtio-net NIC (VIRTIO 1.2, modern PCI transport, split virtqueues): registers "
        "trapped, notifications in a shared page, queues polled by a thread. Frames go to a "
        "unix datagram peer (one frame per datagram, no virtio header), loop back, or are "
        "dropped; runs until SIGTERM/SIGINT, removes its sockets and prints its counters");
    net->add_option("--socket", args->socket, "vfio-user socket path to listen at")->required();
    auto* loopback = net->add_flag(
        "--loopback", args->loopback,
        "deliver each transmitted frame to a receive buffer of the same queue pair (dropped and "
        "counted when none is posted)");
    auto* peer = net->add_option("--peer", args->peer,
                                 "send transmitted frames to this bound SOCK_DGRAM unix socket");
    net->add_option("--dgram", args->dgram,
                    "with --peer: the device's own datagram socket, where frames for it arrive "
                    "(default: the --socket path + .dgram)");
    loopback->excludes(peer);
    peer->excludes(loopback);
    net->add_option("--capture", args->capture, "write every transmitted frame to a pcap file");
    net->add_option("--mac", args->mac, "the NIC's MAC address")->capture_default_str();
    net->add_option("--queues", args->queues,
                    "queue pairs offered (more than 1 offers VIRTIO_NET_F_MQ and a control queue)")
        ->check(CLI::Range(1u, 511u))
        ->capture_default_str();
    net->add_option("--queue-size", args->queue_size, "descriptors per virtqueue at most")
        ->check(CLI::Range(2u, 32768u))
        ->capture_default_str();
    net->add_option("--mtu", args->mtu, "the MTU the device announces")
        ->check(CLI::Range(68u, 65517u))
        ->capture_default_str();
    net->add_option("--fault", args->faults,
                    "Inject KIND:N (repeatable), counted over frames sent and received: delay:US "
                    "(every used element US µs late), drop:N (the Nth frame's buffer is never "
                    "returned), corrupt:N (the Nth used element names no descriptor), cfs:N "
                    "(DEVICE_NEEDS_RESET after N), vanish:N (drop the connection after N)");
    net->add_flag("--once", args->once, "Exit when the first client disconnects");
    net->callback([args] { run_virtio_net(*args); });
}

}  // namespace ring3::tool
