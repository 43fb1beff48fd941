// Asymmetric fences over membarrier(2) (fence.hpp).
#include "ring3/core/fence.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ring3 {

namespace detail {
std::atomic<bool> membarrier_registered{false};
}

namespace {

long membarrier(int command) noexcept {
    return ::syscall(SYS_membarrier, command, 0, 0);
}

bool register_once() noexcept {
    const long supported = membarrier(MEMBARRIER_CMD_QUERY);
    if (supported < 0 || (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0 ||
        (supported & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0) {
        return false;
    }
    return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
}

}  // namespace

bool enable_asymmetric_fences() noexcept {
    static const bool registered = [] {
        const bool ok = register_once();
        // Hot sides read the atomic; heavy_fence() reads `registered`, whose initialisation
        // every caller sees complete.
        detail::membarrier_registered.store(ok, std::memory_order_relaxed);
        return ok;
    }();
    return registered;
}

void heavy_fence() noexcept {
    // Once registered the command does not fail (its errors are for unregistered callers and
    // kernels without it); the fence below is for processes that never registered.
    if (enable_asymmetric_fences() && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) {
        return;
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace ring3
