#include "ring3/core/cycle_clock.hpp"

#include <thread>

namespace ring3 {
namespace {

constexpr std::chrono::milliseconds kMinCalibrationInterval{10};

// A reading of both clocks on one CPU. The cycle counters of different CPUs need not agree (a
// TCG guest's vCPUs start theirs at different times, and Linux reports "TSCs unsynchronized"):
// the rate is the same everywhere, so the two samples of a calibration must come from one CPU.
// RDTSCP's auxiliary value is the CPU number Linux put there.
struct Sample {
    std::chrono::steady_clock::time_point time;
    std::uint64_t cycles = 0;
    unsigned cpu = 0;
    bool valid = false;
};

Sample take_sample() noexcept {
    Sample s;
#if defined(__x86_64__) || defined(__i386__)
    for (int attempt = 0; attempt < 8 && !s.valid; ++attempt) {
        unsigned before = 0;
        unsigned after = 0;
        const std::uint64_t c0 = __rdtscp(&before);
        s.time = std::chrono::steady_clock::now();
        const std::uint64_t c1 = __rdtscp(&after);
        s.cycles = c0 + (c1 - c0) / 2;
        s.cpu = before;
        s.valid = before == after;  // not moved to another CPU in between
    }
#else
    s.time = std::chrono::steady_clock::now();
    s.valid = true;
#endif
    return s;
}

// Immutable once taken (a function-local static, initialised thread-safely on first use).
const Sample& first_sample() noexcept {
    static const Sample sample = take_sample();
    return sample;
}

double rate(const Sample& a, const Sample& b) noexcept {
    const double ns = std::chrono::duration<double, std::nano>(b.time - a.time).count();
    return b.cycles > a.cycles ? ns / static_cast<double>(b.cycles - a.cycles) : 0.0;
}

}  // namespace

void CycleClock::begin_calibration() noexcept {
    (void)first_sample();
}

const CycleClock::Calibration& CycleClock::calibration() noexcept {
    static const Calibration value = [] {
        Calibration c;
#if defined(__x86_64__) || defined(__i386__)
        Sample first = first_sample();
        c.base_cycles = first.cycles;
        for (int attempt = 0; attempt < 16; ++attempt) {
            const auto elapsed = std::chrono::steady_clock::now() - first.time;
            if (elapsed < kMinCalibrationInterval) {
                std::this_thread::sleep_for(kMinCalibrationInterval - elapsed);
            }
            const Sample second = take_sample();
            if (first.valid && second.valid && second.cpu == first.cpu) {
                if (const double r = rate(first, second); r > 0) {
                    c.ns_per_cycle = r;
                    return c;
                }
            }
            first = take_sample();  // moved to another CPU: measure again here
        }
#endif
        return c;
    }();
    return value;
}

}  // namespace ring3
