#include "ring3/dma/pool.hpp"

#include <fmt/core.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "poison.hpp"
#include "ring3/core/error.hpp"

namespace ring3::dma {

// ---- DmaBuffer ----

DmaBuffer::DmaBuffer(DmaBuffer&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      iova_(std::exchange(other.iova_, 0)) {}

DmaBuffer& DmaBuffer::operator=(DmaBuffer&& other) noexcept {
    if (this != &other) {
        reset();
        pool_ = std::exchange(other.pool_, nullptr);
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        iova_ = std::exchange(other.iova_, 0);
    }
    return *this;
}

void DmaBuffer::reset() noexcept {
    if (pool_ != nullptr && data_ != nullptr) {
        pool_->release(data_, size_);
    }
    pool_ = nullptr;
    data_ = nullptr;
    size_ = 0;
    iova_ = 0;
}

// ---- DmaPool ----

DmaPool::DmaPool(DmaArena& arena, std::size_t space_index)
    : arena_(arena), space_index_(space_index) {
    if (space_index >= arena.space_count()) {
        throw Error::invalid(
            "create DMA pool", "arena",
            fmt::format("IOVA space {} is not attached to the arena ({} attached); "
                        "attach the device's IOVA space first",
                        space_index, arena.space_count()));
    }
}

DmaPool::~DmaPool() {
    if (live_ != 0) {
        // A DmaBuffer outliving its pool would free into a dead object: a broken invariant.
        std::fprintf(stderr, "ring3: DmaPool destroyed with %zu live buffers\n", live_);
        std::abort();
    }
    for (const auto& [offset, size] : free_) {
        unpoison(arena_.base() + offset, size);
    }
}

void DmaPool::add_free(std::size_t offset, std::size_t size) {
    auto next = free_.lower_bound(offset);
    if (next != free_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == offset) {
            offset = prev->first;
            size += prev->second;
            free_.erase(prev);
        }
    }
    if (next != free_.end() && offset + size == next->first) {
        size += next->second;
        free_.erase(next);
    }
    free_.emplace(offset, size);
}

DmaBuffer DmaPool::allocate(std::size_t size, std::size_t alignment) {
    const std::size_t contiguous = arena_.max_contiguous();
    if (size == 0 || alignment == 0 || !std::has_single_bit(alignment)) {
        throw Error::invalid(
            "allocate DMA memory", fmt::format("{} bytes", size),
            fmt::format("size must be non-zero and alignment {} a power of two", alignment));
    }
    if (size > contiguous || alignment > contiguous) {
        throw Error::invalid(
            "allocate DMA memory", fmt::format("{} bytes aligned to {}", size, alignment),
            fmt::format("larger than {} bytes, the most the device sees contiguous in this arena",
                        contiguous),
            ENOMEM);
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
        for (const auto& [offset, length] : free_) {
            std::size_t start = (offset + alignment - 1) & ~(alignment - 1);
            // Never cross a granule: move to the next one when the object would straddle it.
            if ((start / contiguous) != ((start + size - 1) / contiguous)) {
                start = (start / contiguous + 1) * contiguous;
            }
            if (start + size > offset + length) {
                continue;
            }
            const std::size_t range_offset = offset;
            const std::size_t range_length = length;
            free_.erase(range_offset);
            if (start > range_offset) {
                free_.emplace(range_offset, start - range_offset);
            }
            if (start + size < range_offset + range_length) {
                free_.emplace(start + size, range_offset + range_length - (start + size));
            }
            std::byte* data = arena_.base() + start;
            unpoison(data, size);
            std::memset(data, 0, size);
            in_use_ += size;
            ++live_;
            return DmaBuffer(this, data, size, arena_.iova(data, space_index_));
        }
        if (attempt == 0) {
            const ChunkView chunk = arena_.grow();
            poison(chunk.cpu, chunk.size);
            add_free(chunk.memfd_offset, chunk.size);
        }
    }
    throw Error::invalid("allocate DMA memory", fmt::format("{} bytes", size),
                         "no room even in a new chunk", ENOMEM);
}

void DmaPool::release(std::byte* data, std::size_t size) noexcept {
    poison(data, size);
    in_use_ -= size;
    --live_;
    try {
        add_free(static_cast<std::size_t>(data - arena_.base()), size);
    } catch (...) {
        // Out of memory for the free-list node: the range is lost to this pool, not corrupted.
    }
}

// ---- BufferPool ----

BufferPool::BufferPool(DmaPool& pool, std::size_t buffer_size, std::uint32_t count,
                       std::size_t alignment)
    : buffer_size_(buffer_size) {
    if (buffer_size == 0 || count == 0 || !std::has_single_bit(alignment)) {
        throw Error::invalid("create buffer pool", fmt::format("{} x {} bytes", count, buffer_size),
                             "size and count must be non-zero, alignment a power of two");
    }
    stride_ = (buffer_size + alignment - 1) & ~(alignment - 1);
    const std::size_t block_size = pool.arena().max_contiguous();
    if (stride_ > block_size) {
        throw Error::invalid("create buffer pool", fmt::format("{} x {} bytes", count, buffer_size),
                             fmt::format("a buffer is larger than {} bytes, the most the device "
                                         "sees contiguous",
                                         block_size));
    }
    const std::size_t per_block = block_size / stride_;
    addresses_.reserve(count);
    iovas_.reserve(count);
    while (addresses_.size() < count) {
        const std::size_t in_block = std::min<std::size_t>(per_block, count - addresses_.size());
        DmaBuffer block = pool.allocate(in_block * stride_, std::max(alignment, std::size_t{64}));
        for (std::size_t i = 0; i < in_block; ++i) {
            addresses_.push_back(block.data() + i * stride_);
            iovas_.push_back(block.iova() + i * stride_);
        }
        blocks_.push_back(std::move(block));
    }
    free_.resize(count);
    in_use_.assign(count, 0);
    for (std::uint32_t i = 0; i < count; ++i) {
        free_[i] = count - 1 - i;  // hand out index 0 first
        poison(addresses_[i], stride_);
    }
    top_ = count;
}

bool BufferPool::get(Buffer& out) noexcept {
    if (top_ == 0) {
        return false;
    }
    const std::uint32_t index = free_[--top_];
    in_use_[index] = 1;
    unpoison(addresses_[index], stride_);
    out = Buffer{addresses_[index], iovas_[index], index};
    return true;
}

void BufferPool::put(const Buffer& buffer) noexcept {
    if (buffer.index >= iovas_.size() || addresses_[buffer.index] != buffer.data) {
        std::fprintf(stderr, "ring3: put of a DMA buffer this pool did not hand out (index %u)\n",
                     buffer.index);
        std::abort();
    }
    if (in_use_[buffer.index] == 0) {
        std::fprintf(stderr, "ring3: double free of DMA buffer %u (%p)\n", buffer.index,
                     static_cast<void*>(buffer.data));
        std::abort();
    }
    in_use_[buffer.index] = 0;
    poison(buffer.data, stride_);
    free_[top_++] = buffer.index;
}

}  // namespace ring3::dma
