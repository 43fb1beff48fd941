#include "ring3/dma/arena.hpp"

#include <fmt/core.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"

namespace ring3::dma {
namespace {

constexpr std::size_t kHugePageSize = std::size_t{2} << 20;
constexpr std::size_t kSmallPageSize = 4096;

UniqueFd create_memfd(const std::string& name, bool huge) {
    unsigned flags = MFD_CLOEXEC;
    if (huge) {
        flags |= MFD_HUGETLB | MFD_HUGE_2MB;
    }
    const int fd = ::memfd_create(name.c_str(), flags);
    if (fd < 0) {
        throw Error::from_errno(huge ? "memfd_create (hugetlb)" : "memfd_create", name);
    }
    return UniqueFd(fd);
}

// memfd_create(MFD_HUGETLB) and ftruncate succeed with no hugepage reserved; only mapping the
// memory fails. So the probe maps one page with MAP_POPULATE and gives the file back its size 0.
bool huge_pages_usable(int memfd) {
    if (::ftruncate(memfd, static_cast<off_t>(kHugePageSize)) != 0) {
        return false;
    }
    void* probe =
        ::mmap(nullptr, kHugePageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
    const bool usable = probe != MAP_FAILED;
    if (usable) {
        ::munmap(probe, kHugePageSize);
    }
    [[maybe_unused]] const int rc = ::ftruncate(memfd, 0);
    return usable;
}

}  // namespace

std::unique_ptr<DmaArena> DmaArena::create(const ArenaOptions& options) {
    const auto invalid = [&](const std::string& why) {
        return Error::invalid("create DMA arena", options.name, why);
    };
    if (options.chunk_size == 0 || !std::has_single_bit(options.chunk_size)) {
        throw invalid(fmt::format("chunk size {} is not a power of two", options.chunk_size));
    }
    if (options.max_size < options.chunk_size || options.max_size % options.chunk_size != 0) {
        throw invalid(fmt::format("maximum size {} is not a multiple of the chunk size {}",
                                  options.max_size, options.chunk_size));
    }

    UniqueFd memfd;
    std::size_t page_size = kSmallPageSize;
    ArenaOptions effective = options;
    if (options.huge_pages != HugePages::never) {
        UniqueFd huge = create_memfd(options.name, true);
        if (huge_pages_usable(huge.get())) {
            memfd = std::move(huge);
            page_size = kHugePageSize;
            // A chunk is whole hugepages: a smaller chunk size is rounded up, and the
            // reservation with it.
            effective.chunk_size = std::max(options.chunk_size, kHugePageSize);
            effective.max_size = (options.max_size + effective.chunk_size - 1) /
                                 effective.chunk_size * effective.chunk_size;
        }
    }
    if (!memfd) {
        if (options.huge_pages == HugePages::required) {
            throw Error::invalid("create DMA arena", options.name,
                                 "hugepages required but none can be mapped; reserve some "
                                 "with `echo N > /proc/sys/vm/nr_hugepages`",
                                 ENOMEM);
        }
        memfd = create_memfd(options.name, false);
    }

    // Reserve the whole range, aligned to the page size, so chunks land at fixed places.
    const std::size_t reserve_size = effective.max_size + page_size;
    void* raw = ::mmap(nullptr, reserve_size, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        throw Error::from_errno("reserve address space for DMA arena", options.name);
    }
    Mapping reservation(raw, reserve_size);
    return std::unique_ptr<DmaArena>(
        new DmaArena(std::move(memfd), std::move(reservation), page_size, effective));
}

DmaArena::DmaArena(UniqueFd memfd, Mapping reservation, std::size_t page_size,
                   const ArenaOptions& options)
    : memfd_(std::move(memfd)),
      reservation_(std::move(reservation)),
      page_size_(page_size),
      chunk_size_(options.chunk_size),
      name_(options.name) {
    const auto raw = reinterpret_cast<std::uintptr_t>(reservation_.get());
    base_ = reinterpret_cast<std::byte*>((raw + page_size_ - 1) & ~(page_size_ - 1));
}

DmaArena::~DmaArena() {
    for (auto& space : spaces_) {
        if (space.space != nullptr) {
            for (std::size_t i = 0; i < chunks_; ++i) {
                unmap_chunk(space, i);
            }
        }
    }
    // Unmapping the reservation removes the chunks mapped inside it.
}

ChunkView DmaArena::chunk(std::size_t index) const noexcept {
    const std::size_t offset = index * chunk_size_;
    return ChunkView{base_ + offset, chunk_size_, memfd_.get(), offset, page_size_};
}

std::size_t DmaArena::max_contiguous() const noexcept {
    std::size_t contiguous = chunk_size_;
    for (const auto& space : spaces_) {
        if (space.space != nullptr && space.granule_mask + 1 < contiguous) {
            contiguous = space.granule_mask + 1;
        }
    }
    return contiguous;
}

bool DmaArena::contains(const void* cpu, std::size_t size) const noexcept {
    const auto* p = static_cast<const std::byte*>(cpu);
    return p >= base_ && size <= this->size() &&
           static_cast<std::size_t>(p - base_) <= this->size() - size;
}

ChunkView DmaArena::grow() {
    const std::size_t reserved = reservation_.size() - page_size_;
    if ((chunks_ + 1) * chunk_size_ > reserved) {
        throw Error::invalid("grow DMA arena", name_,
                             fmt::format("full: {} chunks of {} bytes", chunks_, chunk_size_),
                             ENOMEM);
    }
    const std::size_t offset = chunks_ * chunk_size_;
    if (::ftruncate(memfd_.get(), static_cast<off_t>(offset + chunk_size_)) != 0) {
        throw Error::from_errno("grow DMA arena memfd", name_);
    }
    void* at =
        ::mmap(base_ + offset, chunk_size_, PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_FIXED | MAP_POPULATE, memfd_.get(), static_cast<off_t>(offset));
    if (at == MAP_FAILED) {
        const int err = errno;
        [[maybe_unused]] const int rc = ::ftruncate(memfd_.get(), static_cast<off_t>(offset));
        throw Error("map DMA arena chunk", name_, err,
                    huge_pages() ? "no free hugepage (see /proc/meminfo HugePages_Free)" : "");
    }
    // Pinning: hugetlb pages are never swapped or migrated; small pages are locked so they stay
    // resident (the IOMMU pins them anyway when VFIO maps them).
    if (!huge_pages() && ::mlock(at, chunk_size_) != 0) {
        const int err = errno;
        ::mmap(at, chunk_size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
               -1, 0);
        [[maybe_unused]] const int rc = ::ftruncate(memfd_.get(), static_cast<off_t>(offset));
        throw Error("lock DMA arena chunk", name_, err,
                    err == ENOMEM || err == EPERM
                        ? "RLIMIT_MEMLOCK is too small for DMA memory; raise it (ulimit -l, or "
                          "LimitMEMLOCK= in a systemd unit) or run with CAP_IPC_LOCK"
                        : "");
    }

    const std::size_t index = chunks_;
    ++chunks_;
    std::size_t mapped = 0;
    try {
        for (auto& space : spaces_) {
            if (space.space != nullptr) {
                map_chunk(space, index);
            }
            ++mapped;
        }
    } catch (...) {
        for (std::size_t i = 0; i < mapped; ++i) {
            if (spaces_[i].space != nullptr) {
                unmap_chunk(spaces_[i], index);
            }
        }
        --chunks_;
        ::mmap(at, chunk_size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
               -1, 0);
        [[maybe_unused]] const int rc = ::ftruncate(memfd_.get(), static_cast<off_t>(offset));
        throw;
    }
    return chunk(index);
}

std::size_t DmaArena::attach(IovaSpace& space) {
    const std::size_t granule = std::min(space.granule(), chunk_size_);
    if (granule == 0 || !std::has_single_bit(granule) || granule < page_size_) {
        throw Error::invalid(
            "attach DMA arena", name_,
            fmt::format("{} has a granule of {} bytes; it must be a power of two between the "
                        "page size {} and the chunk size {}",
                        space.name(), granule, page_size_, chunk_size_));
    }
    Space entry;
    entry.space = &space;
    entry.granule_shift = static_cast<unsigned>(std::countr_zero(granule));
    entry.granule_mask = granule - 1;
    entry.iova_per_granule.assign((reservation_.size() - page_size_) / granule, 0);
    std::size_t done = 0;
    try {
        for (; done < chunks_; ++done) {
            map_chunk(entry, done);
        }
    } catch (...) {
        for (std::size_t i = 0; i < done; ++i) {
            unmap_chunk(entry, i);
        }
        throw;
    }
    spaces_.push_back(std::move(entry));
    return spaces_.size() - 1;
}

void DmaArena::detach(IovaSpace& space) noexcept {
    for (auto& entry : spaces_) {
        if (entry.space == &space) {
            for (std::size_t i = 0; i < chunks_; ++i) {
                unmap_chunk(entry, i);
            }
            entry.space = nullptr;  // indexes of the other spaces stay valid
        }
    }
}

void DmaArena::map_chunk(Space& space, std::size_t index) {
    const std::size_t per_chunk = chunk_size_ >> space.granule_shift;
    space.space->map(
        chunk(index),
        std::span<std::uint64_t>(space.iova_per_granule).subspan(index * per_chunk, per_chunk));
}

void DmaArena::unmap_chunk(Space& space, std::size_t index) noexcept {
    const std::size_t per_chunk = chunk_size_ >> space.granule_shift;
    space.space->unmap(chunk(index), std::span<const std::uint64_t>(space.iova_per_granule)
                                         .subspan(index * per_chunk, per_chunk));
}

}  // namespace ring3::dma
