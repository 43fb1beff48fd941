// CycleClock: a std::chrono clock over the CPU's cycle counter, scaled to nanoseconds by a
// one-time calibration against steady_clock.
//
// Why: the data path must not make system calls, and timing it must not either. On real hardware
// steady_clock is a vDSO read of the TSC, but a guest on an emulator often has no usable fast
// clock source (QEMU TCG marks the TSC unstable, the kernel falls back to the HPET, and every
// clock_gettime becomes a system call plus an emulated device read). Reading the counter is one
// instruction everywhere. Counters of different CPUs may disagree by a little: use it for
// intervals measured on one thread, not for ordering events across threads.
#pragma once

#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace ring3 {

struct CycleClock {
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<CycleClock>;
    static constexpr bool is_steady = true;

    static time_point now() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        const Calibration& c = calibration();
        const auto cycles = static_cast<double>(__rdtsc() - c.base_cycles);
        return time_point(duration(static_cast<rep>(cycles * c.ns_per_cycle)));
#else
        return time_point(std::chrono::duration_cast<duration>(
            std::chrono::steady_clock::now().time_since_epoch()));
#endif
    }

    // The counter's rate is measured between two samples of (steady_clock, counter) at least
    // 10 ms apart: the first is taken by begin_calibration() (call it early, at process start,
    // and the measurement costs nothing later) or else at the first use; the second at the first
    // use, which sleeps only for what is left of the 10 ms. Once per process.
    static void begin_calibration() noexcept;
    // Completes the calibration now (so the wait, if any, stays out of the first measurement).
    static void calibrate() noexcept {
        (void)calibration();
    }

  private:
    struct Calibration {
        std::uint64_t base_cycles = 0;
        double ns_per_cycle = 1.0;
    };
    static const Calibration& calibration() noexcept;
};

}  // namespace ring3
