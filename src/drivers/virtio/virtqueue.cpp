// Split virtqueues (VIRTIO 1.2 §2.7), driver side.
#include "ring3/virtio/virtqueue.hpp"

#include <fmt/core.h>

#include <atomic>
#include <cerrno>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"

namespace ring3::virtio {

SplitQueue::SplitQueue(dma::DmaPool& pool, std::uint16_t index, std::uint16_t size, bool event_idx,
                       mmio::RegisterIo& notify, std::size_t notify_offset)
    : index_(index),
      size_(size),
      event_idx_(event_idx),
      notify_(notify),
      notify_offset_(notify_offset) {
    if (size == 0 || size > kMaxQueueSize || (size & (size - 1)) != 0) {
        throw Error::invalid(fmt::format("create virtqueue {}", index), "split virtqueue",
                             fmt::format("size {} is not a power of two in 1..32768", size));
    }
    // §2.7: the three parts, each with its alignment; zeroed (flags 0, idx 0).
    desc_ =
        pool.allocate(sizeof(Descriptor) * size, std::max<std::size_t>(kDescriptorAlignment, 64));
    avail_ = pool.allocate(avail_ring_bytes(size), std::max<std::size_t>(kAvailAlignment, 64));
    // The used ring starts 4 bytes before a page boundary, so that every 8-byte used element
    // lies inside one 4 KiB page. A device model may split an element that straddles two IOMMU
    // pages and lose its second half: QEMU 7.2 with intel-iommu translates the continuation of
    // such a write as if its ring offset were an IOVA (a DMA write fault at IOVA 0x340 for
    // element 103 of a ring placed at page offset 0xcc0, and that element's len never
    // written). Flags and idx (2 bytes each) sit at the end of the page before. Where device
    // addresses are contiguous only within single pages (UIO without hugepages) a ring must fit
    // in one page anyway: it is page-aligned there.
    const std::size_t used_bytes = used_ring_bytes(size);
    const std::size_t skew =
        pool.arena().granule(pool.space_index()) >= kUsedSkew + used_bytes ? kUsedSkew : 0;
    used_ = pool.allocate(skew + used_bytes, kPageBytes);
    used_base_ = used_.data() + skew;
    next_free_.resize(size);
    chains_.resize(size);
    for (std::uint16_t i = 0; i < size; ++i) {
        next_free_[i] = static_cast<std::uint16_t>(i + 1 == size ? 0 : i + 1);
    }
    free_head_ = 0;
    free_count_ = size;
    disable_interrupts();
}

// ---- ring fields (§2.7.6 available ring, §2.7.8 used ring) -------------------------------------

volatile std::uint16_t& SplitQueue::avail_flags() noexcept {
    return reinterpret_cast<volatile std::uint16_t*>(avail_.data())[0];
}
volatile std::uint16_t& SplitQueue::avail_idx() noexcept {
    return reinterpret_cast<volatile std::uint16_t*>(avail_.data())[1];
}
volatile std::uint16_t& SplitQueue::avail_ring(std::uint16_t slot) noexcept {
    return reinterpret_cast<volatile std::uint16_t*>(avail_.data())[2 + slot];
}
volatile std::uint16_t& SplitQueue::used_event() noexcept {
    return reinterpret_cast<volatile std::uint16_t*>(avail_.data())[2 + size_];
}
volatile std::uint16_t& SplitQueue::used_flags() noexcept {
    return reinterpret_cast<volatile std::uint16_t*>(used_base_)[0];
}
volatile std::uint16_t& SplitQueue::used_idx() noexcept {
    return reinterpret_cast<volatile std::uint16_t*>(used_base_)[1];
}
volatile UsedElement& SplitQueue::used_ring(std::uint16_t slot) noexcept {
    return reinterpret_cast<volatile UsedElement*>(used_base_ + 4)[slot];
}
volatile std::uint16_t& SplitQueue::avail_event() noexcept {
    return *reinterpret_cast<volatile std::uint16_t*>(used_base_ + 4 + sizeof(UsedElement) * size_);
}

// ---- submission --------------------------------------------------------------------------------

int SplitQueue::add(std::span<const Segment> segments, void* context) noexcept {
    if (segments.empty() || segments.size() > size_) {
        return -EINVAL;
    }
    if (segments.size() > free_count_) {
        return -EAGAIN;
    }
    auto* table = reinterpret_cast<volatile Descriptor*>(desc_.data());
    const std::uint16_t head = free_head_;
    std::uint16_t id = head;
    std::uint32_t writable = 0;
    std::uint16_t last = head;
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const Segment& segment = segments[i];
        const bool more = i + 1 < segments.size();
        // §2.7.5: the chain is linked by `next` with VIRTQ_DESC_F_NEXT; device-writable buffers
        // carry VIRTQ_DESC_F_WRITE.
        volatile Descriptor& d = table[id];
        d.addr = segment.iova;
        d.len = segment.length;
        d.flags = static_cast<std::uint16_t>((more ? desc_flag::next : 0) |
                                             (segment.device_writes ? desc_flag::write : 0));
        const std::uint16_t next = next_free_[id];
        d.next = more ? next : 0;
        if (segment.device_writes) {
            writable += segment.length;
        }
        last = id;
        id = next;
    }
    make_available(head, static_cast<std::uint16_t>(segments.size()), last, writable, id, context);
    return head;
}

int SplitQueue::add_indirect(std::span<const Segment> segments, volatile Descriptor* table,
                             std::uint64_t table_iova, void* context) noexcept {
    if (segments.empty() || segments.size() > size_) {
        return -EINVAL;  // §2.7.5.3.1: no chain longer than the queue size, indirect or not
    }
    if (free_count_ == 0) {
        return -EAGAIN;
    }
    // §2.7.5.3.1: the table's descriptors are linked by `next` inside the table; the one in
    // the ring has only VIRTQ_DESC_F_INDIRECT (never with NEXT).
    std::uint32_t writable = 0;
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const Segment& segment = segments[i];
        const bool more = i + 1 < segments.size();
        volatile Descriptor& d = table[i];
        d.addr = segment.iova;
        d.len = segment.length;
        d.flags = static_cast<std::uint16_t>((more ? desc_flag::next : 0) |
                                             (segment.device_writes ? desc_flag::write : 0));
        d.next = more ? static_cast<std::uint16_t>(i + 1) : 0;
        if (segment.device_writes) {
            writable += segment.length;
        }
    }
    const std::uint16_t head = free_head_;
    volatile Descriptor& d = reinterpret_cast<volatile Descriptor*>(desc_.data())[head];
    d.addr = table_iova;
    d.len = static_cast<std::uint32_t>(sizeof(Descriptor) * segments.size());
    d.flags = desc_flag::indirect;
    d.next = 0;
    make_available(head, 1, head, writable, next_free_[head], context);
    return head;
}

void SplitQueue::make_available(std::uint16_t head, std::uint16_t count, std::uint16_t last,
                                std::uint32_t writable, std::uint16_t next_free,
                                void* context) noexcept {
    free_head_ = next_free;
    free_count_ -= count;
    chains_[head] = Chain{context, count, last, writable};
    ++chains_in_flight_;
    ++counters_.chains;
    // §2.7.13.2: the head goes into the next available ring slot; idx is published later.
    avail_ring(static_cast<std::uint16_t>(avail_idx_ & (size_ - 1))) = head;
    ++avail_idx_;
}

bool SplitQueue::publish() noexcept {
    if (avail_idx_ == published_idx_) {
        return false;
    }
    const std::uint16_t old = published_idx_;
    // §2.7.13.3: descriptors and ring entries must be visible before the idx that exposes them.
    std::atomic_thread_fence(std::memory_order_release);
    avail_idx() = avail_idx_;
    published_idx_ = avail_idx_;
    // §2.7.13.4: a full barrier between the idx store and reading the device's suppression
    // state, else a device that just went to sleep is not told.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const bool notify = event_idx_ ? need_event(avail_event(), published_idx_, old)
                                   : (used_flags() & kUsedNoNotify) == 0;
    if (!notify) {
        ++counters_.suppressed;
        return false;
    }
    // §4.1.5.2: the queue's index, 16 bits, at its notification address.
    notify_.write16(notify_offset_, index_);
    ++counters_.notifications;
    return true;
}

// ---- completion --------------------------------------------------------------------------------

// A device's garbage is reported at the 1st, 2nd, 4th, 8th... occurrence so a storm of it cannot
// flood the log; the counters have the exact numbers.
void SplitQueue::report(const char* what, std::uint64_t count, std::uint64_t value) const noexcept {
    if ((count & (count - 1)) != 0) {
        return;
    }
    try {
        if (broken_) {
            log_error(
                "virtqueue {}: used ring entry with {} ({}): the device's used ring cannot be "
                "trusted any more; the queue stops",
                index_, what, value);
        } else {
            log_warn("virtqueue {}: used ring entry with {} ({}); clamped ({} so far)", index_,
                     what, value, count);
        }
    } catch (...) {
        // Logging must not take the queue down; the counter still says it.
    }
}

void SplitQueue::release(std::uint16_t head) noexcept {
    Chain& chain = chains_[head];
    // Walk our own links, not the DMA table's: the device may have rewritten it.
    next_free_[chain.last] = free_head_;
    free_head_ = head;
    free_count_ += chain.count;
    chain.count = 0;
    --chains_in_flight_;
}

bool SplitQueue::has_used() const noexcept {
    return !broken_ && reinterpret_cast<const volatile std::uint16_t*>(used_base_)[1] != last_used_;
}

unsigned SplitQueue::poll(Completion completion, void* owner, unsigned max) noexcept {
    if (broken_) {
        return 0;
    }
    const std::uint16_t used = used_idx();
    const auto ready = static_cast<std::uint16_t>(used - last_used_);
    if (ready == 0) {
        return 0;
    }
    if (ready > size_) {
        // §2.7.8: the used ring holds at most `size` entries we have not consumed; an index
        // beyond that is garbage, and so may be the entries. Stop trusting the queue.
        broken_ = true;
        report("used idx moving past the ring size", ++counters_.index_jumps, ready);
        return 0;
    }
    // §2.7.14 (and §2.7.13's barrier rules): read the entries only after seeing idx.
    std::atomic_thread_fence(std::memory_order_acquire);
    unsigned done = 0;
    while (last_used_ != used && (max == 0 || done < max)) {
        volatile UsedElement& element =
            used_ring(static_cast<std::uint16_t>(last_used_ & (size_ - 1)));
        const std::uint32_t id = element.id;
        std::uint32_t written = element.len;
        ++last_used_;
        // §2.7.8: the id is the head of a chain the driver made available. Any other id means
        // the device lost track of the ring: the chain it stood for can never complete, and
        // what it does next cannot be trusted either (Linux, too, marks such a queue broken).
        if (id >= size_) {
            broken_ = true;
            report("an id outside the queue", ++counters_.bad_ids, id);
            break;
        }
        const auto head = static_cast<std::uint16_t>(id);
        Chain& chain = chains_[head];
        if (chain.count == 0) {
            broken_ = true;
            report("an id not in flight", ++counters_.stale_ids, id);
            break;
        }
        if (written > chain.writable) {
            report("a length beyond the chain's writable bytes", ++counters_.bad_lengths, written);
            written = chain.writable;
        }
        void* context = chain.context;
        release(head);
        ++done;
        completion(owner, context, head, written);
    }
    if (interrupts_wanted_ && event_idx_) {
        used_event() = last_used_;  // §2.7.10: interrupt again at the next one
    }
    if (done != 0) {
        ++counters_.reaps;
        counters_.completions += done;
    }
    return done;
}

bool SplitQueue::enable_interrupts() noexcept {
    interrupts_wanted_ = true;
    if (event_idx_) {
        used_event() = last_used_;  // §2.7.10
    } else {
        avail_flags() = 0;  // §2.7.7
    }
    // The device may have added used entries before it saw the request: a full barrier, then
    // look again (§2.7.14's "race" note).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return has_used();
}

void SplitQueue::disable_interrupts() noexcept {
    interrupts_wanted_ = false;
    if (event_idx_) {
        // §2.7.10: an event index half the index space away: no interrupt in the next 32768.
        used_event() = static_cast<std::uint16_t>(last_used_ + 0x8000);
    } else {
        avail_flags() = kAvailNoInterrupt;  // §2.7.7
    }
}

void SplitQueue::fail_all(Completion completion, void* owner) noexcept {
    for (std::uint16_t head = 0; head < size_; ++head) {
        if (chains_[head].count != 0) {
            void* context = chains_[head].context;
            release(head);
            completion(owner, context, head, 0);
        }
    }
    // Forget the rings: the device was (or will be) reset, and indexes start again at 0.
    avail_idx_ = published_idx_ = last_used_ = 0;
    broken_ = false;
}

}  // namespace ring3::virtio
