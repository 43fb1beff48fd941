// A small leveled logger to stderr. The threshold comes from the RING3_LOG environment variable
// (error, warn, info, debug; default warn) and can be set by a program with set_log_level().
#pragma once

#include <fmt/core.h>

#include <string_view>

namespace ring3 {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3 };

LogLevel log_level() noexcept;
void set_log_level(LogLevel level) noexcept;
void log_write(LogLevel level, std::string_view message) noexcept;

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
    if (level <= log_level()) {
        log_write(level, fmt::format(format, std::forward<Args>(args)...));
    }
}

template <typename... Args>
void log_error(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::error, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_warn(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::warn, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_info(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::info, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_debug(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::debug, format, std::forward<Args>(args)...);
}

}  // namespace ring3
