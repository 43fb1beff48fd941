// `ring3 emu nvme`: an emulated NVMe controller served over vfio-user (src/emu), for tests and
// demos on machines without the device. Runs in the foreground until SIGTERM/SIGINT.
#include <fmt/core.h>

#include <atomic>
#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ring3/core/error.hpp"
#include "ring3/emu/nvme.hpp"
#include "ring3/emu/server.hpp"

namespace ring3::tool {
namespace {

// The server a signal stops (Server::stop() only stores a flag and writes an eventfd).
std::atomic<emu::Server*> g_running{nullptr};

void on_emu_stop_signal(int) {
    if (emu::Server* server = g_running.load()) {
        server->stop();
    }
}

struct NvmeArgs {
    std::string socket;
    std::string size = "1G";
    std::string backing;
    unsigned namespaces = 1;
    unsigned queues = 4;
    std::vector<std::string> faults;
    bool once = false;
};

void run_nvme(const NvmeArgs& args) {
    emu::NvmeOptions options;
    options.size = parse_emu_size(args.size, "ring3 emu nvme", "--size");
    options.backing = args.backing;
    options.namespaces = args.namespaces;
    options.queues = args.queues;
    for (const std::string& fault : args.faults) {
        emu::parse_fault(fault, options.faults);
    }
    emu::PciFunction function("emu-nvme");
    emu::NvmeController controller(function, options);
    emu::Server::Options server_options;
    server_options.once = args.once;
    emu::Server server(args.socket, function, server_options);

    struct sigaction action {};
    action.sa_handler = on_emu_stop_signal;
    sigemptyset(&action.sa_mask);
    g_running.store(&server);
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    fmt::print(stderr,
               "ring3 emu nvme: listening on {} ({} bytes, {} namespace(s), {} queue pairs)\n",
               args.socket, options.size, options.namespaces, options.queues);
    try {
        server.run();
    } catch (...) {
        g_running.store(nullptr);
        throw;
    }
    g_running.store(nullptr);
    std::signal(SIGTERM, SIG_DFL);
    std::signal(SIGINT, SIG_DFL);
    fmt::print(stderr, "ring3 emu nvme: stopped after {} client(s), {} I/O commands\n",
               server.clients_served(), controller.io_commands());
}

}  // namespace

// "4096", "64K", "512M", "1G", "2T" (powers of 1024).
std::uint64_t parse_emu_size(const std::string& text, const char* command, const char* option) {
    std::size_t used = 0;
    unsigned long long value = 0;
    try {
        value = std::stoull(text, &used, 10);
    } catch (const std::exception&) {
        used = 0;
    }
    unsigned shift = 0;
    const std::string suffix = text.substr(used == 0 ? text.size() : used);
    if (suffix == "K" || suffix == "k") {
        shift = 10;
    } else if (suffix == "M" || suffix == "m") {
        shift = 20;
    } else if (suffix == "G" || suffix == "g") {
        shift = 30;
    } else if (suffix == "T" || suffix == "t") {
        shift = 40;
    } else if (!suffix.empty()) {
        used = 0;
    }
    if (used == 0 || text.empty() || text[0] == '-' || value == 0 ||
        (value << shift >> shift) != value) {
        throw Error::invalid(command, fmt::format("{} '{}'", option, text),
                             "not a size: a positive number of bytes, with K, M, G or T");
    }
    return value << shift;
}

void add_emu_command(CLI::App& app) {
    auto* emu = app.add_subcommand(
        "emu", "Serve an emulated PCI device over vfio-user (a client opens vfio-user:PATH)");
    emu->require_subcommand(1);
    auto args = std::make_shared<NvmeArgs>();
    auto* nvme = emu->add_subcommand(
        "nvme",
        "An NVMe controller (NVMe 2.0, NVM command set): registers trapped, doorbells in a "
        "shared page a thread polls; runs until SIGTERM/SIGINT and removes the socket");
    nvme->add_option("--socket", args->socket, "Socket path to listen at")->required();
    nvme->add_option("--size", args->size, "Bytes of storage, split among the namespaces (K, M, G)")
        ->capture_default_str();
    nvme->add_option("--backing", args->backing,
                     "A file holding the data (created or extended to --size); default: memory");
    nvme->add_option("--namespaces", args->namespaces, "Number of namespaces")
        ->check(CLI::Range(1u, 1024u))
        ->capture_default_str();
    nvme->add_option("--queues", args->queues, "I/O queue pairs offered")
        ->check(CLI::Range(1u, 511u))
        ->capture_default_str();
    nvme->add_option("--fault", args->faults,
                     "Inject KIND:N (repeatable), counted over I/O commands: delay:US (every "
                     "completion US µs late), drop:N (never complete the Nth), corrupt:N (wrong "
                     "command id in the Nth completion), cfs:N (CSTS.CFS after N), vanish:N "
                     "(drop the connection after N)");
    nvme->add_flag("--once", args->once, "Exit when the first client disconnects");
    nvme->callback([args] { run_nvme(*args); });
    add_emu_virtio_net_command(*emu);
    add_emu_virtio_blk_command(*emu);
}

}  // namespace ring3::tool
