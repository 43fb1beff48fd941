// The sandbox of a supervised driver (sandbox.hpp).
#include "ring3/broker/sandbox.hpp"

#include <fmt/core.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

#include "ring3/core/error.hpp"

namespace ring3::broker {
namespace {

#if defined(__x86_64__)
constexpr std::uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
#error "the seccomp filter knows x86-64 and aarch64 only"
#endif

// The low 32 bits of the first argument (seccomp_data.args[0], little-endian).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "args[0]'s low word is read at +0");
constexpr std::uint32_t kArg0Low = offsetof(seccomp_data, args);

sock_filter statement(std::uint16_t code, std::uint32_t k) {
    return BPF_STMT(code, k);
}
sock_filter jump(std::uint16_t code, std::uint32_t k, std::uint8_t jt, std::uint8_t jf) {
    return BPF_JUMP(code, k, jt, jf);
}

[[noreturn]] void fail(const char* step, const std::string& object = "the driver") {
    throw Error::from_errno(step, object);
}

void cover(const char* path) {
    struct stat st {};
    if (::stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return;  // nothing to hide
    }
    if (::mount("ring3-sandbox", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "size=4k,mode=0555") != 0) {
        fail("cover with an empty tmpfs", path);
    }
}

}  // namespace

std::vector<sock_filter> seccomp_program(const std::vector<int>& allowed, bool log_only) {
    const std::uint32_t deny = log_only ? SECCOMP_RET_LOG : SECCOMP_RET_ERRNO | EPERM;
    std::vector<sock_filter> p;
    // Another architecture's calling convention (e.g. int 0x80 on x86-64) numbers calls
    // differently: nothing of it is allowed.
    p.push_back(statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
    p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
    p.push_back(statement(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    p.push_back(statement(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
#if defined(__x86_64__)
    // x32 calls (bit 30) are the same calls under other numbers: denied.
    p.push_back(jump(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
    p.push_back(statement(BPF_RET | BPF_K, deny));
#endif
    // socket(domain, ...): AF_UNIX only.
    p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 4));
    p.push_back(statement(BPF_LD | BPF_W | BPF_ABS, kArg0Low));
    p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1));
    p.push_back(statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    p.push_back(statement(BPF_RET | BPF_K, deny));
    // One test and one return per allowed call: no jump ever needs more than 8 bits.
    for (const int nr : allowed) {
        if (nr == SYS_socket) {
            continue;
        }
        p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0, 1));
        p.push_back(statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    p.push_back(statement(BPF_RET | BPF_K, deny));
    return p;
}

void enter_sandbox(const SandboxSpec& spec) {
    const bool confine = spec.mode != SandboxMode::off;
    std::vector<int> allowed;
    if (confine) {
        for (const std::string_view name : driver_syscalls()) {
            if (const auto nr = syscall_number(name)) {
                allowed.push_back(*nr);
            }
        }
        for (const std::string& name : spec.allow_syscalls) {
            const auto nr = syscall_number(name);
            if (!nr) {
                throw Error::invalid("sandbox", "the driver",
                                     fmt::format("unknown system call '{}'", name), EINVAL);
            }
            allowed.push_back(*nr);
        }
        // 1. Namespaces of its own; the device paths covered (it has its descriptors).
        if (::unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) != 0) {
            fail("unshare mount, network and IPC namespaces for");
        }
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
            fail("make the mounts private for");
        }
        cover("/sys");
        cover("/dev/vfio");
    }
    // 2. What it may pin.
    const rlimit memlock{spec.memlock_bytes, spec.memlock_bytes};
    if (::setrlimit(RLIMIT_MEMLOCK, &memlock) != 0) {
        fail("set RLIMIT_MEMLOCK of");
    }
    // 3. Its user, no capabilities.
    if (::setgroups(0, nullptr) != 0) {
        fail("drop the supplementary groups of");
    }
    if (::setresgid(spec.gid, spec.gid, spec.gid) != 0) {
        fail("set the group of", fmt::format("the driver (gid {})", spec.gid));
    }
    if (confine) {
        for (int cap = 0; cap <= 63; ++cap) {
            if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
                fail("drop a capability from the bounding set of");
            }
        }
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
            fail("clear the ambient capabilities of");
        }
    }
    if (::setresuid(spec.uid, spec.uid, spec.uid) != 0) {
        fail("set the user of", fmt::format("the driver (uid {})", spec.uid));
    }
    if (!confine) {
        return;
    }
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fail("set no_new_privs on");
    }
    // 4. The filter.
    std::vector<sock_filter> program = seccomp_program(allowed, spec.mode == SandboxMode::log);
    const sock_fprog fprog{static_cast<unsigned short>(program.size()), program.data()};
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0) {
        fail("install the seccomp filter of");
    }
}

}  // namespace ring3::broker
