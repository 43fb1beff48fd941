// Supervised drivers (supervisor.hpp).
#include "supervisor.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ring3/broker/sandbox.hpp"
#include "ring3/core/error.hpp"

namespace ring3::broker {
namespace {

// Whom `spec` names: its uid, and its group's gid (the user's primary group by default).
Identity resolve(const DriverSpec& spec) {
    std::vector<char> buffer(16384);
    passwd pw{};
    passwd* found = nullptr;
    uid_t uid = 0;
    gid_t gid = 0;
    if (const auto* name = std::get_if<std::string>(&spec.user)) {
        if (::getpwnam_r(name->c_str(), &pw, buffer.data(), buffer.size(), &found) != 0 ||
            found == nullptr) {
            throw Error::invalid("start driver", "user " + *name, "no such user", ENOENT);
        }
        uid = found->pw_uid;
        gid = found->pw_gid;
    } else {
        uid = std::get<std::uint32_t>(spec.user);
        gid = uid;  // a bare uid without a passwd entry: its own group number
        if (::getpwuid_r(uid, &pw, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
            gid = found->pw_gid;
        }
    }
    if (spec.group) {
        if (const auto* name = std::get_if<std::string>(&*spec.group)) {
            group g{};
            group* hit = nullptr;
            if (::getgrnam_r(name->c_str(), &g, buffer.data(), buffer.size(), &hit) != 0 ||
                hit == nullptr) {
                throw Error::invalid("start driver", "group " + *name, "no such group", ENOENT);
            }
            gid = hit->gr_gid;
        } else {
            gid = std::get<std::uint32_t>(*spec.group);
        }
    }
    if (uid == 0) {
        throw Error::invalid("start driver", "its user",
                             "resolves to root; drivers run unprivileged", EPERM);
    }
    Identity who = identity_of(uid, gid);
    who.groups.clear();  // the sandbox drops supplementary groups
    return who;
}

// Moves `fd` to exactly `target` (clearing close-on-exec) in the child.
void place(int fd, int target) {
    if (fd == target) {
        ::fcntl(fd, F_SETFD, 0);
    } else if (::dup2(fd, target) < 0) {
        throw Error::from_errno("place a descriptor for", "the driver");
    }
}

// The child's part: never returns.
[[noreturn]] void become_driver(const pci::Address& device, const DriverSpec& spec,
                                unsigned restarts, const Identity& who, int socket, int report) {
    try {
        ::setpgid(0, 0);  // signals to ring3d's process group do not reach it
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);  // ring3d blocks some for its signalfd
        ::signal(SIGPIPE, SIG_DFL);
        // The descriptors it keeps: 0 (/dev/null), 1, 2, 3 (its connection), and the report
        // pipe (close-on-exec) above them; everything else of ring3d's is closed.
        const int high_socket = ::fcntl(socket, F_DUPFD_CLOEXEC, 10);
        const int high_report = ::fcntl(report, F_DUPFD_CLOEXEC, 10);
        if (high_socket < 0 || high_report < 0) {
            throw Error::from_errno("move descriptors for", "the driver");
        }
        const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0) {
            throw Error::from_errno("open", "/dev/null");
        }
        place(null, 0);
        place(high_socket, kInheritedFd);
        if (::dup2(high_report, kInheritedFd + 1) < 0 ||
            ::fcntl(kInheritedFd + 1, F_SETFD, FD_CLOEXEC) != 0) {
            throw Error::from_errno("place the report pipe for", "the driver");
        }
        report = kInheritedFd + 1;
        ::syscall(SYS_close_range, kInheritedFd + 2, ~0U, 0);
        ::setenv("RING3D_FD", std::to_string(kInheritedFd).c_str(), 1);
        ::setenv("RING3D_DEVICE", device.to_string().c_str(), 1);
        ::setenv("RING3D_RESTARTS", std::to_string(restarts).c_str(), 1);
        ::unsetenv("NOTIFY_SOCKET");
        SandboxSpec sandbox;
        sandbox.uid = who.uid;
        sandbox.gid = who.gid;
        sandbox.mode = spec.sandbox;
        sandbox.allow_syscalls = spec.allow_syscalls;
        sandbox.memlock_bytes = spec.memlock_bytes;
        enter_sandbox(sandbox);
        const std::vector<std::string> words = spec.argv_for(device);
        std::vector<char*> argv;
        for (const std::string& w : words) {
            argv.push_back(const_cast<char*>(w.c_str()));
        }
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        throw Error::from_errno("exec", words[0]);
    } catch (const std::exception& e) {
        const std::string text = e.what();
        [[maybe_unused]] const auto n = ::write(report, text.data(), text.size());
    }
    ::_exit(127);
}

}  // namespace

Spawned spawn_driver(const pci::Address& device, const DriverSpec& spec, unsigned restarts) {
    Spawned s;
    s.who = resolve(spec);
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        throw Error::from_errno("create the connection of", "a driver");
    }
    UniqueFd ours(pair[0]);
    UniqueFd theirs(pair[1]);
    int report_pipe[2];
    if (::pipe2(report_pipe, O_CLOEXEC) != 0) {
        throw Error::from_errno("create a pipe for", "a driver");
    }
    UniqueFd report_read(report_pipe[0]);
    UniqueFd report_write(report_pipe[1]);
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw Error::from_errno("fork", "a driver");
    }
    if (pid == 0) {
        become_driver(device, spec, restarts, s.who, theirs.get(), report_write.get());
    }
    theirs.reset();
    report_write.reset();
    ::fcntl(ours.get(), F_SETFL, ::fcntl(ours.get(), F_GETFL) | O_NONBLOCK);  // as accepted ones
    // EOF: exec happened (the pipe was close-on-exec). Text: what stopped the child before.
    std::string error;
    char buffer[512];
    for (;;) {
        const ssize_t n = ::read(report_read.get(), buffer, sizeof buffer);
        if (n > 0) {
            error.append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    if (!error.empty()) {
        ::waitpid(pid, nullptr, 0);
        throw Error::invalid("start driver", device.to_string(), error, ECHILD);
    }
    s.pid = pid;
    s.pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!s.pidfd) {
        throw Error::from_errno("watch", fmt::format("driver pid {}", pid));
    }
    s.socket = std::move(ours);
    return s;
}

std::string exit_text(const siginfo_t& info) {
    switch (info.si_code) {
        case CLD_EXITED:
            return fmt::format("exit status {}", info.si_status);
        case CLD_KILLED:
            return fmt::format("killed by signal {} (SIG{})", info.si_status,
                               sigabbrev_np(info.si_status) ? sigabbrev_np(info.si_status) : "?");
        case CLD_DUMPED:
            return fmt::format("dumped core on signal {} (SIG{})", info.si_status,
                               sigabbrev_np(info.si_status) ? sigabbrev_np(info.si_status) : "?");
        default:
            return fmt::format("ended (code {}, status {})", info.si_code, info.si_status);
    }
}

bool failed(const siginfo_t& info) noexcept {
    return !(info.si_code == CLD_EXITED && info.si_status == 0);
}

std::optional<RestartPolicy::Clock::time_point> RestartPolicy::after_exit(const DriverSpec& spec,
                                                                          bool failure,
                                                                          Clock::time_point now,
                                                                          std::string& why) {
    if (spec.restart == Restart::no) {
        why = "restart = \"no\"";
        return std::nullopt;
    }
    if (spec.restart == Restart::on_failure && !failure) {
        why = "it exited cleanly (restart = \"on-failure\")";
        return std::nullopt;
    }
    while (!recent_.empty() && now - recent_.front() > spec.restart_window) {
        recent_.pop_front();
    }
    if (recent_.size() >= spec.max_restarts) {
        why = fmt::format("{} restart(s) within {} s already (max_restarts)", recent_.size(),
                          spec.restart_window.count());
        return std::nullopt;
    }
    const auto delay = spec.backoff(static_cast<unsigned>(recent_.size()));
    recent_.push_back(now);
    ++restarts_;
    why = fmt::format("restart {} in {} ms", restarts_, delay.count());
    return now + delay;
}

}  // namespace ring3::broker
