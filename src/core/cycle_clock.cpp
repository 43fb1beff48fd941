#include "ring3/core/cycle_clock.hpp"

#include <thread>

namespace ring3 {
namespace {

constexpr std::chrono::milliseconds kMinCalibrationInterval{10};

struct Sample {
    std::chrono::steady_clock::time_point time;
    std::uint64_t cycles = 0;
};

Sample take_sample() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    return Sample{std::chrono::steady_clock::now(), __rdtsc()};
#else
    return Sample{std::chrono::steady_clock::now(), 0};
#endif
}

// Immutable once taken (a function-local static, initialised thread-safely on first use).
const Sample& first_sample() noexcept {
    static const Sample sample = take_sample();
    return sample;
}

}  // namespace

void CycleClock::begin_calibration() noexcept {
    (void)first_sample();
}

const CycleClock::Calibration& CycleClock::calibration() noexcept {
    static const Calibration value = [] {
        Calibration c;
#if defined(__x86_64__) || defined(__i386__)
        const Sample& first = first_sample();
        const auto elapsed = std::chrono::steady_clock::now() - first.time;
        if (elapsed < kMinCalibrationInterval) {
            std::this_thread::sleep_for(kMinCalibrationInterval - elapsed);
        }
        const Sample second = take_sample();
        const double ns =
            std::chrono::duration<double, std::nano>(second.time - first.time).count();
        c.base_cycles = first.cycles;
        c.ns_per_cycle = second.cycles > first.cycles
                             ? ns / static_cast<double>(second.cycles - first.cycles)
                             : 1.0;
#endif
        return c;
    }();
    return value;
}

}  // namespace ring3
