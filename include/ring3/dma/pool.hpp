// DmaPool and BufferPool: the two allocators over a DmaArena (DESIGN.md, "DMA memory").
//
// DmaPool serves long-lived, aligned objects a device reads or writes (queues, rings, PRP lists)
// on the control path. BufferPool serves fixed-size buffers (packets, blocks) on the data path: a
// free stack of precomputed (CPU address, IOVA) pairs, owned by one queue, with no lock, no
// syscall and no heap allocation per buffer.
//
// Both poison free memory for AddressSanitizer, so a driver that touches a DMA buffer after
// giving it back, or gives it back twice, is reported like a heap bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "ring3/dma/arena.hpp"

namespace ring3::dma {

class DmaPool;

// One allocation from a DmaPool: a CPU view and the device's address for it. Move-only; freed
// when destroyed.
class DmaBuffer {
  public:
    DmaBuffer() noexcept = default;
    DmaBuffer(DmaBuffer&& other) noexcept;
    DmaBuffer& operator=(DmaBuffer&& other) noexcept;
    DmaBuffer(const DmaBuffer&) = delete;
    DmaBuffer& operator=(const DmaBuffer&) = delete;
    ~DmaBuffer() { reset(); }

    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    std::span<std::byte> bytes() const noexcept { return {data_, size_}; }
    std::uint64_t iova() const noexcept { return iova_; }
    template <typename T>
    T* as() const noexcept {
        return reinterpret_cast<T*>(data_);
    }
    explicit operator bool() const noexcept { return data_ != nullptr; }
    void reset() noexcept;

  private:
    friend class DmaPool;
    DmaBuffer(DmaPool* pool, std::byte* data, std::size_t size, std::uint64_t iova) noexcept
        : pool_(pool), data_(data), size_(size), iova_(iova) {}

    DmaPool* pool_ = nullptr;
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::uint64_t iova_ = 0;
};

class DmaPool {
  public:
    // Addresses are given for the arena's attached space `space_index`.
    explicit DmaPool(DmaArena& arena, std::size_t space_index = 0);
    DmaPool(const DmaPool&) = delete;
    DmaPool& operator=(const DmaPool&) = delete;
    ~DmaPool();

    // Zeroed memory of `size` bytes aligned to `alignment` (a power of two), never crossing a
    // translation granule of any space the arena is attached to, so the device sees it contiguous.
    // Grows the arena when needed. Throws ring3::Error when it cannot (too large, arena full).
    DmaBuffer allocate(std::size_t size, std::size_t alignment = 64);

    DmaArena& arena() const noexcept { return arena_; }
    std::size_t space_index() const noexcept { return space_index_; }
    std::size_t bytes_in_use() const noexcept { return in_use_; }

  private:
    friend class DmaBuffer;
    void release(std::byte* data, std::size_t size) noexcept;
    void add_free(std::size_t offset, std::size_t size);

    DmaArena& arena_;
    std::size_t space_index_;
    std::size_t in_use_ = 0;
    std::size_t live_ = 0;
    std::map<std::size_t, std::size_t> free_;  // arena offset -> length, coalesced
};

// A buffer handed out by a BufferPool.
struct Buffer {
    std::byte* data = nullptr;
    std::uint64_t iova = 0;
    std::uint32_t index = 0;  // stable id, for rings that carry an id per descriptor
};

class BufferPool {
  public:
    // `count` buffers of `buffer_size` bytes, each aligned to `alignment` and within one granule.
    BufferPool(DmaPool& pool, std::size_t buffer_size, std::uint32_t count,
               std::size_t alignment = 64);
    BufferPool(const BufferPool&) = delete;
    BufferPool& operator=(const BufferPool&) = delete;

    // Takes a free buffer; false when none is left. O(1), noexcept, no heap, no syscall.
    bool get(Buffer& out) noexcept;
    // Gives a buffer back. Returning a buffer twice, or one this pool did not hand out, is a bug
    // in the caller: it aborts with a message naming the buffer.
    void put(const Buffer& buffer) noexcept;
    void put(std::uint32_t index) noexcept { put(buffer(index)); }

    Buffer buffer(std::uint32_t index) const noexcept {
        return Buffer{addresses_[index], iovas_[index], index};
    }
    std::uint32_t available() const noexcept { return top_; }
    std::uint32_t capacity() const noexcept { return static_cast<std::uint32_t>(iovas_.size()); }
    std::size_t buffer_size() const noexcept { return buffer_size_; }

  private:
    std::size_t buffer_size_;
    std::size_t stride_;
    std::vector<DmaBuffer> blocks_;      // granule-sized DmaPool allocations holding the buffers
    std::vector<std::byte*> addresses_;  // per buffer, so a look-up is one load
    std::vector<std::uint64_t> iovas_;
    std::vector<std::uint32_t> free_;  // stack of free indexes
    std::vector<std::uint8_t> in_use_;
    std::uint32_t top_ = 0;
};

}  // namespace ring3::dma
