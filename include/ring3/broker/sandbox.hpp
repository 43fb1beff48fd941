// The sandbox of a supervised driver (DESIGN.md, "The I/O server"): what ring3d does in the
// child between fork and exec so that a compromised driver can touch its device and nothing else.
//
//   1. its own mount and network namespaces: no interface but a down loopback; /sys and /dev/vfio
//      covered by empty read-only tmpfs (the device comes as descriptors, not paths);
//   2. RLIMIT_MEMLOCK set to what the policy grants (VFIO charges pinned DMA memory to it);
//   3. the configured user and group, no supplementary groups, every capability dropped (the
//      bounding and ambient sets too), and no_new_privs;
//   4. a seccomp filter (seccomp(2), BPF): the system calls a driver needs (driver_syscalls())
//      plus the policy's allow_syscalls; socket() only for AF_UNIX; anything else fails with
//      EPERM (mode "log": is allowed and logged by the kernel, to find what a driver needs).
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/broker/policy.hpp"

namespace ring3::broker {

// This machine's number of the system call `name` (as in syscalls(2): "openat", "ioctl"); none
// for a name the table does not know.
std::optional<int> syscall_number(std::string_view name) noexcept;
// The system calls every ring3 driver may make: memory, files it already has or the dynamic
// loader opens, ioctl (VFIO), eventfds and epoll, threads, time, signals to itself, Unix sockets.
std::span<const std::string_view> driver_syscalls() noexcept;

// The seccomp program: kill on a foreign architecture, socket() allowed for AF_UNIX only, the
// `allowed` numbers allowed, anything else EPERM (or, `log_only`, allowed and logged).
std::vector<sock_filter> seccomp_program(const std::vector<int>& allowed, bool log_only);

struct SandboxSpec {
    uid_t uid = 0;
    gid_t gid = 0;
    SandboxMode mode = SandboxMode::on;
    std::vector<std::string> allow_syscalls;  // beyond driver_syscalls()
    std::uint64_t memlock_bytes = 0;
};

// Steps 1-4 above, in the calling process (the child, after fork; single-threaded). Throws
// ring3::Error naming the step that failed. With mode off only step 2 and 3's user change happen.
void enter_sandbox(const SandboxSpec& spec);

}  // namespace ring3::broker
