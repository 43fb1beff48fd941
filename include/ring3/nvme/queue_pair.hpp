// One NVMe submission/completion queue pair (NVMe Base 2.0 §3.3 "Queue mechanism"): the rings in
// DMA memory, the doorbells, the phase tag, and a table of command slots indexed by command id.
//
// Everything the device writes into the completion ring is checked before it is used: a command
// id that is out of range or not in flight, and an SQ head pointer outside the ring, are counted
// and the entry dropped (never trusted). Submission and completion allocate nothing and make no
// system call; a queue pair belongs to one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/mmio/register.hpp"
#include "ring3/nvme/spec.hpp"

namespace ring3::nvme {

struct QueueCounters {
    std::uint64_t submitted = 0;
    std::uint64_t completed = 0;
    std::uint64_t invalid_command_id = 0;  // CQE names an id outside the table
    std::uint64_t stale_command_id = 0;    // CQE names an id not in flight
    std::uint64_t invalid_sq_head = 0;     // CQE's SQ head pointer outside the ring
    std::uint64_t sq_doorbells = 0;        // SQ tail doorbell writes
    std::uint64_t cq_doorbells = 0;        // CQ head doorbell writes
    std::uint64_t reaps = 0;               // process_completions() calls that consumed entries
    std::uint64_t consumed = 0;            // completion entries consumed (garbage included)
};

class QueuePair {
  public:
    // Called for each completed command with the slot's context and the completion entry.
    using Handler = void (*)(void* context, const CompletionEntry& entry);

    // `entries`: ring size (2 .. CAP.MQES + 1). `sq_doorbell`/`cq_doorbell`: offsets of the
    // doorbells in `doorbells` (BAR0, mapped or reached through region writes).
    QueuePair(dma::DmaPool& pool, std::uint16_t id, std::uint32_t entries,
              mmio::RegisterIo& doorbells, std::size_t sq_doorbell, std::size_t cq_doorbell);
    QueuePair(const QueuePair&) = delete;
    QueuePair& operator=(const QueuePair&) = delete;

    std::uint16_t id() const noexcept { return id_; }
    std::uint32_t entries() const noexcept { return entries_; }
    std::uint64_t sq_iova() const noexcept { return sq_.iova(); }
    std::uint64_t cq_iova() const noexcept { return cq_.iova(); }

    // Commands in flight, and how many more fit (one ring slot always stays empty, §4.1.2).
    std::uint32_t outstanding() const noexcept { return in_flight_; }
    // Counting the consumed completion entries not yet acknowledged to the controller: from its
    // side they still occupy the CQ, and every command in flight may need one more entry.
    std::uint32_t free_slots() const noexcept {
        return entries_ - 1 - in_flight_ - unacknowledged_;
    }

    // Poll mode: acknowledge consumed completions (CQ head doorbell) only when half the ring is
    // used or a submission needs the room, instead of after every reap; each doorbell is an MMIO
    // write, and under emulation a costly one. Not for interrupt-driven queues: a level-triggered
    // INTx stays asserted while the head lags.
    void set_lazy_completion_doorbell(bool lazy) noexcept { lazy_cq_doorbell_ = lazy; }
    void acknowledge_completions() noexcept;

    // Takes a command id, copies `command` (with that id) into the ring; the doorbell is rung by
    // ring_doorbell() so several commands go with one MMIO write. Returns the id, or -1 when
    // full.
    int enqueue(SubmissionEntry command, Handler handler, void* context) noexcept;
    // The id the next enqueue() will use (to prepare what the command points to); -1 when full.
    int next_command_id() const noexcept {
        return free_slots() == 0 || free_ids_.empty() ? -1 : free_ids_.back();
    }
    void ring_doorbell() noexcept;

    // Reaps up to `max` completions (0: all); returns how many handlers ran.
    unsigned process_completions(unsigned max = 0) noexcept;

    // Timeouts without reading the clock on the hot path: enqueue() leaves a command unstamped,
    // and this sweep stamps unstamped commands with `now` and returns the oldest stamped one
    // (false when idle). A command's timer so starts at the first sweep after its submission.
    bool stamp_and_find_oldest(CycleClock::time_point now, std::uint16_t& command_id,
                               CycleClock::time_point& stamped) noexcept;

    // Keeps command `command_id` in flight (the controller still owns it) but forgets its handler
    // and context: its completion is then consumed silently. For a waiter that gives up on it.
    void detach(std::uint16_t command_id) noexcept;
    // Drops every command in flight, calling each handler with a synthesized completion whose
    // status is `status` (after a controller reset: the device no longer owns them).
    void fail_all(std::uint16_t status) noexcept;
    // Empties the rings and restarts phase and pointers (the queue was re-created in the device).
    void reset_rings() noexcept;

    const QueueCounters& counters() const noexcept { return counters_; }
    // The rings, for diagnostics and tests (the device writes the completion ring).
    const dma::DmaBuffer& submission_ring() const noexcept { return sq_; }
    const dma::DmaBuffer& completion_ring() const noexcept { return cq_; }
    // The context a command in flight was enqueued with; null when `command_id` is not in flight.
    void* context(std::uint16_t command_id) const noexcept {
        return command_id < entries_ && slots_[command_id].busy ? slots_[command_id].context
                                                                : nullptr;
    }

  private:
    void report(const char* what, std::uint64_t count, std::uint32_t value,
                bool dropped) const noexcept;

    struct Slot {
        Handler handler = nullptr;
        void* context = nullptr;
        CycleClock::time_point submitted{};
        bool busy = false;
    };

    std::uint16_t id_;
    std::uint32_t entries_;
    dma::DmaBuffer sq_;
    dma::DmaBuffer cq_;
    mmio::RegisterIo& doorbells_;
    std::size_t sq_doorbell_;
    std::size_t cq_doorbell_;
    std::uint32_t sq_tail_ = 0;
    std::uint32_t sq_tail_rung_ = 0;
    std::uint32_t cq_head_ = 0;
    std::uint16_t phase_ = 1;
    std::uint32_t in_flight_ = 0;
    std::uint32_t unacknowledged_ = 0;
    bool lazy_cq_doorbell_ = false;
    std::vector<Slot> slots_;
    std::vector<std::uint16_t> free_ids_;  // stack
    QueueCounters counters_;
};

}  // namespace ring3::nvme
