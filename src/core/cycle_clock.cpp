#include "ring3/core/cycle_clock.hpp"

#include <thread>

namespace ring3 {

const CycleClock::Calibration& CycleClock::calibration() noexcept {
    // Immutable once computed: a function-local static, initialised thread-safely on first use.
    static const Calibration value = [] {
        Calibration c;
#if defined(__x86_64__) || defined(__i386__)
        const auto t0 = std::chrono::steady_clock::now();
        const std::uint64_t c0 = __rdtsc();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const auto t1 = std::chrono::steady_clock::now();
        const std::uint64_t c1 = __rdtsc();
        const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
        c.base_cycles = c0;
        c.ns_per_cycle = c1 > c0 ? ns / static_cast<double>(c1 - c0) : 1.0;
#endif
        return c;
    }();
    return value;
}

}  // namespace ring3
