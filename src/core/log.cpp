#include "ring3/core/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace ring3 {
namespace {

LogLevel level_from_environment() noexcept {
    const char* value = std::getenv("RING3_LOG");
    if (value == nullptr) {
        return LogLevel::warn;
    }
    const std::string_view v(value);
    if (v == "error")
        return LogLevel::error;
    if (v == "info")
        return LogLevel::info;
    if (v == "debug")
        return LogLevel::debug;
    return LogLevel::warn;
}

// The threshold is the one piece of process-wide state the library keeps: it is set once from
// the environment and read lock-free by every call.
std::atomic<LogLevel>& threshold() noexcept {
    static std::atomic<LogLevel> level{level_from_environment()};
    return level;
}

constexpr std::string_view prefix(LogLevel level) noexcept {
    switch (level) {
        case LogLevel::error:
            return "ring3: error: ";
        case LogLevel::warn:
            return "ring3: warning: ";
        case LogLevel::info:
            return "ring3: ";
        case LogLevel::debug:
            return "ring3: debug: ";
    }
    return "ring3: ";
}

}  // namespace

LogLevel log_level() noexcept {
    return threshold().load(std::memory_order_relaxed);
}

void set_log_level(LogLevel level) noexcept {
    threshold().store(level, std::memory_order_relaxed);
}

void log_write(LogLevel level, std::string_view message) noexcept {
    try {
        std::string line(prefix(level));
        line += message;
        line += '\n';
        // One write(2) per line keeps lines from concurrent threads whole.
        [[maybe_unused]] const auto n = ::write(STDERR_FILENO, line.data(), line.size());
    } catch (...) {
        // Logging must never throw; out of memory here loses the line only.
    }
}

}  // namespace ring3
