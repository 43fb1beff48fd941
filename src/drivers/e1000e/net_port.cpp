// The 82574L as a net::NetPort: the queue pair's bursts over RxRing/TxRing, waiting through
// irq::wait_for_completions with the queue's causes armed in IMS (82574 datasheet §7.4), and the
// factories the NIC registry calls.
#include <fmt/core.h>

#include <cerrno>
#include <thread>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/error.hpp"
#include "ring3/e1000e/port.hpp"
#include "ring3/e1000e/registers.hpp"
#include "ring3/irq/wait.hpp"

namespace ring3::e1000e {
namespace {

constexpr std::uint32_t kEthernetHeader = 14;
// Sent buffers are reclaimed in batches once this many frames are in flight (or when the ring is
// short of room): lazily, yet early enough that the same few hundred buffers cycle through the
// ring. A ring's worth of buffers in flight would spread the device's DMA (and each translation
// by an IOMMU, emulated or not) over all of them.
constexpr unsigned kTxReclaimThreshold = 128;

}  // namespace

Queue::Queue(Port& owner, std::unique_ptr<RxRing> rx, std::unique_ptr<TxRing> tx,
             irq::Interrupt* interrupt, std::uint32_t causes)
    : owner_(owner),
      rx_(std::move(rx)),
      tx_(std::move(tx)),
      interrupt_(interrupt),
      causes_(causes) {
    CycleClock::calibrate();
}

Queue::~Queue() {
    // The device was reset before (Port::stop): every buffer it held comes back.
    if (pool_ == nullptr) {
        return;
    }
    rx_->release(*pool_);
    tx_->release(*pool_);
}

void Queue::open(unsigned depth, irq::WaitMode mode, dma::BufferPool* pool) {
    depth_ = depth;
    mode_ = interrupt_ == nullptr ? irq::WaitMode::poll : mode;
    max_frame_ = owner_.info().max_frame;
    if (pool == nullptr) {
        const auto count = net::own_pool_buffers(rx_->size() + tx_->size());
        own_pool_ =
            std::make_unique<dma::BufferPool>(owner_.dma_pool(), owner_.info().buffer_size, count);
        pool = own_pool_.get();
    }
    pool_ = pool;
    rx_->refill(*pool_, depth_);
}

unsigned Queue::rx_burst(net::Packet* packets, unsigned n) noexcept {
    if (n == 0) {
        return 0;
    }
    const unsigned got = rx_->poll(packets, n, max_frame_, *pool_, stats_);
    if (got != 0 || rx_->posted() < depth_) {
        rx_->refill(*pool_, depth_);  // one RDT write for the whole burst
    }
    return got;
}

unsigned Queue::tx_burst(net::Packet* packets, unsigned n) noexcept {
    if (tx_->in_flight() >= kTxReclaimThreshold || tx_->free_slots() < n) {
        reclaim();  // in batches: DD is checked once per reported descriptor, not per frame
    }
    const std::size_t buffer_size = pool_->buffer_size();
    unsigned accepted = 0;
    for (; accepted < n; ++accepted) {
        const net::Packet& p = packets[accepted];
        if (!owns(p.buffer) || p.length < kEthernetHeader || p.length > max_frame_ ||
            std::size_t{p.offset} + p.length > buffer_size) {
            // Never sendable: accepted and dropped (net_port.hpp's convention).
            ++stats_.tx_errors;
            if (owns(p.buffer)) {
                pool_->put(p.buffer);
            }
            continue;
        }
        if (tx_->free_slots() == 0 || tx_->in_flight() >= depth_) {
            break;  // no room: this packet and the rest stay the caller's
        }
        tx_->add(p.buffer, p.buffer.iova + p.offset, static_cast<std::uint16_t>(p.length));
        ++stats_.tx_packets;
        stats_.tx_bytes += p.length;
    }
    tx_->publish();  // one TDT write per burst
    return accepted;
}

unsigned Queue::reclaim() noexcept {
    return tx_->reclaim(*pool_);
}

void Queue::arm() noexcept {
    // §10.2.4.1: clear the queue's causes (write 1s; with MSI-X a read does not clear them and
    // QEMU sends no message for a cause still pending), then unmask them (IMS). A completion
    // that landed before the unmask is caught by the DD check after it.
    mmio::RegisterIo& r = owner_.registers();
    r.write_raw<reg::Icr>(causes_);
    r.write_raw<reg::Ims>(causes_);
}

void Queue::disarm() noexcept {
    mmio::RegisterIo& r = owner_.registers();
    r.write_raw<reg::Imc>(causes_);
    r.write_raw<reg::Icr>(causes_);  // INTx: the line drops before the next re-arm
}

unsigned Queue::wait(unsigned events, std::chrono::microseconds timeout) {
    const auto ready = [&]() -> unsigned {
        unsigned found = net::kReadyNone;
        if ((events & net::kReadyRx) != 0) {
            if (rx_->posted() < depth_) {
                rx_->refill(*pool_, depth_);
            }
            if (rx_->ready()) {
                found |= net::kReadyRx;
            }
        }
        if ((events & net::kReadyTx) != 0) {
            reclaim();
            if (tx_->free_slots() != 0 && tx_->in_flight() < depth_) {
                found |= net::kReadyTx;
            }
        }
        return found;
    };
    return irq::wait_for_completions(
        mode_, interrupt_, timeout, ready,
        [&] {
            // Completions that landed before the unmask raised no interrupt: look again.
            arm();
            return ready() != 0;
        },
        [&] { disarm(); });
}

net::QueueStats Queue::stats() const noexcept {
    net::QueueStats s = stats_;
    s.notifications = rx_->counters().notifications + tx_->counters().notifications;
    return s;
}

std::uint64_t Queue::garbage() const noexcept {
    const RingCounters& c = rx_->counters();
    return c.bad_lengths + c.split_frames;
}

// ---- Port ---------------------------------------------------------------------------------------

net::Queue& Port::open_queue(unsigned index, unsigned depth, irq::WaitMode mode,
                             dma::BufferPool* pool) {
    if (index != 0) {
        throw Error::invalid(fmt::format("open queue {}", index), name(),
                             "the e1000e driver uses one queue pair (queue 0)", EINVAL);
    }
    if (queue_->opened()) {
        return *queue_;
    }
    const unsigned ring = options_.ring_size - 1;
    if (depth > ring) {
        throw Error::invalid(fmt::format("open queue 0 with depth {}", depth), name(),
                             fmt::format("the rings hold {} descriptors", ring), EINVAL);
    }
    if (mode != irq::WaitMode::poll && resources_.interrupts().empty()) {
        throw Error::invalid(fmt::format("open queue 0 in {} mode", irq::to_string(mode)), name(),
                             "the device was opened in poll mode (no interrupts)", EINVAL);
    }
    if (pool != nullptr && pool->buffer_size() < kRxBufferSize) {
        throw Error::invalid("open queue 0", name(),
                             fmt::format("the pool's {}-byte buffers are smaller than the {} "
                                         "bytes RCTL.BSIZE tells the device it may write",
                                         pool->buffer_size(), kRxBufferSize),
                             EINVAL);
    }
    queue_->open(depth == 0 ? ring : depth, mode, pool);
    return *queue_;
}

std::unique_ptr<net::NetPort> open_net(std::unique_ptr<Device> device,
                                       const net::OpenNetOptions& options) {
    if (options.queues > 1) {
        throw Error::invalid(fmt::format("open e1000e with {} queue pairs", options.queues),
                             device->name(),
                             "the e1000e driver uses one queue pair (use --queues 1)", EINVAL);
    }
    PortOptions port;
    port.mode = options.mode;
    port.pause = [] { std::this_thread::sleep_for(std::chrono::microseconds(200)); };
    return std::make_unique<Port>(std::move(device), port);
}

std::unique_ptr<net::NetPort> refuse_82540(std::unique_ptr<Device> device,
                                           const net::OpenNetOptions&) {
    throw Error::invalid(
        "open network port", device->name(),
        fmt::format("[{:04x}:{:04x}] is an Intel 82540EM (QEMU -device e1000), which ring3 does "
                    "not drive: only the 82574L (e1000e, [8086:10d3], QEMU -device e1000e) is "
                    "supported",
                    device->vendor_id(), device->device_id()),
        ENODEV);
}

}  // namespace ring3::e1000e
