#include "ring3/core/file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "ring3/core/error.hpp"
#include "ring3/core/unique_fd.hpp"

namespace ring3 {
namespace {

// Reads `fd` to its end, straight into the string: sysfs returns an attribute in one read, and
// pci.ids (about 1.4 MB) takes a few dozen.
std::string read_to_end(const UniqueFd& fd, const std::string& path) {
    constexpr std::size_t kChunk = 64 * 1024;
    std::string text;
    std::size_t used = 0;
    for (;;) {
        if (text.size() - used < kChunk) {
            text.resize(used + kChunk);
        }
        const ssize_t n = ::read(fd.get(), text.data() + used, text.size() - used);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw Error::from_errno("read", path);
        }
        if (n == 0) {
            text.resize(used);
            return text;
        }
        used += static_cast<std::size_t>(n);
    }
}

}  // namespace

std::string read_file(const std::string& path) {
    return read_to_end(UniqueFd::open(path, O_RDONLY), path);
}

std::optional<std::string> read_optional_file(const std::string& path) {
    const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (raw < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return std::nullopt;
        }
        throw Error::from_errno("open", path);
    }
    return read_to_end(UniqueFd(raw), path);
}

}  // namespace ring3
