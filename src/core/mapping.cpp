#include "ring3/core/mapping.hpp"

#include <sys/mman.h>

#include <utility>

#include "ring3/core/error.hpp"

namespace ring3 {

Mapping::Mapping(Mapping&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
    if (this != &other) {
        reset();
        addr_ = std::exchange(other.addr_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

Mapping Mapping::map(int fd, std::size_t size, int prot, int flags, std::uint64_t offset,
                     const std::string& what) {
    void* addr = ::mmap(nullptr, size, prot, flags, fd, static_cast<off_t>(offset));
    if (addr == MAP_FAILED) {
        throw Error::from_errno("mmap", what);
    }
    return Mapping(addr, size);
}

void Mapping::reset() noexcept {
    if (addr_ != nullptr) {
        ::munmap(addr_, size_);
    }
    addr_ = nullptr;
    size_ = 0;
}

}  // namespace ring3
