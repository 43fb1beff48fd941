// `ring3 hold DEVICE -- COMMAND [ARG...]`: opens a VFIO device once and runs COMMAND with the open
// device handed down (inherited fds), `{}` in its arguments replaced by the device spec that
// adopts them ("vfio-fd:BDF,CONTAINER_FD,DEVICE_FD").
//
// What it is for: vfio-pci resets a function when its device is first opened (an FLR, 100 ms or
// more), so a driver process that opens the device itself pays that at every start. A holder
// keeps the device open across driver restarts, the way an I/O server hands devices to driver
// processes (DESIGN.md, ring3d), and a driver resets the device the way it needs (NVMe: CC.EN).
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ring3/core/error.hpp"
#include "ring3/device/vfio.hpp"
#include "ring3/pci/address.hpp"

namespace ring3::tool {
namespace {

struct HoldArguments {
    std::string device;
    std::vector<std::string> command;
};

void inherit(int fd, const std::string& what) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) {
        throw Error::from_errno("hand down the fd of", what);
    }
}

int run_held(const HoldArguments& a) {
    std::string_view spec = a.device;
    if (spec.substr(0, 5) == "vfio:") {
        spec.remove_prefix(5);
    }
    const pci::Address address = pci::Address::parse(spec);
    vfio::OpenedDevice opened = vfio::open_fds(address, OpenOptions{});
    inherit(opened.container->fd(), "the VFIO container");
    inherit(opened.device_fd.get(), address.to_string());
    const std::string handed = fmt::format("vfio-fd:{},{},{}", address.to_string(),
                                           opened.container->fd(), opened.device_fd.get());
    std::vector<std::string> args;
    for (const auto& arg : a.command) {
        std::string replaced = arg;
        for (auto at = replaced.find("{}"); at != std::string::npos;
             at = replaced.find("{}", at + handed.size())) {
            replaced.replace(at, 2, handed);
        }
        args.push_back(std::move(replaced));
    }
    std::vector<char*> argv;
    for (auto& arg : args) {
        argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    ::setenv("RING3_DEVICE", handed.c_str(), 1);

    const pid_t child = ::fork();
    if (child < 0) {
        throw Error::from_errno("fork for", a.command.front());
    }
    if (child == 0) {
        ::execvp(argv[0], argv.data());
        fmt::print(stderr, "ring3 hold: exec {}: {}\n", args.front(), std::strerror(errno));
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) {
            throw Error::from_errno("wait for", a.command.front());
        }
    }
    if (WIFSIGNALED(status)) {
        fmt::print(stderr, "ring3 hold: {} was killed by signal {}\n", a.command.front(),
                   WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

}  // namespace

void add_hold_command(CLI::App& app) {
    auto args = std::make_shared<HoldArguments>();
    auto* hold = app.add_subcommand(
        "hold",
        "Open a VFIO device once and run a command that uses it open: {} in its arguments (and "
        "$RING3_DEVICE) names it as vfio-fd:BDF,CONTAINER_FD,DEVICE_FD. vfio-pci resets a device "
        "when it is first opened (an FLR: 100 ms or more); a held device skips that at each start "
        "of the command");
    hold->add_option("device", args->device, "vfio:BDF or a BDF bound to vfio-pci")->required();
    hold->add_option("command", args->command, "the command and its arguments (after --)")
        ->required();
    hold->callback([args] {
        const int status = run_held(*args);
        if (status != 0) {
            throw CLI::RuntimeError(status);
        }
    });
}

}  // namespace ring3::tool
