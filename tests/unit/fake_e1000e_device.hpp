// An 82574L model over testing::FakeDevice, behaving as QEMU's e1000e does where the driver can
// tell (82574 datasheet sections as in include/ring3/e1000e/registers.hpp): BAR0 is a register
// file reached through region reads and writes (not mappable, so every access is seen);
// CTRL.RST clears after `reset_reads` reads of CTRL and reloads RAL0/RAH0 (unless
// `mac_in_ral` is false: then only the EEPROM has the address, through EERD); a TDT write sends
// every descriptor up to it at once (frames recorded, DD written where RS asks); frames are
// injected into the receive ring between RDH and RDT; statistics clear when read.
#pragma once

#include <array>
#include <cstring>
#include <memory>
#include <vector>

#include "fake_device.hpp"
#include "ring3/e1000e/registers.hpp"
#include "ring3/e1000e/spec.hpp"

namespace ring3::e1000e::testing {

struct FakeE1000eOptions {
    std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    bool mac_in_ral = true;
    unsigned reset_reads = 2;   // CTRL reads before RST reads 0
    bool reset_sticks = false;  // RST never clears
    bool link_up = true;
    unsigned msix_vectors = 5;
    unsigned msi_vectors = 1;
};

class FakeE1000e {
  public:
    using Frame = std::vector<std::byte>;

    explicit FakeE1000e(const FakeE1000eOptions& options = {})
        : owned(std::make_unique<ring3::testing::FakeDevice>("fake:e1000e")),
          device(*owned),
          options_(options) {
        device.set_ids(kVendorIntel, kDevice82574L, 0x020000);
        device.set_irq_count(IrqKind::msix, options.msix_vectors);
        device.set_irq_count(IrqKind::msi, options.msi_vectors);
        device.set_irq_count(IrqKind::intx, 1);
        device.add_bar(0, reg::kRegisterSpace, false);
        power_up();
        device.on_read(0, [this](std::uint64_t offset, unsigned) { return on_read(offset); });
        device.on_write(0, [this](std::uint64_t offset, unsigned, std::uint64_t value) {
            on_write(offset, static_cast<std::uint32_t>(value));
        });
    }

    std::uint32_t get(std::size_t offset) { return device.peek<std::uint32_t>(0, offset); }
    void put(std::size_t offset, std::uint32_t value) { device.poke(0, offset, value); }

    // Receives `frame` into the next posted buffer, reporting `length` bytes (default: the
    // frame's); false when none is posted (RDH == RDT).
    bool inject(const Frame& frame, std::uint8_t status = rx_status::dd | rx_status::eop,
                int length = -1, std::uint8_t errors = 0) {
        const std::uint32_t size = get(reg::Rdlen::offset) / sizeof(RxDescriptor);
        std::uint32_t head = get(reg::Rdh::offset);
        if (size == 0 || head == get(reg::Rdt::offset)) {
            return false;
        }
        auto* ring = reinterpret_cast<RxDescriptor*>(
            device.dma().dma(ring_base(reg::Rdbal::offset), size * sizeof(RxDescriptor)));
        RxDescriptor& d = ring[head];
        std::byte* buffer = device.dma().dma(d.buffer, frame.size());
        std::memcpy(buffer, frame.data(), frame.size());
        d.length =
            static_cast<std::uint16_t>(length >= 0 ? length : static_cast<int>(frame.size()));
        d.errors = errors;
        d.status = status;
        put(reg::Rdh::offset, head + 1 == size ? 0 : head + 1);
        return true;
    }

    std::unique_ptr<ring3::testing::FakeDevice> owned;
    ring3::testing::FakeDevice& device;
    std::vector<Frame> sent;
    bool keep_sent = true;
    std::uint64_t sent_count = 0;
    unsigned tdt_writes = 0;
    unsigned rdt_writes = 0;
    std::array<std::uint32_t, 0x100> stats{};  // by (offset - 0x4000) / 4, returned once, cleared

  private:
    std::uint64_t ring_base(std::size_t low) {
        return std::uint64_t{get(low)} | std::uint64_t{get(low + 4)} << 32;
    }
    void power_up() {
        put(reg::Status::offset, options_.link_up ? 0x80u | 0x2u | 0x1u : 0u);  // 1000, LU, FD
        load_mac();
    }
    void load_mac() {
        const auto& m = options_.mac;
        if (options_.mac_in_ral) {
            put(reg::Ral0::offset, std::uint32_t{m[0]} | std::uint32_t{m[1]} << 8 |
                                       std::uint32_t{m[2]} << 16 | std::uint32_t{m[3]} << 24);
            put(reg::Rah0::offset, std::uint32_t{m[4]} | std::uint32_t{m[5]} << 8 | 1u << 31);
        } else {
            put(reg::Ral0::offset, 0);
            put(reg::Rah0::offset, 0);
        }
    }
    std::optional<std::uint64_t> on_read(std::uint64_t offset) {
        if (offset == reg::Ctrl::offset && (get(offset) & (1u << 26)) != 0 &&
            !options_.reset_sticks && ++ctrl_reads_ >= options_.reset_reads) {
            put(offset, get(offset) & ~(1u << 26));
            ctrl_reads_ = 0;
        }
        if (offset == reg::Eerd::offset && (get(offset) & 1u) != 0) {
            const std::uint32_t word = (get(offset) >> 2) & 0x3fff;
            const auto& m = options_.mac;
            const std::uint32_t data =
                word < 3 ? std::uint32_t{m[2 * word]} | std::uint32_t{m[2 * word + 1]} << 8 : 0;
            put(offset, (data << 16) | (word << 2) | 2u);
        }
        if (offset >= 0x4000 && offset < 0x4100) {
            const std::uint32_t value = stats[(offset - 0x4000) / 4];
            stats[(offset - 0x4000) / 4] = 0;
            return value;
        }
        return std::nullopt;
    }
    void on_write(std::uint64_t offset, std::uint32_t value) {
        if (offset == reg::Ctrl::offset && (value & (1u << 26)) != 0) {
            load_mac();
        } else if (offset == reg::Tdt::offset) {
            ++tdt_writes;
            transmit(value);
        } else if (offset == reg::Rdt::offset) {
            ++rdt_writes;
        } else if (offset == reg::Icr::offset) {
            put(offset, 0);  // the causes written are cleared (none are modelled)
        }
    }
    void transmit(std::uint32_t tail) {
        const std::uint32_t size = get(reg::Tdlen::offset) / sizeof(TxDescriptor);
        if (size == 0 || (get(reg::Tctl::offset) & 2u) == 0) {
            return;
        }
        auto* ring = reinterpret_cast<TxDescriptor*>(
            device.dma().dma(ring_base(reg::Tdbal::offset), size * sizeof(TxDescriptor)));
        std::uint32_t head = get(reg::Tdh::offset);
        while (head != tail && tail < size) {
            TxDescriptor& d = ring[head];
            const std::byte* data = device.dma().dma(d.buffer, d.length);
            ++sent_count;
            if (keep_sent) {
                sent.emplace_back(data, data + d.length);
            }
            if ((d.command & tx_command::rs) != 0) {
                d.status = static_cast<std::uint8_t>(d.status | tx_status::dd);
            }
            head = head + 1 == size ? 0 : head + 1;
        }
        put(reg::Tdh::offset, head);
    }

    FakeE1000eOptions options_;
    unsigned ctrl_reads_ = 0;
};

}  // namespace ring3::e1000e::testing
