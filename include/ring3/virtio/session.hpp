// What every virtio PCI driver holds while it drives a device, and the bring-up and teardown they
// share (VIRTIO 1.2 §3.1.1, §4.1.5): the opened Device, its MSI-X vectors (interrupt modes), the
// transport, a DMA arena attached to the device's IOVA space with a DmaPool over it, bus
// mastering, and the creation of split virtqueues routed to a vector. virtio-blk and virtio-net
// each own one Session and add only their device type's part (§5.1, §5.2).
//
// Teardown order matters (the device must stop using the rings before their memory goes):
//   session.reset_device();   // §4.1.4.3.2: writes 0 to device_status, waits until it reads 0
//   ... destroy the queues (their DmaBuffers come from session.pool()) ...
//   session.release();        // bus mastering off, arena detached, vectors disabled
// ~Session() does both steps; a driver whose queues live longer than its Session calls
// reset_device() first.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/timeline.hpp"
#include "ring3/device/device.hpp"
#include "ring3/device/resources.hpp"
#include "ring3/dma/arena.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/irq/interrupt.hpp"
#include "ring3/virtio/transport.hpp"
#include "ring3/virtio/virtqueue.hpp"

namespace ring3::virtio {

struct SessionOptions {
    const char* driver = "virtio";  // "virtio-net", for messages
    irq::WaitMode mode = irq::WaitMode::poll;
    // MSI-X vectors wanted in interrupt and adaptive modes: 1 for configuration changes plus
    // one per queue (or queue pair) that sleeps; fewer are used when the device has fewer.
    unsigned vectors = 2;
    dma::ArenaOptions arena;
    TransportOptions transport;
    Timeline* timeline = nullptr;
};

class Session {
  public:
    // Finds the virtio structures, enables the vectors (unless poll mode: all at once, VIRTIO
    // cannot grow a live MSI-X set under VFIO) and creates the DMA arena and pool. Throws
    // ring3::Error (a device with too few vectors for interrupt mode: ENOTSUP, naming --mode
    // poll).
    Session(std::unique_ptr<Device> device, const SessionOptions& options);
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    ~Session();

    Device& device() noexcept { return *device_; }
    const Device& device() const noexcept { return *device_; }
    std::string name() const { return device_->name(); }
    PciTransport& transport() noexcept { return *transport_; }
    const PciTransport& transport() const noexcept { return *transport_; }
    dma::DmaArena& arena() noexcept { return resources_.arena(); }
    std::size_t space_index() const noexcept { return resources_.space_index(); }
    dma::DmaPool& pool() noexcept { return resources_.pool(); }
    bool has(unsigned feature_bit) const noexcept { return transport_->has(feature_bit); }

    // Vectors: [0] configuration changes, [1..] queues. Empty in poll mode.
    std::vector<irq::Interrupt>& interrupts() noexcept { return resources_.interrupts(); }
    bool has_vectors() const noexcept { return resources_.vector_count() != 0; }
    // The vector for queue (or pair) `n`, round-robin over 1..size-1; kNoVector in poll mode.
    std::uint16_t vector_for(unsigned n) const noexcept;
    irq::Interrupt* interrupt_for(unsigned n) noexcept;

    // Negotiates (§3.1.1 steps 1-6), turns bus mastering on and routes configuration changes
    // to vector 0 when there are vectors.
    std::uint64_t start(const Initializer::Features& features);
    // Creates split virtqueue `index` of `size` entries (a power of two <= the device's
    // maximum; the caller picks it) and programs it with `vector` (kNoVector: none).
    std::unique_ptr<SplitQueue> create_queue(std::uint16_t index, std::uint16_t size,
                                             std::uint16_t vector);
    // §3.1.1 step 8.
    void driver_ok();

    // The device-specific configuration must be at least `end` bytes; throws EIO naming `what`.
    void need_config(std::size_t end, const char* what);
    // Resets the device and throws EIO: "open <driver>: <why>".
    [[noreturn]] void refuse(const std::string& why);

    // Teardown (see the top of this file); both are idempotent and noexcept. reset_device() may
    // be called from several queue threads at once: each returns once the device is reset.
    void reset_device() noexcept;
    void release() noexcept;

    // Is the device still able to go on? A device that cannot sets DEVICE_NEEDS_RESET (VIRTIO
    // 1.2 §2.1.2); one reset under the driver reads without DRIVER_OK; one unplugged reads
    // 0xff; one behind a closed vfio-user connection is lost (Device::lost()). Looks (a
    // register read, for vfio-user a message), logs the first problem once, and returns the
    // errno that stopped the device (EIO, or ENODEV when it is gone), 0 while it is healthy.
    // For idle paths only (a wait that found nothing), at most every kHealthInterval per queue:
    // never per I/O.
    int check_health() noexcept;
    static constexpr std::chrono::milliseconds kHealthInterval{100};
    // check_health() unless the caller's `last_check` is less than kHealthInterval old (then
    // only what is known); for a queue's wait that found nothing, `last_check` its own.
    int check_health(CycleClock::time_point& last_check) noexcept {
        if (const auto now = CycleClock::now(); now - last_check > kHealthInterval) {
            last_check = now;
            return check_health();
        }
        return failure();
    }
    // Records that the device cannot go on (a queue found its garbage): the first error wins,
    // `why` is logged once; returns the error in force. Any thread.
    int fail(int error, std::string_view why) noexcept;
    // What check_health() or fail() found: 0 while healthy (any thread; no device access).
    int failure() const noexcept { return failure_.load(std::memory_order_acquire); }

  private:
    std::unique_ptr<Device> device_;
    SessionOptions options_;
    DriverResources resources_;  // vectors, DMA arena and pool, bus mastering
    std::unique_ptr<PciTransport> transport_;
    std::mutex reset_mutex_;  // a rare path: the first caller resets, the others wait for it
    bool reset_ = false;      // reset_device() done: the device is not driven again
    std::atomic<int> failure_{0};
};

// The largest power of two <= min(value, 32768), at least 1.
std::uint16_t round_down_pow2(std::uint32_t value) noexcept;

}  // namespace ring3::virtio
