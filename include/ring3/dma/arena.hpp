// DmaArena: the process's DMA memory (DESIGN.md, "DMA memory").
//
// One memfd — hugetlb-backed (2 MiB pages) when the system has hugepages reserved, else ordinary
// 4 KiB pages locked with mlock — grown in fixed-size chunks. The arena reserves its whole virtual
// range up front and maps each chunk at its place in it, so a CPU address turns into an offset by a
// subtraction, and an offset into a device address (IOVA) by one table look-up: no syscall, no
// search, on the hot path.
//
// A chunk is mapped once into every IovaSpace attached to the arena (a VFIO container, the
// physical-address space of UIO, a vfio-user server), when the chunk is created or the space is
// attached, and stays mapped: the emulated IOMMU makes map/unmap expensive (REFERENCE.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ring3/core/mapping.hpp"
#include "ring3/core/unique_fd.hpp"

namespace ring3::dma {

// What a device sees of one chunk: its CPU range and the memfd range behind it (a vfio-user
// server maps the same memory through the fd).
struct ChunkView {
    std::byte* cpu = nullptr;
    std::size_t size = 0;
    int memfd = -1;
    std::uint64_t memfd_offset = 0;
    std::size_t page_size = 4096;  // 2 MiB when hugetlb-backed
};

// A device address space the arena's chunks are mapped into.
class IovaSpace {
  public:
    virtual ~IovaSpace() = default;
    // Device addresses are contiguous within each aligned granule of a chunk (2 MiB for physical
    // addresses of hugepages). A power of two; an IOMMU, which maps whole chunks contiguously,
    // returns kAnyGranule and the arena uses its chunk size.
    static constexpr std::size_t kAnyGranule = std::size_t{1} << 62;
    virtual std::size_t granule() const noexcept = 0;
    // Makes the chunk reachable by the device; fills one IOVA per granule. Throws ring3::Error.
    virtual void map(const ChunkView& chunk, std::span<std::uint64_t> iova_per_granule) = 0;
    // Undoes map(); called when the arena or the space goes away.
    virtual void unmap(const ChunkView& chunk,
                       std::span<const std::uint64_t> iova_per_granule) noexcept = 0;
    virtual std::string name() const = 0;  // for messages: "VFIO container", "UIO physical"
};

enum class HugePages { automatic, required, never };

struct ArenaOptions {
    // A power of two, at least 4 KiB; rounded up to 2 MiB when the arena gets hugepages. A DMA
    // object (a queue, a data buffer) lies within one chunk.
    std::size_t chunk_size = std::size_t{2} << 20;
    // The virtual reservation; the arena never grows past it.
    std::size_t max_size = std::size_t{1} << 30;
    HugePages huge_pages = HugePages::automatic;
    std::string name = "ring3-dma";  // memfd name, visible in /proc/PID/fd
};

class DmaArena {
  public:
    // Creates an empty arena (no chunk yet). Throws ring3::Error when the options are invalid or
    // hugepages are required but cannot be mapped (memfd_create and ftruncate succeed without any
    // reserved; only a populating mmap tells, so that is what the probe does).
    static std::unique_ptr<DmaArena> create(const ArenaOptions& options = {});

    DmaArena(const DmaArena&) = delete;
    DmaArena& operator=(const DmaArena&) = delete;
    ~DmaArena();

    // Adds one chunk, maps it into every attached space, returns it. Throws ring3::Error when the
    // arena is full, memory cannot be had, or a space refuses the mapping (the chunk is undone).
    ChunkView grow();

    // Maps every existing chunk into `space` (and every later one); returns the space's index for
    // iova(). The space must outlive the arena or be detached first.
    std::size_t attach(IovaSpace& space);
    void detach(IovaSpace& space) noexcept;

    bool contains(const void* cpu, std::size_t size = 1) const noexcept;

    // CPU address -> device address in attached space `space_index`. `cpu` must lie in a chunk
    // (checked by contains()); O(1), no syscall.
    std::uint64_t iova(const void* cpu, std::size_t space_index = 0) const noexcept {
        const auto offset = static_cast<std::size_t>(static_cast<const std::byte*>(cpu) - base_);
        const auto& table = spaces_[space_index].iova_per_granule;
        return table[offset >> spaces_[space_index].granule_shift] +
               (offset & spaces_[space_index].granule_mask);
    }

    std::size_t space_count() const noexcept { return spaces_.size(); }
    bool huge_pages() const noexcept { return page_size_ > 4096; }
    std::size_t page_size() const noexcept { return page_size_; }
    std::size_t chunk_size() const noexcept { return chunk_size_; }
    std::size_t chunk_count() const noexcept { return chunks_; }
    std::size_t size() const noexcept { return chunks_ * chunk_size_; }
    std::size_t capacity() const noexcept { return reservation_.size(); }
    ChunkView chunk(std::size_t index) const noexcept;
    int memfd() const noexcept { return memfd_.get(); }
    std::byte* base() const noexcept { return base_; }
    // Translation granule of an attached space: a DMA object must not cross one.
    std::size_t granule(std::size_t space_index) const noexcept {
        return spaces_[space_index].granule_mask + 1;
    }
    // The largest granule of all attached spaces (the chunk size when none is attached).
    std::size_t max_contiguous() const noexcept;

  private:
    DmaArena(UniqueFd memfd, Mapping reservation, std::size_t page_size,
             const ArenaOptions& options);

    struct Space {
        IovaSpace* space = nullptr;
        unsigned granule_shift = 0;
        std::size_t granule_mask = 0;
        std::vector<std::uint64_t> iova_per_granule;  // sized for the whole reservation
    };
    void map_chunk(Space& space, std::size_t index);
    void unmap_chunk(Space& space, std::size_t index) noexcept;

    UniqueFd memfd_;
    Mapping reservation_;  // PROT_NONE reservation; chunks are MAP_FIXED inside it
    std::byte* base_ = nullptr;
    std::size_t page_size_ = 4096;
    std::size_t chunk_size_ = 0;
    std::size_t chunks_ = 0;
    std::string name_;
    std::vector<Space> spaces_;
};

}  // namespace ring3::dma
