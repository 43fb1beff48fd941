// The system-call names ring3d's policy understands, and the set every driver may make
// (sandbox.hpp). The numbers come from this machine's <sys/syscall.h>.
#include <sys/syscall.h>

#include <algorithm>
#include <iterator>

#include "ring3/broker/sandbox.hpp"

namespace ring3::broker {
namespace {

struct Named {
    std::string_view name;
    int number;
};

#define R3_SYSCALL(name) Named{#name, SYS_##name},

// Every call a policy may name in allow_syscalls (a name outside this table is refused as a
// probable typo).
constexpr Named kTable
    [] = {R3_SYSCALL(accept) R3_SYSCALL(accept4) R3_SYSCALL(acct) R3_SYSCALL(add_key) R3_SYSCALL(
        bind) R3_SYSCALL(bpf) R3_SYSCALL(brk) R3_SYSCALL(capget) R3_SYSCALL(capset)
              R3_SYSCALL(chdir) R3_SYSCALL(chroot) R3_SYSCALL(clock_getres)
                  R3_SYSCALL(clock_gettime) R3_SYSCALL(clock_nanosleep) R3_SYSCALL(
                      clone) R3_SYSCALL(clone3)
                      R3_SYSCALL(
                          close) R3_SYSCALL(close_range)
                          R3_SYSCALL(connect) R3_SYSCALL(copy_file_range) R3_SYSCALL(delete_module) R3_SYSCALL(dup) R3_SYSCALL(
                              dup3) R3_SYSCALL(epoll_create1) R3_SYSCALL(epoll_ctl)
                              R3_SYSCALL(epoll_pwait) R3_SYSCALL(epoll_pwait2) R3_SYSCALL(
                                  eventfd2) R3_SYSCALL(execve) R3_SYSCALL(execveat)
                                  R3_SYSCALL(exit) R3_SYSCALL(exit_group) R3_SYSCALL(faccessat) R3_SYSCALL(faccessat2) R3_SYSCALL(fallocate) R3_SYSCALL(
                                      fchdir) R3_SYSCALL(fchmod)
                                      R3_SYSCALL(fchmodat) R3_SYSCALL(fchown) R3_SYSCALL(
                                          fchownat) R3_SYSCALL(fcntl) R3_SYSCALL(fdatasync)
                                          R3_SYSCALL(finit_module) R3_SYSCALL(flock) R3_SYSCALL(fstat) R3_SYSCALL(
                                              fstatfs) R3_SYSCALL(fsync) R3_SYSCALL(ftruncate)
                                              R3_SYSCALL(
                                                  futex) R3_SYSCALL(get_mempolicy)
                                                  R3_SYSCALL(get_robust_list) R3_SYSCALL(
                                                      getcwd) R3_SYSCALL(getdents64)
                                                      R3_SYSCALL(getegid) R3_SYSCALL(geteuid) R3_SYSCALL(getgid) R3_SYSCALL(getgroups) R3_SYSCALL(
                                                          getitimer) R3_SYSCALL(getpeername)
                                                          R3_SYSCALL(
                                                              getpgid) R3_SYSCALL(getpid)
                                                              R3_SYSCALL(
                                                                  getppid) R3_SYSCALL(getpriority)
                                                                  R3_SYSCALL(getrandom) R3_SYSCALL(getresgid) R3_SYSCALL(getresuid) R3_SYSCALL(getrlimit) R3_SYSCALL(getrusage) R3_SYSCALL(
                                                                      getsid)
                                                                      R3_SYSCALL(getsockname) R3_SYSCALL(getsockopt) R3_SYSCALL(gettid) R3_SYSCALL(gettimeofday) R3_SYSCALL(getuid) R3_SYSCALL(init_module) R3_SYSCALL(inotify_add_watch) R3_SYSCALL(inotify_init1) R3_SYSCALL(inotify_rm_watch) R3_SYSCALL(io_cancel) R3_SYSCALL(io_destroy) R3_SYSCALL(io_getevents) R3_SYSCALL(io_setup) R3_SYSCALL(io_submit) R3_SYSCALL(io_uring_enter) R3_SYSCALL(io_uring_register) R3_SYSCALL(io_uring_setup) R3_SYSCALL(ioctl) R3_SYSCALL(ioperm) R3_SYSCALL(
                                                                          iopl) R3_SYSCALL(ioprio_get) R3_SYSCALL(ioprio_set)
                                                                          R3_SYSCALL(kcmp) R3_SYSCALL(kexec_load) R3_SYSCALL(keyctl) R3_SYSCALL(
                                                                              kill) R3_SYSCALL(linkat) R3_SYSCALL(listen) R3_SYSCALL(lseek) R3_SYSCALL(madvise) R3_SYSCALL(mbind) R3_SYSCALL(membarrier) R3_SYSCALL(memfd_create) R3_SYSCALL(migrate_pages) R3_SYSCALL(mincore) R3_SYSCALL(mkdirat) R3_SYSCALL(mknodat) R3_SYSCALL(mlock) R3_SYSCALL(mlock2) R3_SYSCALL(mlockall) R3_SYSCALL(mmap) R3_SYSCALL(mount) R3_SYSCALL(move_pages) R3_SYSCALL(mprotect) R3_SYSCALL(mremap) R3_SYSCALL(msync) R3_SYSCALL(munlock)
                                                                              R3_SYSCALL(
                                                                                  munlockall) R3_SYSCALL(munmap)
                                                                                  R3_SYSCALL(
                                                                                      nanosleep) R3_SYSCALL(newfstatat)
                                                                                      R3_SYSCALL(
                                                                                          openat) R3_SYSCALL(openat2)
                                                                                          R3_SYSCALL(perf_event_open) R3_SYSCALL(
                                                                                              personality)
                                                                                              R3_SYSCALL(pidfd_getfd) R3_SYSCALL(pidfd_open) R3_SYSCALL(pidfd_send_signal) R3_SYSCALL(pipe2) R3_SYSCALL(pivot_root) R3_SYSCALL(ppoll) R3_SYSCALL(prctl) R3_SYSCALL(pread64) R3_SYSCALL(preadv) R3_SYSCALL(preadv2) R3_SYSCALL(prlimit64) R3_SYSCALL(process_vm_readv) R3_SYSCALL(process_vm_writev) R3_SYSCALL(pselect6) R3_SYSCALL(ptrace) R3_SYSCALL(pwrite64) R3_SYSCALL(pwritev) R3_SYSCALL(
                                                                                                  pwritev2) R3_SYSCALL(read)
                                                                                                  R3_SYSCALL(readlinkat) R3_SYSCALL(readv) R3_SYSCALL(reboot) R3_SYSCALL(recvfrom) R3_SYSCALL(recvmmsg) R3_SYSCALL(recvmsg) R3_SYSCALL(renameat) R3_SYSCALL(renameat2) R3_SYSCALL(request_key) R3_SYSCALL(restart_syscall) R3_SYSCALL(rseq) R3_SYSCALL(rt_sigaction) R3_SYSCALL(rt_sigpending) R3_SYSCALL(
                                                                                                      rt_sigprocmask) R3_SYSCALL(rt_sigqueueinfo) R3_SYSCALL(rt_sigreturn) R3_SYSCALL(rt_sigsuspend) R3_SYSCALL(rt_sigtimedwait) R3_SYSCALL(sched_get_priority_max) R3_SYSCALL(sched_get_priority_min) R3_SYSCALL(sched_getaffinity) R3_SYSCALL(sched_getparam) R3_SYSCALL(sched_getscheduler) R3_SYSCALL(sched_setaffinity) R3_SYSCALL(sched_setparam) R3_SYSCALL(sched_setscheduler) R3_SYSCALL(sched_yield) R3_SYSCALL(seccomp) R3_SYSCALL(sendfile) R3_SYSCALL(sendmmsg) R3_SYSCALL(sendmsg) R3_SYSCALL(sendto) R3_SYSCALL(set_mempolicy) R3_SYSCALL(set_robust_list) R3_SYSCALL(set_tid_address) R3_SYSCALL(setgid) R3_SYSCALL(setgroups) R3_SYSCALL(setitimer)
                                                                                                      R3_SYSCALL(setns) R3_SYSCALL(setpgid) R3_SYSCALL(setpriority) R3_SYSCALL(setregid) R3_SYSCALL(
                                                                                                          setresgid) R3_SYSCALL(setresuid) R3_SYSCALL(setreuid)
                                                                                                          R3_SYSCALL(
                                                                                                              setrlimit)
                                                                                                              R3_SYSCALL(
                                                                                                                  setsid)
                                                                                                                  R3_SYSCALL(
                                                                                                                      setsockopt)
                                                                                                                      R3_SYSCALL(
                                                                                                                          settimeofday)
                                                                                                                          R3_SYSCALL(
                                                                                                                              setuid)
                                                                                                                              R3_SYSCALL(
                                                                                                                                  shutdown) R3_SYSCALL(sigaltstack) R3_SYSCALL(signalfd4) R3_SYSCALL(socket) R3_SYSCALL(socketpair) R3_SYSCALL(splice) R3_SYSCALL(statfs) R3_SYSCALL(statx) R3_SYSCALL(swapoff) R3_SYSCALL(swapon) R3_SYSCALL(symlinkat) R3_SYSCALL(sync) R3_SYSCALL(syncfs)
                                                                                                                                  R3_SYSCALL(sysinfo) R3_SYSCALL(
                                                                                                                                      tee)
                                                                                                                                      R3_SYSCALL(
                                                                                                                                          tgkill)
                                                                                                                                          R3_SYSCALL(
                                                                                                                                              timer_create)
                                                                                                                                              R3_SYSCALL(timer_delete) R3_SYSCALL(timer_gettime) R3_SYSCALL(timer_settime) R3_SYSCALL(timerfd_create) R3_SYSCALL(timerfd_gettime) R3_SYSCALL(timerfd_settime) R3_SYSCALL(
                                                                                                                                                  times)
                                                                                                                                                  R3_SYSCALL(
                                                                                                                                                      tkill)
                                                                                                                                                      R3_SYSCALL(
                                                                                                                                                          truncate)
                                                                                                                                                          R3_SYSCALL(
                                                                                                                                                              umask)
                                                                                                                                                              R3_SYSCALL(umount2) R3_SYSCALL(uname) R3_SYSCALL(unlinkat) R3_SYSCALL(unshare) R3_SYSCALL(userfaultfd) R3_SYSCALL(
                                                                                                                                                                  utimensat)
                                                                                                                                                                  R3_SYSCALL(vmsplice) R3_SYSCALL(
                                                                                                                                                                      wait4)
                                                                                                                                                                      R3_SYSCALL(
                                                                                                                                                                          waitid)
                                                                                                                                                                          R3_SYSCALL(
                                                                                                                                                                              write)
                                                                                                                                                                              R3_SYSCALL(
                                                                                                                                                                                  writev)
#if defined(__x86_64__)
                                                                                                                                                                                  R3_SYSCALL(
                                                                                                                                                                                      access)
                                                                                                                                                                                      R3_SYSCALL(alarm) R3_SYSCALL(arch_prctl) R3_SYSCALL(chmod) R3_SYSCALL(
                                                                                                                                                                                          chown) R3_SYSCALL(creat) R3_SYSCALL(dup2) R3_SYSCALL(epoll_create) R3_SYSCALL(epoll_wait) R3_SYSCALL(eventfd) R3_SYSCALL(fork) R3_SYSCALL(futimesat) R3_SYSCALL(getdents) R3_SYSCALL(getpgrp) R3_SYSCALL(inotify_init) R3_SYSCALL(lchown) R3_SYSCALL(link) R3_SYSCALL(lstat) R3_SYSCALL(mkdir) R3_SYSCALL(mknod) R3_SYSCALL(open) R3_SYSCALL(pause) R3_SYSCALL(pipe) R3_SYSCALL(poll) R3_SYSCALL(readlink) R3_SYSCALL(rename) R3_SYSCALL(rmdir) R3_SYSCALL(select) R3_SYSCALL(signalfd) R3_SYSCALL(stat) R3_SYSCALL(symlink) R3_SYSCALL(sysfs)
                                                                                                                                                                                          R3_SYSCALL(time) R3_SYSCALL(unlink) R3_SYSCALL(uselib) R3_SYSCALL(utime) R3_SYSCALL(
                                                                                                                                                                                              utimes)
                                                                                                                                                                                              R3_SYSCALL(
                                                                                                                                                                                                  vfork)
#endif
};

#undef R3_SYSCALL

// What a driver needs: the dynamic loader and libc start-up, memory (mmap of the DMA memfd and
// of BARs, mlock), VFIO's ioctls, reads and writes of its descriptors, eventfds, epoll and
// timers for interrupts, threads, clocks, signals to itself, Unix sockets (ring3d's). Not
// there, among others: ptrace, mount and namespaces, set*id, kill of other processes, module
// loading, bpf, perf events, io_uring, keyrings, files created, renamed or removed.
constexpr std::string_view kDriverSet[] = {
    // descriptors
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "lseek",
    "close",
    "close_range",
    "fcntl",
    "dup",
    "dup3",
    "pipe2",
    "ioctl",
    "flock",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    // files the loader and libc open and look at (permissions decide the rest)
    "openat",
    "newfstatat",
    "fstat",
    "statx",
    "faccessat",
    "faccessat2",
    "readlinkat",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "statfs",
    "fstatfs",
    "umask",
    // memory
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "mincore",
    "msync",
    "brk",
    "memfd_create",
    "membarrier",
    "get_mempolicy",
    "set_mempolicy",
    "mbind",
    // threads and the process itself
    "futex",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "clone",
    "clone3",
    "execve",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "tgkill",
    "tkill",
    "getpid",
    "gettid",
    "getppid",
    "getpgid",
    "getsid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "getpriority",
    "times",
    "uname",
    "sysinfo",
    "prctl",
    "capget",
    "getrandom",
    "restart_syscall",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    // signals
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "rt_sigpending",
    "sigaltstack",
    // time
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_delete",
    "getitimer",
    "setitimer",
    // waiting on interrupts and sockets
    "eventfd2",
    "signalfd4",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "ppoll",
    "pselect6",
    // sockets (socket() itself: AF_UNIX only, checked by the filter)
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "shutdown",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
#if defined(__x86_64__)
    // the x86-64 originals of some of the above
    "open",
    "stat",
    "lstat",
    "access",
    "readlink",
    "getdents",
    "dup2",
    "pipe",
    "poll",
    "select",
    "epoll_create",
    "epoll_wait",
    "eventfd",
    "signalfd",
    "arch_prctl",
    "time",
    "alarm",
    "pause",
    "getpgrp",
#endif
};

}  // namespace

std::optional<int> syscall_number(std::string_view name) noexcept {
    const auto found = std::find_if(std::begin(kTable), std::end(kTable),
                                    [&](const Named& n) { return n.name == name; });
    if (found == std::end(kTable)) {
        return std::nullopt;
    }
    return found->number;
}

std::span<const std::string_view> driver_syscalls() noexcept {
    return kDriverSet;
}

}  // namespace ring3::broker
