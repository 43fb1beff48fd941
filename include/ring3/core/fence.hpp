// Asymmetric fences: a pair of full barriers where one side runs on every call of a hot path and
// the other only on a rare one (NVMe recovery against its queues' threads).
//
// The pattern is Dekker's: thread A stores "I am in" and loads "stop requested", thread B stores
// "stop requested" and loads "anyone in". Each side needs a store-load barrier between its
// store and its load. A full fence on x86 drains the store buffer, and on a hot path whose last
// store is a doorbell to a line another core polls, that waits for the line to cross over:
// hundreds of cycles per call. Linux's membarrier(2) with MEMBARRIER_CMD_PRIVATE_EXPEDITED makes
// the rare side pay instead: it runs a full barrier on every CPU that is running one of this
// process's threads, so the hot side needs only to stop the compiler from reordering.
//
// light_fence() on the hot side, heavy_fence() on the rare one. Where the kernel offers no
// membarrier (before 4.14, or a filter that refuses it), both are ordinary seq_cst fences.
#pragma once

#include <atomic>

namespace ring3 {

namespace detail {
// Set once, false -> true, by enable_asymmetric_fences(). A hot side that still reads false
// uses a full fence, which is right whatever the other side does.
extern std::atomic<bool> membarrier_registered;
}  // namespace detail

// Registers the process for expedited private membarriers (once; later calls return the first
// answer). Call before the threads that use light_fence() start their hot paths.
bool enable_asymmetric_fences() noexcept;

inline void light_fence() noexcept {
    if (detail::membarrier_registered.load(std::memory_order_relaxed)) {
        std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
}

// The rare side. It asks enable_asymmetric_fences() (initialised once, then a plain read), so
// it never falls back to a full fence while a hot side relies on the membarrier.
void heavy_fence() noexcept;

}  // namespace ring3
