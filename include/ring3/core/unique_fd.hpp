// UniqueFd: a move-only owner of a file descriptor, built by named constructors (after seastar's
// posix.hh). Closing happens exactly once, in the destructor or reset().
#pragma once

#include <string>
#include <utility>

namespace ring3 {

class UniqueFd {
  public:
    UniqueFd() noexcept = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        if (this != &other) {
            reset(other.release());
        }
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    // open(2) with O_CLOEXEC added; throws ring3::Error naming the path.
    static UniqueFd open(const std::string& path, int flags, unsigned mode = 0);

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept;

  private:
    int fd_ = -1;
};

}  // namespace ring3
