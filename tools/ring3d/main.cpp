// ring3d, the I/O server (DESIGN.md, "The I/O server"): owns the PCI devices its policy names,
// binds them to vfio-pci and hands each to one unprivileged process at a time over a Unix socket
// (src/broker/PROTOCOL.md), quiescing and resetting it when that process lets go or dies.
#include <fmt/core.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <cstring>

#include "ring3/broker/policy.hpp"
#include "ring3/broker/protocol.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "server.hpp"

namespace {

// systemd's readiness protocol (sd_notify(3)): one datagram "READY=1" to $NOTIFY_SOCKET, which
// may name an abstract socket ('@').
void notify_ready() {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || *path == '\0') {
        return;
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::size_t length = std::strlen(path);
    if (length >= sizeof address.sun_path) {
        return;
    }
    std::memcpy(address.sun_path, path, length);
    if (address.sun_path[0] == '@') {
        address.sun_path[0] = '\0';
    }
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    const char message[] = "READY=1";
    ::sendto(fd, message, sizeof message - 1, 0, reinterpret_cast<const sockaddr*>(&address),
             static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length));
    ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
    using namespace ring3;
    CLI::App app{
        "ring3d: the ring3 I/O server. Hands the PCI devices its policy names to "
        "unprivileged driver processes, one owner at a time, over a Unix socket; resets "
        "a device when its owner lets go or dies.",
        "ring3d"};
    broker::ServerOptions options;
    std::string config = "/etc/ring3/ring3d.toml";
    bool check = false;
    bool no_bind = false;
    app.add_option("--config,-c", config, "the policy file (TOML)")->capture_default_str();
    app.add_option("--socket,-s", options.socket,
                   fmt::format("the socket to listen on (default: ${} or {})",
                               broker::kSocketEnvironment, broker::kDefaultSocket));
    app.add_flag("--check", check, "read the policy, print what it says and exit");
    app.add_flag("--no-bind", no_bind,
                 "do not bind managed devices to vfio-pci (they must be bound already)");
    app.add_option("--sysfs", options.sysfs_root, "sysfs root (for tests)")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    options.bind = !no_bind;
    options.socket = broker::socket_path(options.socket);
    options.state_file = options.socket + ".claims";
    options.policy_file = config;
    if (std::getenv("RING3_LOG") == nullptr) {
        set_log_level(LogLevel::info);
    }
    try {
        broker::Policy policy = broker::Policy::load(config);
        if (check) {
            fmt::print("{}: {} device rule(s)\n", config, policy.devices.size());
            for (const auto& rule : policy.devices) {
                fmt::print("  {}\n", rule.describe(config));
                if (rule.driver) {
                    const broker::DriverSpec& d = *rule.driver;
                    const std::string user = std::holds_alternative<std::string>(d.user)
                                                 ? std::get<std::string>(d.user)
                                                 : std::to_string(std::get<std::uint32_t>(d.user));
                    fmt::print(
                        "    supervised driver (line {}): {} as user {}; restart {}, at most {} "
                        "in {} s; sandbox {}\n",
                        d.line, fmt::join(d.command, " "), user, broker::to_string(d.restart),
                        d.max_restarts, d.restart_window.count(), broker::to_string(d.sandbox));
                }
            }
            return 0;
        }
        broker::Server server(std::move(policy), options);
        server.prepare();
        log_info("ring3d: listening on {}", options.socket);
        notify_ready();
        return server.run();
    } catch (const Error& e) {
        fmt::print(stderr, "ring3d: {}\n", e.what());
        return 1;
    }
}
