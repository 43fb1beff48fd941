// BlockDevice: the generic face of a block driver (DESIGN.md, "drivers/ generic faces"). NVMe
// implements it now and virtio-blk later; `ring3 perf blk` and applications use only this.
//
// A device has one or more queues; a queue belongs to one thread at a time and is never locked.
// Submission and completion are noexcept, allocate nothing and (in poll mode) make no system call:
// errors come back as a Status per request. Data buffers must lie in the device's DMA arena
// (allocate them from dma_pool() or a BufferPool over it).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ring3/dma/pool.hpp"
#include "ring3/irq/interrupt.hpp"

namespace ring3::block {

enum class Op : std::uint8_t { read, write, flush, write_zeroes, deallocate };
const char* to_string(Op op) noexcept;

struct Status {
    int error = 0;                  // 0, or an errno: EIO (device error), ETIMEDOUT, ECANCELED, ...
    std::uint16_t device_code = 0;  // the device's own status (NVMe: SCT << 8 | SC), 0 if none
    bool ok() const noexcept { return error == 0; }
};

// Called from poll() on the queue's thread. A plain function pointer and a context: no
// std::function, so submitting allocates nothing.
using Callback = void (*)(void* context, const Status& status);

struct Geometry {
    std::uint64_t block_count = 0;
    std::uint32_t block_size = 0;    // bytes per logical block
    std::uint32_t max_transfer = 0;  // bytes in one request (larger ones are split by the driver)
    std::uint32_t queue_count = 0;   // queues available to open_queue()
    std::uint32_t max_queue_depth = 0;  // requests in flight per queue
    bool volatile_write_cache = false;  // flush does something
    bool write_zeroes = false;
    bool deallocate = false;
};

struct Request {
    Op op = Op::read;
    std::uint64_t lba = 0;
    std::uint32_t blocks = 0;   // 0 for flush
    std::byte* data = nullptr;  // DMA memory, blocks * block_size bytes (read/write)
    Callback callback = nullptr;
    void* context = nullptr;
};

// What a queue did, counted on its thread (read it after the run, or from that thread): enough
// to see where the time goes without a profiler. Under emulation every notification and every
// completion acknowledgement is a trap into the hypervisor.
struct QueueStats {
    std::uint64_t requests = 0;       // commands handed to the device (split requests: each part)
    std::uint64_t notifications = 0;  // doorbell writes / notifies telling it about new ones
    std::uint64_t acknowledgements = 0;  // writes telling it completions were consumed (NVMe CQ
                                         // head doorbell; 0 where the device needs none)
    std::uint64_t reaps = 0;             // reaps that found at least one completion
    std::uint64_t completions = 0;       // completions consumed
    std::uint64_t garbage = 0;           // device-written entries dropped as invalid
};

// Submission comes in bursts: enqueue() places a request in the queue without telling the device,
// flush() hands everything enqueued since the last flush over with one notification (NVMe: one SQ
// tail doorbell write; virtio: one notify), and submit() is the two for a single request. Under
// emulation every notification is a trap into the hypervisor, so a loop that refills a queue
// enqueues the whole burst and flushes once. poll() and wait() flush first, so a request is never
// left unannounced while its submitter waits for it.
class Queue {
  public:
    virtual ~Queue() = default;
    // Queues the request. 0 on success; -EAGAIN when the queue is full (flush, poll, then retry);
    // -EINVAL for a request that can never succeed (range beyond the device, buffer outside the
    // arena or misaligned); -ENODEV when the device failed. The callback runs only after 0.
    virtual int enqueue(const Request& request) noexcept = 0;
    // Notifies the device of every request enqueued and not yet flushed (nothing when none).
    virtual void flush() noexcept = 0;
    // One request, handed over at once: enqueue() then flush(); returns what enqueue() returned.
    int submit(const Request& request) noexcept {
        const int rc = enqueue(request);
        flush();
        return rc;
    }
    // Flushes, then reaps up to `max` completions (0: all ready), running their callbacks;
    // returns how many.
    virtual unsigned poll(unsigned max = 0) noexcept = 0;
    // Flushes, then waits for a completion the way the queue's mode says (poll: spin; interrupt:
    // sleep on the vector; adaptive: spin a while, then sleep) up to `timeout`, then polls.
    virtual unsigned wait(std::chrono::microseconds timeout) = 0;
    virtual unsigned outstanding() const noexcept = 0;
    virtual unsigned depth() const noexcept = 0;
    virtual QueueStats stats() const noexcept = 0;
};

class BlockDevice {
  public:
    virtual ~BlockDevice() = default;
    virtual std::string name() const = 0;
    virtual Geometry geometry() const = 0;
    // Queue `index` (< geometry().queue_count), created on first use with `depth` entries
    // (0: the largest the device allows) and the given wait mode.
    virtual Queue& open_queue(unsigned index, unsigned depth = 0,
                              irq::WaitMode mode = irq::WaitMode::poll) = 0;
    // DMA memory the device can reach, for data buffers.
    virtual dma::DmaPool& dma_pool() = 0;
};

}  // namespace ring3::block
