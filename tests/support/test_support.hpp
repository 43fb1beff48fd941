// Helpers shared by the unit tests and the guest test programs.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include "ring3/core/error.hpp"

namespace ring3::testing {

// The message of the ring3::Error that `action` throws, or "no error" when it returns. Other
// exceptions are not caught: the test fails on them.
inline std::string error_of(const std::function<void()>& action) {
    try {
        action();
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

// The same, and the error must carry `expected_errno`; returning without one fails the test too.
inline std::string error_of(const std::function<void()>& action, int expected_errno) {
    try {
        action();
    } catch (const Error& e) {
        EXPECT_EQ(e.errnum(), expected_errno) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "no ring3::Error thrown";
    return "no error";
}

// A variable the guest case script must set (tests/guest/cases); a missing one fails the test,
// it never skips it.
inline std::string required_env(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') {
        ADD_FAILURE() << name << " is not set by the guest case script";
        return "unset";
    }
    return value;
}

// A fresh directory under the system's temporary directory ("<prefix>-XXXXXX", made by
// mkdtemp), removed with everything in it when the object goes.
class TempDir {
  public:
    explicit TempDir(std::string_view prefix = "ring3-test") {
        std::string pattern =
            (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
        if (::mkdtemp(pattern.data()) == nullptr) {
            throw Error::from_errno("mkdtemp", pattern);
        }
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const noexcept { return path_; }

  private:
    std::filesystem::path path_;
};

// Writes `text` to `path` (replacing the file), creating the directories above it.
inline void write_file(const std::filesystem::path& path, std::string_view text) {
    std::filesystem::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
}

}  // namespace ring3::testing
