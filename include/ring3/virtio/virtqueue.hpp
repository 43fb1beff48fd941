// A split virtqueue (VIRTIO 1.2 §2.7), driver side: the descriptor table, available and used
// rings in DMA memory from a DmaPool; free descriptors kept in private memory (the device can
// write the DMA copy, so nothing about chains is read back from it); chains added in bulk and
// published with one available-index store and at most one notification; used entries validated
// before use. add/publish/poll make no system call, allocate nothing and take no lock (a queue
// belongs to one thread); a notification is one register write (a system call only when the
// notify structure is not mapped).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ring3/dma/pool.hpp"
#include "ring3/mmio/register.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::virtio {

// One buffer of a chain: device-readable unless `device_writes`.
struct Segment {
    std::uint64_t iova = 0;
    std::uint32_t length = 0;
    bool device_writes = false;
};

// Device garbage, counted (and logged at the 1st, 2nd, 4th... occurrence of each kind).
struct VirtqueueCounters {
    std::uint64_t chains = 0;         // chains made available
    std::uint64_t reaps = 0;          // polls that found at least one used chain
    std::uint64_t completions = 0;    // used chains consumed
    std::uint64_t notifications = 0;  // notify register writes
    std::uint64_t suppressed = 0;     // publishes the device asked not to be told about
    std::uint64_t bad_ids = 0;        // used id >= queue size
    std::uint64_t stale_ids = 0;      // used id that is not the head of a chain in flight
    std::uint64_t bad_lengths = 0;    // used len > what the chain lets the device write
    std::uint64_t index_jumps = 0;    // used idx moved by more than the ring size
};

class SplitQueue {
  public:
    // `size`: a power of two, 1..32768. `notify` and `notify_offset`: where the queue's
    // notification is written (§4.1.4.4); `event_idx`: VIRTIO_F_EVENT_IDX was negotiated.
    SplitQueue(dma::DmaPool& pool, std::uint16_t index, std::uint16_t size, bool event_idx,
               mmio::RegisterIo& notify, std::size_t notify_offset);
    SplitQueue(const SplitQueue&) = delete;
    SplitQueue& operator=(const SplitQueue&) = delete;

    std::uint16_t index() const noexcept { return index_; }
    std::uint16_t size() const noexcept { return size_; }
    std::uint64_t desc_iova() const noexcept { return desc_.iova(); }
    std::uint64_t avail_iova() const noexcept { return avail_.iova(); }
    std::uint64_t used_iova() const noexcept { return used_.iova() + (used_base_ - used_.data()); }
    // Where notifications go, once the transport knows (PciTransport::setup_queue's result).
    void set_notify_offset(std::size_t offset) noexcept { notify_offset_ = offset; }

    unsigned free_descriptors() const noexcept { return free_count_; }
    unsigned in_flight() const noexcept { return chains_in_flight_; }
    // The head descriptor the next add() will use (valid while free_descriptors() > 0), so a
    // caller can index per-chain memory by it before adding.
    std::uint16_t next_head() const noexcept { return free_head_; }

    // Adds a chain (not yet visible to the device). Returns its head (>= 0), -EAGAIN when fewer
    // descriptors are free than segments, -EINVAL for no segments or more than the queue holds.
    int add(std::span<const Segment> segments, void* context) noexcept;
    // The same chain through an indirect table (VIRTIO_F_INDIRECT_DESC, §2.7.5.3): the segments
    // are written to `table` (DMA memory of the caller's, at `table_iova`, room for all of them)
    // and the ring gets one descriptor pointing at it.
    int add_indirect(std::span<const Segment> segments, volatile Descriptor* table,
                     std::uint64_t table_iova, void* context) noexcept;
    // Makes every chain added since the last publish visible with one idx store (§2.7.13) and
    // notifies the device once unless it asked not to be (§2.7.10 / §2.7.7). Returns whether it
    // notified.
    bool publish() noexcept;
    bool unpublished() const noexcept { return avail_idx_ != published_idx_; }

    // Called for each used chain: the context given to add(), its head, and the bytes the device
    // says it wrote (clamped to what the chain allows).
    using Completion = void (*)(void* owner, void* context, std::uint16_t head,
                                std::uint32_t written);
    // Reaps up to `max` used chains (0: all). A used idx that moved by more than the ring size,
    // or a used id that is not the head of a chain in flight, makes the queue broken(): nothing
    // more is reaped (the device needs a reset). A used length beyond the chain's writable
    // bytes is clamped and counted.
    unsigned poll(Completion completion, void* owner, unsigned max = 0) noexcept;
    bool has_used() const noexcept;

    // Asks the device for an interrupt at the next used chain (used_event with EVENT_IDX, else
    // clearing VIRTQ_AVAIL_F_NO_INTERRUPT). Returns true when used chains are already there
    // (reap them rather than sleep: the interrupt for them may have been suppressed).
    bool enable_interrupts() noexcept;
    // Asks the device not to interrupt (§2.7.7; a hint).
    void disable_interrupts() noexcept;

    // Completes every chain in flight with written = 0 and makes the queue empty (after a device
    // reset, or when the queue broke).
    void fail_all(Completion completion, void* owner) noexcept;

    bool broken() const noexcept { return broken_; }
    const VirtqueueCounters& counters() const noexcept { return counters_; }

  private:
    struct Chain {
        void* context = nullptr;
        std::uint16_t count = 0;  // descriptors; 0: not a chain in flight
        std::uint16_t last = 0;   // last descriptor of the chain
        std::uint32_t writable = 0;
    };
    volatile std::uint16_t& avail_flags() noexcept;
    volatile std::uint16_t& avail_idx() noexcept;
    volatile std::uint16_t& avail_ring(std::uint16_t slot) noexcept;
    volatile std::uint16_t& used_event() noexcept;
    volatile std::uint16_t& used_flags() noexcept;
    volatile std::uint16_t& used_idx() noexcept;
    volatile UsedElement& used_ring(std::uint16_t slot) noexcept;
    volatile std::uint16_t& avail_event() noexcept;
    void release(std::uint16_t head) noexcept;
    void make_available(std::uint16_t head, std::uint16_t count, std::uint16_t last,
                        std::uint32_t writable, std::uint16_t next_free, void* context) noexcept;
    void report(const char* what, std::uint64_t count, std::uint64_t value) const noexcept;

    std::uint16_t index_;
    std::uint16_t size_;
    bool event_idx_;
    mmio::RegisterIo& notify_;
    std::size_t notify_offset_;
    dma::DmaBuffer desc_;
    dma::DmaBuffer avail_;
    static constexpr std::size_t kPageBytes = 4096;
    static constexpr std::size_t kUsedSkew = kPageBytes - 4;  // see the constructor
    dma::DmaBuffer used_;
    std::byte* used_base_ = nullptr;        // the used ring, kUsedSkew (or 0) bytes into used_
    std::vector<std::uint16_t> next_free_;  // private free list (never read from DMA memory)
    std::vector<Chain> chains_;             // by head
    std::uint16_t free_head_ = 0;
    unsigned free_count_ = 0;
    unsigned chains_in_flight_ = 0;
    std::uint16_t avail_idx_ = 0;      // next available slot (ours)
    std::uint16_t published_idx_ = 0;  // what the device has seen
    std::uint16_t last_used_ = 0;      // next used slot to reap
    bool interrupts_wanted_ = false;
    bool broken_ = false;
    VirtqueueCounters counters_;
};

}  // namespace ring3::virtio
