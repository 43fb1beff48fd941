#include "ring3/nvme/queue_pair.hpp"

#include <fmt/core.h>

#include <atomic>
#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"

namespace ring3::nvme {

QueuePair::QueuePair(dma::DmaPool& pool, std::uint16_t id, std::uint32_t entries,
                     mmio::RegisterIo& doorbells, std::size_t sq_doorbell, std::size_t cq_doorbell)
    : id_(id),
      entries_(entries),
      doorbells_(doorbells),
      sq_doorbell_(sq_doorbell),
      cq_doorbell_(cq_doorbell) {
    if (entries < 2 || entries > 65536) {
        throw Error::invalid("create NVMe queue pair", fmt::format("{}", id),
                             fmt::format("{} entries; a queue has 2 to 65536", entries));
    }
    // Queues are physically contiguous (CAP.CQR is set by QEMU, and we never rely on it being
    // clear): one allocation each, which the DMA pool keeps inside one translation granule.
    sq_ = pool.allocate(std::size_t{entries} * sizeof(SubmissionEntry), 4096);
    cq_ = pool.allocate(std::size_t{entries} * sizeof(CompletionEntry), 4096);
    slots_.resize(entries);
    free_ids_.reserve(entries);
    for (std::uint32_t i = entries; i-- > 0;) {
        free_ids_.push_back(static_cast<std::uint16_t>(i));
    }
}

int QueuePair::enqueue(SubmissionEntry command, Handler handler, void* context) noexcept {
    if (free_slots() == 0 && unacknowledged_ != 0) {
        acknowledge_completions();
    }
    if (free_slots() == 0 || free_ids_.empty()) {
        return -1;
    }
    const std::uint16_t cid = free_ids_.back();
    free_ids_.pop_back();
    Slot& slot = slots_[cid];
    slot.handler = handler;
    slot.context = context;
    slot.submitted = {};  // stamped by the next timeout sweep: no clock read here
    slot.busy = true;
    command.command_id = cid;
    std::memcpy(sq_.data() + std::size_t{sq_tail_} * sizeof(SubmissionEntry), &command,
                sizeof command);
    sq_tail_ = sq_tail_ + 1 == entries_ ? 0 : sq_tail_ + 1;
    ++in_flight_;
    ++counters_.submitted;
    return cid;
}

// §3.3.1.1: the entry must be visible in memory before the doorbell write that hands it over.
void QueuePair::ring_doorbell() noexcept {
    if (sq_tail_ == sq_tail_rung_) {
        return;
    }
    std::atomic_thread_fence(std::memory_order_release);
    doorbells_.write32(sq_doorbell_, sq_tail_);
    sq_tail_rung_ = sq_tail_;
    ++counters_.sq_doorbells;
}

// A device's garbage is reported, at the 1st, 2nd, 4th, 8th... occurrence so a storm of it cannot
// flood the log; the counters have the exact numbers.
void QueuePair::report(const char* what, std::uint64_t count, std::uint32_t value,
                       bool dropped) const noexcept {
    if ((count & (count - 1)) != 0) {
        return;
    }
    try {
        log_warn("NVMe queue {}: completion entry with {} ({}); {} ({} so far)", id_, what, value,
                 dropped ? "entry dropped" : "value ignored", count);
    } catch (...) {
        // Logging must not take the queue down; the counter still says it.
    }
}

void QueuePair::acknowledge_completions() noexcept {
    doorbells_.write32(cq_doorbell_, cq_head_);  // §3.3.1.2: release the consumed entries
    unacknowledged_ = 0;
    ++counters_.cq_doorbells;
}

unsigned QueuePair::process_completions(unsigned max) noexcept {
    unsigned done = 0;
    unsigned consumed = 0;
    auto* ring = reinterpret_cast<volatile CompletionEntry*>(cq_.data());
    while (max == 0 || done < max) {
        volatile CompletionEntry& slot_entry = ring[cq_head_];
        const std::uint16_t status = slot_entry.status;
        if ((status & 1u) != phase_) {
            break;  // §4.6: the phase tag flips when the controller writes a new entry
        }
        // Read the rest of the entry only after seeing the phase tag.
        std::atomic_thread_fence(std::memory_order_acquire);
        CompletionEntry entry;
        entry.dw0 = slot_entry.dw0;
        entry.dw1 = slot_entry.dw1;
        entry.sq_head = slot_entry.sq_head;
        entry.sq_id = slot_entry.sq_id;
        entry.command_id = slot_entry.command_id;
        entry.status = status;

        cq_head_ = cq_head_ + 1 == entries_ ? 0 : cq_head_ + 1;
        if (cq_head_ == 0) {
            phase_ ^= 1u;
        }
        ++consumed;
        if (entry.sq_head >= entries_) {
            report("an SQ head pointer outside the ring", ++counters_.invalid_sq_head,
                   entry.sq_head, false);
        }
        if (entry.command_id >= entries_) {
            report("a command id outside the table", ++counters_.invalid_command_id,
                   entry.command_id, true);
            continue;
        }
        Slot& slot = slots_[entry.command_id];
        if (!slot.busy) {
            report("a command id not in flight", ++counters_.stale_command_id, entry.command_id,
                   true);
            continue;
        }
        slot.busy = false;
        --in_flight_;
        ++counters_.completed;
        free_ids_.push_back(entry.command_id);
        ++done;
        slot.handler(slot.context, entry);
    }
    if (consumed != 0) {
        unacknowledged_ += consumed;
        counters_.consumed += consumed;
        ++counters_.reaps;
    }
    if (unacknowledged_ != 0 && (!lazy_cq_doorbell_ || unacknowledged_ >= entries_ / 2)) {
        acknowledge_completions();
    }
    return done;
}

bool QueuePair::stamp_and_find_oldest(CycleClock::time_point now, std::uint16_t& command_id,
                                      CycleClock::time_point& stamped) noexcept {
    bool found = false;
    for (std::uint32_t i = 0; i < entries_; ++i) {
        Slot& slot = slots_[i];
        if (!slot.busy) {
            continue;
        }
        if (slot.submitted == CycleClock::time_point{}) {
            slot.submitted = now;
        }
        if (!found || slot.submitted < stamped) {
            found = true;
            stamped = slot.submitted;
            command_id = static_cast<std::uint16_t>(i);
        }
    }
    return found;
}

void QueuePair::detach(std::uint16_t command_id) noexcept {
    if (command_id < entries_ && slots_[command_id].busy) {
        slots_[command_id].handler = [](void*, const CompletionEntry&) {};
        slots_[command_id].context = nullptr;
    }
}

void QueuePair::fail_all(std::uint16_t status) noexcept {
    for (std::uint32_t i = 0; i < entries_; ++i) {
        Slot& slot = slots_[i];
        if (!slot.busy) {
            continue;
        }
        slot.busy = false;
        --in_flight_;
        free_ids_.push_back(static_cast<std::uint16_t>(i));
        CompletionEntry entry{};
        entry.command_id = static_cast<std::uint16_t>(i);
        entry.sq_id = id_;
        entry.status = static_cast<std::uint16_t>(status << 1);
        slot.handler(slot.context, entry);
    }
}

void QueuePair::reset_rings() noexcept {
    std::memset(cq_.data(), 0, cq_.size());
    sq_tail_ = 0;
    sq_tail_rung_ = 0;
    cq_head_ = 0;
    phase_ = 1;
    unacknowledged_ = 0;
}

}  // namespace ring3::nvme
