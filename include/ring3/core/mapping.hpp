// Mapping: a move-only owner of an mmap(2)ed range. BARs, DMA arenas and config windows all come
// and go through it, so nothing is ever unmapped twice or leaked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace ring3 {

class Mapping {
  public:
    Mapping() noexcept = default;
    Mapping(void* addr, std::size_t size) noexcept : addr_(addr), size_(size) {}
    Mapping(Mapping&& other) noexcept;
    Mapping& operator=(Mapping&& other) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() { reset(); }

    // mmap(2) of `fd`; throws ring3::Error whose object is `what` (e.g. the sysfs resource path).
    static Mapping map(int fd, std::size_t size, int prot, int flags, std::uint64_t offset,
                       const std::string& what);

    void* get() const noexcept { return addr_; }
    std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
    std::size_t size() const noexcept { return size_; }
    std::span<std::byte> bytes() const noexcept { return {data(), size_}; }
    explicit operator bool() const noexcept { return addr_ != nullptr; }
    void reset() noexcept;

  private:
    void* addr_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace ring3
