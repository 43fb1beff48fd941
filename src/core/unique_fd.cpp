#include "ring3/core/unique_fd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include "ring3/core/error.hpp"

namespace ring3 {

UniqueFd UniqueFd::open(const std::string& path, int flags, unsigned mode) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd < 0) {
        throw Error::from_errno("open", path);
    }
    return UniqueFd(fd);
}

void UniqueFd::reset(int fd) noexcept {
    if (fd_ >= 0) {
        ::close(fd_);
    }
    fd_ = fd;
}

}  // namespace ring3
