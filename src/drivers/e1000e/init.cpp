// 82574L bring-up (82574 datasheet §4.6) as a steppable state machine, and the port's start and
// teardown around it: interrupts (§7.4), rings (§4.6.6, §4.6.7), statistics (§10.2.7).
#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/e1000e/port.hpp"
#include "ring3/e1000e/registers.hpp"

namespace ring3::e1000e {

const char* to_string(Initializer::State state) noexcept {
    switch (state) {
        case Initializer::State::start:
            return "start";
        case Initializer::State::resetting:
            return "resetting";
        case Initializer::State::reading_mac:
            return "reading the MAC address";
        case Initializer::State::eeprom:
            return "reading the EEPROM";
        case Initializer::State::link:
            return "setting the link up";
        case Initializer::State::link_wait:
            return "waiting for the link";
        case Initializer::State::ready:
            return "ready";
        case Initializer::State::failed:
            return "failed";
    }
    return "?";
}

void Initializer::fail(std::string why, int code) {
    error_ = std::move(why);
    error_code_ = code;
    state_ = State::failed;
}

Initializer::State Initializer::step(std::chrono::steady_clock::time_point now) {
    switch (state_) {
        case State::start: {
            // §4.6.1: mask every interrupt before the reset, and again after it (§4.6.2), so no
            // cause raised while the device comes up reaches a vector.
            regs_.write_raw<reg::Imc>(0xffffffff);
            // §4.6.2: a device reset (CTRL.RST, self-clearing) puts the MAC in its power-up state
            // and reloads RAL0/RAH0 from the EEPROM.
            auto ctrl = regs_.read<reg::Ctrl>();
            ctrl.set<reg::Ctrl::Rst>(1);
            regs_.write(ctrl);
            deadline_ = now + options_.reset_timeout;
            state_ = State::resetting;
            break;
        }
        case State::resetting: {
            const auto ctrl = regs_.read<reg::Ctrl>();
            if (ctrl.raw() == 0xffffffff) {
                fail("CTRL reads all ones: the device is gone or its BAR0 is not decoded", EIO);
                break;
            }
            if (ctrl.get<reg::Ctrl::Rst>() != 0) {
                if (now > deadline_) {
                    fail(fmt::format("CTRL.RST still set {} ms after the reset",
                                     options_.reset_timeout.count()),
                         ETIMEDOUT);
                }
                break;
            }
            regs_.write_raw<reg::Imc>(0xffffffff);
            (void)regs_.read<reg::Icr>();  // drop causes left from before the reset
            regs_.write_raw<reg::Icr>(0xffffffff);
            state_ = State::reading_mac;
            break;
        }
        case State::reading_mac: {
            // §10.2.5.15/16: the reset loaded the station address into RAL0/RAH0 with AV set.
            const auto ral = regs_.read<reg::Ral0>().raw();
            const auto rah = regs_.read<reg::Rah0>();
            const auto high = static_cast<std::uint32_t>(rah.get<reg::Rah0::High>());
            for (unsigned i = 0; i < 4; ++i) {
                mac_.bytes[i] = static_cast<std::uint8_t>(ral >> (8 * i));
            }
            mac_.bytes[4] = static_cast<std::uint8_t>(high);
            mac_.bytes[5] = static_cast<std::uint8_t>(high >> 8);
            if (rah.get<reg::Rah0::Av>() != 0 && !mac_.is_zero() && !mac_.is_multicast()) {
                state_ = State::link;
                break;
            }
            // Not valid: read the address from the EEPROM (§3.2.3.3, words 0..2) via EERD.
            mac_ = {};
            mac_from_eeprom_ = true;
            eeprom_word_ = 0;
            regs_.write(mmio::Value<reg::Eerd>().set<reg::Eerd::Addr>(0).set<reg::Eerd::Start>(1));
            deadline_ = now + options_.eeprom_timeout;
            state_ = State::eeprom;
            break;
        }
        case State::eeprom: {
            const auto eerd = regs_.read<reg::Eerd>();
            if (eerd.get<reg::Eerd::Done>() == 0) {
                if (now > deadline_) {
                    fail(fmt::format("EEPROM word {} not read within {} ms (EERD.DONE clear)",
                                     eeprom_word_, options_.eeprom_timeout.count()),
                         ETIMEDOUT);
                }
                break;
            }
            const auto word = static_cast<std::uint16_t>(eerd.get<reg::Eerd::Data>());
            mac_.bytes[2 * eeprom_word_] = static_cast<std::uint8_t>(word);
            mac_.bytes[2 * eeprom_word_ + 1] = static_cast<std::uint8_t>(word >> 8);
            if (++eeprom_word_ < kEepromMacWords) {
                regs_.write(mmio::Value<reg::Eerd>()
                                .set<reg::Eerd::Addr>(eeprom_word_)
                                .set<reg::Eerd::Start>(1));
                deadline_ = now + options_.eeprom_timeout;
                break;
            }
            if (mac_.is_zero() || mac_.is_multicast()) {
                fail(fmt::format("neither RAL0/RAH0 nor the EEPROM hold a unicast MAC address "
                                 "(EEPROM: {})",
                                 mac_.to_string()),
                     EIO);
                break;
            }
            // Program it, so the receive filter (§7.1.1.1) matches it.
            const auto& b = mac_.bytes;
            regs_.write_raw<reg::Ral0>(std::uint32_t{b[0]} | std::uint32_t{b[1]} << 8 |
                                       std::uint32_t{b[2]} << 16 | std::uint32_t{b[3]} << 24);
            regs_.write(mmio::Value<reg::Rah0>()
                            .set<reg::Rah0::High>(std::uint32_t{b[4]} | std::uint32_t{b[5]} << 8)
                            .set<reg::Rah0::Av>(1));
            state_ = State::link;
            break;
        }
        case State::link: {
            // §4.6.4 (MAC/PHY link setup, auto-negotiation): CTRL.SLU set, speed and duplex
            // not forced, so the MAC takes what the PHY negotiated; §10.2.2.5: DRV_LOAD tells
            // the manageability firmware a driver owns the device.
            auto ctrl = regs_.read<reg::Ctrl>();
            ctrl.set<reg::Ctrl::Slu>(1)
                .set<reg::Ctrl::FrcSpd>(0)
                .set<reg::Ctrl::FrcDplx>(0)
                .set<reg::Ctrl::PhyRst>(0)
                .set<reg::Ctrl::Vme>(0);
            regs_.write(ctrl);
            auto ext = regs_.read<reg::CtrlExt>();
            ext.set<reg::CtrlExt::DrvLoad>(1);
            regs_.write(ext);
            deadline_ = now + options_.link_timeout;
            state_ = State::link_wait;
            break;
        }
        case State::link_wait:
            if (regs_.read<reg::Status>().get<reg::Status::Lu>() != 0 || now > deadline_) {
                state_ = State::ready;  // a link still down is reported by link(), not refused
            }
            break;
        case State::ready:
        case State::failed:
            break;
    }
    return state_;
}

// ---- statistics ---------------------------------------------------------------------------------

void accumulate_stats(mmio::RegisterIo& regs, HardwareStats& s) {
    namespace st = reg::stats;
    // §10.2.7: 64-bit octet counters clear when their high half is read: low first.
    const auto pair = [&](std::uint64_t low, std::uint64_t high) { return low | high << 32; };
    s.good_rx_packets += regs.read<st::Gprc>().raw();
    s.good_tx_packets += regs.read<st::Gptc>().raw();
    const std::uint64_t gorcl = regs.read<st::Gorcl>().raw();
    s.good_rx_octets += pair(gorcl, regs.read<st::Gorch>().raw());
    const std::uint64_t gotcl = regs.read<st::Gotcl>().raw();
    s.good_tx_octets += pair(gotcl, regs.read<st::Gotch>().raw());
    s.total_rx_packets += regs.read<st::Tpr>().raw();
    s.total_tx_packets += regs.read<st::Tpt>().raw();
    const std::uint64_t torl = regs.read<st::Torl>().raw();
    (void)pair(torl, regs.read<st::Torh>().raw());  // read to clear; GORC is what is reported
    const std::uint64_t totl = regs.read<st::Totl>().raw();
    (void)pair(totl, regs.read<st::Toth>().raw());
    s.missed += regs.read<st::Mpc>().raw();
    s.no_buffer += regs.read<st::Rnbc>().raw();
    s.crc_errors += regs.read<st::Crcerrs>().raw();
    s.rx_errors += regs.read<st::Rxerrc>().raw();
    s.undersize += regs.read<st::Ruc>().raw();
    s.oversize += regs.read<st::Roc>().raw();
    s.broadcast_rx += regs.read<st::Bprc>().raw();
    s.multicast_rx += regs.read<st::Mprc>().raw();
}

// ---- Port: start and stop -----------------------------------------------------------------------

const char* to_string(InterruptKind kind) noexcept {
    switch (kind) {
        case InterruptKind::none:
            return "none (poll)";
        case InterruptKind::msix:
            return "MSI-X";
        case InterruptKind::msi:
            return "MSI";
        case InterruptKind::intx:
            return "INTx";
    }
    return "?";
}

Port::Port(std::unique_ptr<Device> device, const PortOptions& options)
    : device_(std::move(device)), options_(options), windows_(*device_), resources_(*device_) {
    try {
        start();
    } catch (...) {
        stop();  // a half-started device is reset and let go, not left running
        throw;
    }
}

Port::~Port() {
    if (running_) {
        try {
            update_stats();
            log_info(
                "{}: e1000e statistics: rx {} good packets ({} octets), tx {} ({} octets), "
                "missed {}, no buffer {}, crc errors {}, rx errors {}",
                name(), hw_stats_.good_rx_packets, hw_stats_.good_rx_octets,
                hw_stats_.good_tx_packets, hw_stats_.good_tx_octets, hw_stats_.missed,
                hw_stats_.no_buffer, hw_stats_.crc_errors, hw_stats_.rx_errors);
        } catch (const std::exception& e) {
            log_warn("{}: reading statistics: {}", device_->name(), e.what());
        }
    }
    stop();
}

std::string Port::name() const {
    return device_->name();
}

void Port::refuse(const std::string& why, int code) {
    throw Error::invalid("open e1000e", device_->name(), why, code);
}

void Port::start() {
    if (options_.ring_size < kRingGranule || options_.ring_size % kRingGranule != 0 ||
        options_.ring_size > kMaxRingSize) {
        throw Error::invalid("open e1000e", device_->name(),
                             fmt::format("a ring of {} descriptors: must be a multiple of {} "
                                         "up to {}",
                                         options_.ring_size, kRingGranule, kMaxRingSize),
                             EINVAL);
    }
    regs_ = windows_.open(0, 0, reg::kRegisterSpace);  // §10.1.1: BAR0, 128 KiB of registers
    setup_interrupts();
    resources_.create_dma(options_.arena);

    running_ = true;
    Initializer init(*regs_, options_);
    while (!init.done()) {
        const auto before = init.state();
        init.step(std::chrono::steady_clock::now());
        if (init.state() == before && !init.done() && options_.pause) {
            options_.pause();
        }
    }
    if (init.state() == Initializer::State::failed) {
        refuse(init.error(), init.error_code());
    }
    mac_from_eeprom_ = init.mac_from_eeprom();

    // §4.6.7 and §4.6.6 need bus mastering for the device's descriptor fetches; MSI/MSI-X
    // messages are memory writes too.
    resources_.enable_bus_master();
    setup_rings();

    info_.mac = init.mac();
    info_.mtu = 1500;
    info_.max_frame = 1514;  // RCTL.LPE off: no frame beyond 1518 bytes with FCS (§7.1.1)
    info_.queue_pairs = 1;
    info_.max_queue_depth = options_.ring_size - 1;
    info_.buffer_size = kRxBufferSize;
    info_.headroom = 0;
    info_.offloads = 0;
    const net::LinkStatus l = link();
    log_info(
        "{}: e1000e (82574L) {}{}, 1 queue pair of {} descriptors, interrupts {}, link {}{}",
        name(), info_.mac.to_string(), mac_from_eeprom_ ? " (from the EEPROM)" : "",
        options_.ring_size, to_string(interrupt_kind_), l.up ? "up" : "down",
        l.up ? fmt::format(" {} Mbit/s {} duplex", l.speed_mbps, l.full_duplex ? "full" : "half")
             : std::string());
}

void Port::setup_interrupts() {
    if (options_.mode == irq::WaitMode::poll) {
        return;
    }
    // §7.4: MSI-X when the device (and backend) offer it, with the queue's causes on vector 0
    // and "Other" (link changes) on vector 1; else one MSI or INTx for everything.
    const unsigned msix = device_->irq_count(IrqKind::msix);
    if (msix >= 2) {
        resources_.enable_irqs(IrqKind::msix, 2);
        interrupt_kind_ = InterruptKind::msix;
    } else if (device_->irq_count(IrqKind::msi) >= 1) {
        resources_.enable_irqs(IrqKind::msi, 1);
        interrupt_kind_ = InterruptKind::msi;
    } else if (device_->irq_count(IrqKind::intx) >= 1) {
        resources_.enable_irqs(IrqKind::intx, 1);
        interrupt_kind_ = InterruptKind::intx;
    } else {
        throw Error::invalid(
            fmt::format("open e1000e in {} mode", irq::to_string(options_.mode)), device_->name(),
            "the device offers no MSI-X, MSI or INTx through this backend (use --mode poll)",
            ENOTSUP);
    }
}

std::uint32_t Port::throttle_interval() const {
    return static_cast<std::uint32_t>(
        std::min<std::int64_t>(options_.interrupt_interval.count() / reg::kItrUnitNs, 0xffff));
}

void Port::setup_rings() {
    mmio::RegisterIo& r = *regs_;
    const std::uint32_t size = options_.ring_size;
    auto rx = std::make_unique<RxRing>(resources_.pool(), size, r);
    auto tx = std::make_unique<TxRing>(resources_.pool(), size, r);

    // §4.6.6: receive initialisation. Ring base and length, head and tail 0 (no buffers yet:
    // Queue::open posts them), no delay timers (an interrupt per write-back, throttled by ITR).
    r.write_raw<reg::Rdbal>(static_cast<std::uint32_t>(rx->iova()));
    r.write_raw<reg::Rdbah>(static_cast<std::uint32_t>(rx->iova() >> 32));
    r.write_raw<reg::Rdlen>(rx->bytes());
    r.write_raw<reg::Rdh>(0);
    r.write_raw<reg::Rdt>(0);
    r.write_raw<reg::Rdtr>(0);
    r.write_raw<reg::Radv>(0);
    auto rfctl = r.read<reg::Rfctl>();
    rfctl.set<reg::Rfctl::Exsten>(0);  // legacy receive descriptors (§7.1.4.1)
    r.write(rfctl);
    // Every frame is received (unicast and multicast promiscuous, broadcast): NetPort has no
    // receive filters yet, and virtio-net without CTRL_RX receives everything too. CRC
    // stripped; 2048-byte buffers; legacy descriptors; no loopback; long frames refused.
    r.write(mmio::Value<reg::Rctl>()
                .set<reg::Rctl::En>(1)
                .set<reg::Rctl::Upe>(1)
                .set<reg::Rctl::Mpe>(1)
                .set<reg::Rctl::Bam>(1)
                .set<reg::Rctl::Secrc>(1)
                .set<reg::Rctl::Bsize>(0)
                .set<reg::Rctl::Bsex>(0)
                .set<reg::Rctl::Dtyp>(0)
                .set<reg::Rctl::Lbm>(0)
                .set<reg::Rctl::Lpe>(0));

    // §4.6.7: transmit initialisation. Ring, head and tail 0, descriptors written back one by
    // one (WTHRESH 1, GRAN descriptors), pad short frames, full-duplex collision distance,
    // the datasheet's IPG for IEEE 802.3 (§10.2.6.2: 8, 8, 6).
    r.write_raw<reg::Tdbal>(static_cast<std::uint32_t>(tx->iova()));
    r.write_raw<reg::Tdbah>(static_cast<std::uint32_t>(tx->iova() >> 32));
    r.write_raw<reg::Tdlen>(tx->bytes());
    r.write_raw<reg::Tdh>(0);
    r.write_raw<reg::Tdt>(0);
    r.write_raw<reg::Tidv>(0);
    r.write_raw<reg::Tadv>(0);
    r.write(mmio::Value<reg::Txdctl>()
                .set<reg::Txdctl::Gran>(1)
                .set<reg::Txdctl::Wthresh>(1)
                .set<reg::Txdctl::Pthresh>(0)
                .set<reg::Txdctl::Hthresh>(0));
    r.write(mmio::Value<reg::Tipg>()
                .set<reg::Tipg::Ipgt>(8)
                .set<reg::Tipg::Ipgr1>(8)
                .set<reg::Tipg::Ipgr2>(6));
    r.write(mmio::Value<reg::Tctl>()
                .set<reg::Tctl::En>(1)
                .set<reg::Tctl::Psp>(1)
                .set<reg::Tctl::Ct>(0x0f)
                .set<reg::Tctl::Cold>(0x3f));

    // §7.4.4: throttling in 256 ns units, per vector (EITR) with MSI-X, else ITR.
    const std::uint32_t interval = throttle_interval();
    r.write(mmio::Value<reg::Itr>().set<reg::Itr::Interval>(interval));
    for (unsigned v = 0; v < reg::kEitrCount; ++v) {
        r.write32(reg::Eitr::offset_of(v), interval);
    }

    // Causes of the queue pair's interrupt (§10.2.4.1): with MSI-X the per-queue causes RxQ0 and
    // TxQ0, routed by IVAR (§10.2.4.9) to vector 0 and auto-cleared with EIAC (§10.2.4.4), link
    // changes ("Other") to vector 1; with MSI/INTx the receive timer and TX write-back.
    std::uint32_t causes = 0;
    if (interrupt_kind_ == InterruptKind::msix) {
        r.write(mmio::Value<reg::Ivar>()
                    .set<reg::Ivar::RxQ0Vector>(0)
                    .set<reg::Ivar::RxQ0Valid>(1)
                    .set<reg::Ivar::TxQ0Vector>(0)
                    .set<reg::Ivar::TxQ0Valid>(1)
                    .set<reg::Ivar::OtherVector>(1)
                    .set<reg::Ivar::OtherValid>(1));
        causes = static_cast<std::uint32_t>(reg::Cause::RxQ0::mask | reg::Cause::TxQ0::mask);
        r.write_raw<reg::Eiac>(causes);
    } else if (interrupt_kind_ != InterruptKind::none) {
        causes = static_cast<std::uint32_t>(reg::Cause::Rxt0::mask | reg::Cause::Txdw::mask);
    }
    auto& vectors = resources_.interrupts();
    irq::Interrupt* interrupt = vectors.empty() ? nullptr : &vectors.front();
    queue_ = std::make_unique<Queue>(*this, std::move(rx), std::move(tx), interrupt, causes);
}

void Port::stop() noexcept {
    if (running_ && regs_) {
        try {
            // §4.6.2: a reset stops both DMA engines before the rings' memory goes.
            regs_->write_raw<reg::Imc>(0xffffffff);
            if (interrupt_kind_ != InterruptKind::none) {
                // An interrupt's throttling timer may still run; see interrupt_settle_time.
                std::this_thread::sleep_for(reg::interrupt_settle_time(throttle_interval()));
            }
            regs_->write_raw<reg::Rctl>(0);
            regs_->write_raw<reg::Tctl>(0);
            auto ctrl = regs_->read<reg::Ctrl>();
            ctrl.set<reg::Ctrl::Rst>(1);
            regs_->write(ctrl);
            for (int i = 0; i < 1000 && regs_->read<reg::Ctrl>().get<reg::Ctrl::Rst>() != 0; ++i) {
                if (options_.pause) {
                    options_.pause();
                }
            }
        } catch (const std::exception& e) {
            log_warn("{}: resetting the device: {}", device_->name(), e.what());
        }
        running_ = false;
    }
    queue_.reset();  // its buffers came from the pool
    resources_.release();
    regs_.reset();
}

const HardwareStats& Port::update_stats() {
    accumulate_stats(*regs_, hw_stats_);
    return hw_stats_;
}

net::LinkStatus Port::link() const {
    // §10.2.2.2: STATUS.LU, SPEED and FD.
    const auto status = regs_->read<reg::Status>();
    net::LinkStatus l;
    l.up = status.get<reg::Status::Lu>() != 0;
    switch (status.get<reg::Status::Speed>()) {
        case 0:
            l.speed_mbps = 10;
            break;
        case 1:
            l.speed_mbps = 100;
            break;
        default:
            l.speed_mbps = 1000;
            break;
    }
    l.full_duplex = status.get<reg::Status::Fd>() != 0;
    if (!l.up) {
        l.speed_mbps = 0;
    }
    return l;
}

}  // namespace ring3::e1000e
