// Timeline: named steps of a start-up and how long each took, recorded by the code doing the work
// and printed by tools (`ring3 perf blk --verbose`). A handful of steady_clock reads per run: for
// control paths, never the data path.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace ring3 {

class Timeline {
  public:
    using Clock = std::chrono::steady_clock;
    struct Step {
        std::string name;
        std::chrono::nanoseconds duration{0};
    };

    Timeline() : start_(Clock::now()), last_(start_) {}

    // The time since the previous mark (or since construction) was spent on `step`.
    void mark(std::string step) {
        const auto now = Clock::now();
        steps_.push_back(Step{std::move(step), now - last_});
        last_ = now;
    }
    const std::vector<Step>& steps() const noexcept { return steps_; }
    Clock::time_point start() const noexcept { return start_; }
    std::chrono::nanoseconds total() const noexcept { return last_ - start_; }

  private:
    Clock::time_point start_;
    Clock::time_point last_;
    std::vector<Step> steps_;
};

// For code that takes an optional timeline.
inline void mark(Timeline* timeline, const char* step) {
    if (timeline != nullptr) {
        timeline->mark(step);
    }
}

}  // namespace ring3
