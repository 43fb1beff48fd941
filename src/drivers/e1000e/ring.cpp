// The 82574's legacy receive and transmit rings (82574 datasheet §7.1, §7.2). Data path: no
// system call (the tail registers are mapped BAR0 writes), no allocation, no lock. What the
// device writes into descriptors (status, length, errors) is validated before use, counted, and
// logged at the 1st, 2nd, 4th... occurrence.
#include <algorithm>
#include <atomic>
#include <cstring>

#include "ring3/core/log.hpp"
#include "ring3/e1000e/port.hpp"
#include "ring3/e1000e/registers.hpp"

namespace ring3::e1000e {
namespace {

std::uint8_t load_status(const std::uint8_t& status) noexcept {
    // The device writes the descriptor by DMA: read the status byte once, then order every other
    // read of the descriptor after it (§7.1.4.2: DD is written last).
    const std::uint8_t value = *static_cast<const volatile std::uint8_t*>(&status);
    std::atomic_thread_fence(std::memory_order_acquire);
    return value;
}

}  // namespace

// ---- receive ----------------------------------------------------------------------------------

RxRing::RxRing(dma::DmaPool& pool, std::uint32_t size, mmio::RegisterIo& regs)
    : size_(size),
      ring_(pool.allocate(std::size_t{size} * sizeof(RxDescriptor), kRingAlignment)),
      desc_(ring_.as<RxDescriptor>()),
      regs_(regs),
      buffers_(size) {}

unsigned RxRing::refill(dma::BufferPool& buffers, unsigned limit) noexcept {
    limit = std::min(limit, size_ - 1);  // §7.1.3: RDH == RDT means "no buffers"
    unsigned added = 0;
    while (posted_ < limit) {
        dma::Buffer buffer;
        if (!buffers.get(buffer)) {
            break;  // the caller holds the rest; the next burst tries again
        }
        RxDescriptor& d = desc_[tail_];
        d.buffer = buffer.iova;
        d.length = 0;
        d.checksum = 0;
        d.errors = 0;
        d.special = 0;
        d.status = 0;  // DD clear: the device owns it
        buffers_[tail_] = buffer;
        tail_ = tail_ + 1 == size_ ? 0 : tail_ + 1;
        ++posted_;
        ++added;
    }
    if (added != 0) {
        // The descriptors are in memory before the device learns of them (a store barrier for
        // the compiler; x86 keeps stores in order, and the tail write is an uncached store).
        std::atomic_thread_fence(std::memory_order_release);
        regs_.write_raw<reg::Rdt>(tail_);
        ++counters_.notifications;
    }
    return added;
}

bool RxRing::ready() const noexcept {
    return posted_ != 0 && (load_status(desc_[next_].status) & rx_status::dd) != 0;
}

void RxRing::report(const char* what, std::uint64_t count, std::uint64_t value) const noexcept {
    if ((count & (count - 1)) != 0) {
        return;
    }
    try {
        log_warn("e1000e rx ring: descriptor with {} ({}); frame dropped ({} so far)", what, value,
                 count);
    } catch (...) {
        // Logging must not take the queue down; the counter still says it.
    }
}

unsigned RxRing::poll(net::Packet* packets, unsigned n, std::uint32_t max_frame,
                      dma::BufferPool& buffers, net::QueueStats& stats) noexcept {
    unsigned count = 0;
    while (count < n && posted_ != 0) {
        RxDescriptor& d = desc_[next_];
        const std::uint8_t status = load_status(d.status);
        if ((status & rx_status::dd) == 0) {
            break;
        }
        const std::uint16_t length = d.length;
        const std::uint8_t errors = d.errors;
        const dma::Buffer buffer = buffers_[next_];
        next_ = next_ + 1 == size_ ? 0 : next_ + 1;
        --posted_;
        // §7.1.4: one frame, one descriptor (2048-byte buffers, no long frames). A descriptor
        // without EOP is a piece of a frame larger than that: the device should not make one;
        // drop it and the rest of its frame.
        const bool eop = (status & rx_status::eop) != 0;
        const bool continuing = in_frame_;
        in_frame_ = !eop;
        if (!eop || continuing) {
            ++counters_.split_frames;
            ++stats.rx_errors;
            report("no end-of-packet (a frame split over buffers)", counters_.split_frames, length);
            buffers.put(buffer);
            continue;
        }
        if ((errors & rx_error::frame) != 0) {
            ++counters_.frame_errors;
            ++stats.rx_errors;
            report("receive errors", counters_.frame_errors, errors);
            buffers.put(buffer);
            continue;
        }
        if (length == 0 || length > kRxBufferSize || length > buffers.buffer_size() ||
            length > max_frame) {
            ++counters_.bad_lengths;
            ++stats.rx_errors;
            report("a length outside 1..max_frame", counters_.bad_lengths, length);
            buffers.put(buffer);
            continue;
        }
        net::Packet& p = packets[count++];
        p.buffer = buffer;
        p.offset = 0;
        p.flags = net::kNoFlags;
        p.length = length;
        ++stats.rx_packets;
        stats.rx_bytes += length;
    }
    return count;
}

void RxRing::release(dma::BufferPool& buffers) noexcept {
    while (posted_ != 0) {
        buffers.put(buffers_[next_]);
        next_ = next_ + 1 == size_ ? 0 : next_ + 1;
        --posted_;
    }
}

// ---- transmit ---------------------------------------------------------------------------------

TxRing::TxRing(dma::DmaPool& pool, std::uint32_t size, mmio::RegisterIo& regs)
    : size_(size),
      ring_(pool.allocate(std::size_t{size} * sizeof(TxDescriptor), kRingAlignment)),
      desc_(ring_.as<TxDescriptor>()),
      regs_(regs),
      buffers_(size),
      report_(size, 0) {}

void TxRing::add(const dma::Buffer& buffer, std::uint64_t iova, std::uint16_t length) noexcept {
    // §7.2.10.1: one buffer, one frame: EOP, and the device appends the FCS (IFCS). Report
    // Status is set by publish() on the burst's last descriptor, or here every kReportEvery.
    TxDescriptor& d = desc_[next_];
    d.buffer = iova;
    d.length = length;
    d.cso = 0;
    d.css = 0;
    d.special = 0;
    d.status = 0;
    std::uint8_t command = tx_command::eop | tx_command::ifcs;
    report_[next_] = 0;
    if (++since_report_ == kReportEvery) {
        command |= tx_command::rs;
        report_[next_] = 1;
        since_report_ = 0;
    }
    d.command = command;
    buffers_[next_] = buffer;
    next_ = next_ + 1 == size_ ? 0 : next_ + 1;
    ++in_flight_;
}

bool TxRing::publish() noexcept {
    if (next_ == tail_) {
        return false;
    }
    const std::uint32_t last = next_ == 0 ? size_ - 1 : next_ - 1;
    if (report_[last] == 0) {
        desc_[last].command = static_cast<std::uint8_t>(desc_[last].command | tx_command::rs);
        report_[last] = 1;
        since_report_ = 0;
    }
    // The descriptors are in memory before the device learns of them (see RxRing::refill).
    std::atomic_thread_fence(std::memory_order_release);
    tail_ = next_;
    regs_.write_raw<reg::Tdt>(tail_);  // QEMU sends the whole batch in this one exit
    ++counters_.notifications;
    return true;
}

unsigned TxRing::reclaim(dma::BufferPool& buffers) noexcept {
    // Walk from the oldest in-flight slot to the next one we asked a report for; if its DD is
    // set, everything up to it was sent (§7.2.3: descriptors complete in ring order). Only our
    // own record of where RS was set is trusted, never the ring's copy of the command byte.
    unsigned freed = 0;
    while (in_flight_ != 0) {
        std::uint32_t slot = clean_;
        unsigned span = 1;
        while (report_[slot] == 0 && span < in_flight_) {
            slot = slot + 1 == size_ ? 0 : slot + 1;
            ++span;
        }
        if (report_[slot] == 0 || (load_status(desc_[slot].status) & tx_status::dd) == 0) {
            break;
        }
        for (unsigned i = 0; i < span; ++i) {
            buffers.put(buffers_[clean_]);
            report_[clean_] = 0;
            clean_ = clean_ + 1 == size_ ? 0 : clean_ + 1;
        }
        in_flight_ -= span;
        freed += span;
    }
    return freed;
}

void TxRing::release(dma::BufferPool& buffers) noexcept {
    while (in_flight_ != 0) {
        buffers.put(buffers_[clean_]);
        report_[clean_] = 0;
        clean_ = clean_ + 1 == size_ ? 0 : clean_ + 1;
        --in_flight_;
    }
}

}  // namespace ring3::e1000e
