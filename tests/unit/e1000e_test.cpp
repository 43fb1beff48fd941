// The e1000e driver (include/ring3/e1000e/port.hpp) over the FakeE1000e model: the bring-up
// stepped register by register with a fake clock, the MAC address from RAL0/RAH0 or the EEPROM,
// transmit with one TDT write per burst and lazy recycling, receive with device garbage counted
// and never trusted, interrupt routing (IVAR, MSI fallback), statistics accumulated, and the
// 82540 refused.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "fake_device.hpp"
#include "fake_e1000e_device.hpp"
#include "ring3/e1000e/port.hpp"
#include "ring3/e1000e/registers.hpp"
#include "test_support.hpp"

extern std::atomic<std::uint64_t> g_allocations;  // counting_new.cpp

namespace ring3::e1000e {
namespace {

using namespace std::chrono_literals;
using ring3::testing::error_of;
using testing::FakeE1000e;
using testing::FakeE1000eOptions;
using Frame = FakeE1000e::Frame;

PortOptions small_options() {
    PortOptions o;
    o.arena.chunk_size = 2 << 20;
    o.arena.max_size = 32 << 20;
    o.arena.huge_pages = dma::HugePages::never;
    o.ring_size = 64;
    return o;
}

Frame frame_of(std::uint32_t length, std::uint8_t seed) {
    Frame f(length);
    for (std::uint32_t i = 0; i < length; ++i) {
        f[i] = static_cast<std::byte>(seed + i * 7);
    }
    return f;
}

// The register window of the model's BAR0, as the port opens it.
struct InitRig {
    explicit InitRig(const FakeE1000eOptions& o = {}) : model(o), windows(model.device) {
        regs = windows.open(0, 0, reg::kRegisterSpace);
    }
    FakeE1000e model;
    RegisterWindows windows;
    std::unique_ptr<mmio::RegisterIo> regs;
};

std::vector<std::pair<bool, std::uint64_t>> accesses_since(ring3::testing::FakeDevice& d,
                                                           std::size_t from) {
    std::vector<std::pair<bool, std::uint64_t>> out;
    for (std::size_t i = from; i < d.accesses.size(); ++i) {
        out.emplace_back(d.accesses[i].write, d.accesses[i].offset);
    }
    return out;
}

TEST(E1000eInitializer, StepsThroughResetMacAndLinkRegisterByRegister) {
    InitRig rig;
    Initializer init(*rig.regs, small_options());
    const auto t0 = std::chrono::steady_clock::time_point{};
    auto& d = rig.model.device;

    std::size_t at = d.accesses.size();
    EXPECT_EQ(init.step(t0), Initializer::State::resetting);
    // §4.6.1 then §4.6.2: interrupts masked, then CTRL read-modify-written with RST.
    EXPECT_EQ(
        accesses_since(d, at),
        (std::vector<std::pair<bool, std::uint64_t>>{
            {true, reg::Imc::offset}, {false, reg::Ctrl::offset}, {true, reg::Ctrl::offset}}));
    EXPECT_NE(rig.model.get(reg::Ctrl::offset) & (1u << 26), 0u);
    EXPECT_EQ(rig.model.get(reg::Imc::offset), 0xffffffffu);

    EXPECT_EQ(init.step(t0 + 1ms), Initializer::State::resetting);  // RST still set (1st read)
    at = d.accesses.size();
    EXPECT_EQ(init.step(t0 + 2ms), Initializer::State::reading_mac);
    EXPECT_EQ(accesses_since(d, at),
              (std::vector<std::pair<bool, std::uint64_t>>{{false, reg::Ctrl::offset},
                                                           {true, reg::Imc::offset},
                                                           {false, reg::Icr::offset},
                                                           {true, reg::Icr::offset}}));
    EXPECT_EQ(init.step(t0 + 3ms), Initializer::State::link);
    EXPECT_EQ(init.mac().to_string(), "52:54:00:12:34:56");
    EXPECT_FALSE(init.mac_from_eeprom());
    EXPECT_EQ(init.step(t0 + 4ms), Initializer::State::link_wait);
    EXPECT_NE(rig.model.get(reg::Ctrl::offset) & (1u << 6), 0u);      // SLU
    EXPECT_NE(rig.model.get(reg::CtrlExt::offset) & (1u << 28), 0u);  // DRV_LOAD
    EXPECT_EQ(init.step(t0 + 5ms), Initializer::State::ready);
}

TEST(E1000eInitializer, ReadsTheMacFromTheEepromWhenRal0IsNotValid) {
    FakeE1000eOptions o;
    o.mac_in_ral = false;
    o.mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
    InitRig rig(o);
    Initializer init(*rig.regs, small_options());
    auto now = std::chrono::steady_clock::time_point{};
    while (!init.done()) {
        init.step(now += 1ms);
    }
    ASSERT_EQ(init.state(), Initializer::State::ready) << init.error();
    EXPECT_TRUE(init.mac_from_eeprom());
    EXPECT_EQ(init.mac().to_string(), "02:11:22:33:44:55");
    // Programmed into RAL0/RAH0 with Address Valid, so the receive filter matches it.
    EXPECT_EQ(rig.model.get(reg::Ral0::offset), 0x33221102u);
    EXPECT_EQ(rig.model.get(reg::Rah0::offset), 0x80005544u);
}

TEST(E1000eInitializer, AResetThatNeverEndsTimesOut) {
    FakeE1000eOptions o;
    o.reset_sticks = true;
    InitRig rig(o);
    Initializer init(*rig.regs, small_options());
    const auto t0 = std::chrono::steady_clock::time_point{};
    init.step(t0);
    EXPECT_EQ(init.step(t0 + 50ms), Initializer::State::resetting);
    EXPECT_EQ(init.step(t0 + 101ms), Initializer::State::failed);
    EXPECT_EQ(init.error_code(), ETIMEDOUT);
    EXPECT_EQ(init.error(), "CTRL.RST still set 100 ms after the reset");
}

TEST(E1000eInitializer, ALinkThatStaysDownIsReportedNotRefused) {
    FakeE1000eOptions o;
    o.link_up = false;
    InitRig rig(o);
    Initializer init(*rig.regs, small_options());
    auto now = std::chrono::steady_clock::time_point{};
    for (int i = 0; i < 5; ++i) {
        init.step(now += 1ms);
    }
    EXPECT_EQ(init.state(), Initializer::State::link_wait);
    EXPECT_EQ(init.step(now + 3001ms), Initializer::State::ready);
}

struct PortRig {
    explicit PortRig(irq::WaitMode mode = irq::WaitMode::poll, FakeE1000eOptions o = {}) {
        auto fake = std::make_unique<FakeE1000e>(o);
        model = fake.get();
        PortOptions options = small_options();
        options.mode = mode;
        options.interrupt_interval = std::chrono::microseconds(10);
        device = std::move(fake->owned);
        keep = std::move(fake);
        port = std::make_unique<Port>(std::move(device), options);
    }
    FakeE1000e* model;
    std::unique_ptr<FakeE1000e> keep;
    std::unique_ptr<Device> device;
    std::unique_ptr<Port> port;
};

TEST(E1000ePort, ReportsMacLinkAndProgramsTheRings) {
    PortRig rig;
    EXPECT_EQ(rig.port->info().mac.to_string(), "52:54:00:12:34:56");
    EXPECT_EQ(rig.port->info().max_frame, 1514u);
    const net::LinkStatus link = rig.port->link();
    EXPECT_TRUE(link.up);
    EXPECT_EQ(link.speed_mbps, 1000u);
    EXPECT_TRUE(link.full_duplex);
    FakeE1000e& m = *rig.model;
    EXPECT_EQ(m.get(reg::Rdlen::offset), 64u * 16);
    EXPECT_EQ(m.get(reg::Tdlen::offset), 64u * 16);
    EXPECT_EQ(m.get(reg::Rdbal::offset) % 128, 0u);
    const std::uint32_t rctl = m.get(reg::Rctl::offset);
    EXPECT_NE(rctl & (1u << 1), 0u);   // EN
    EXPECT_NE(rctl & (1u << 26), 0u);  // SECRC
    EXPECT_EQ(rctl & (3u << 16), 0u);  // BSIZE 2048
    EXPECT_EQ(rctl & (3u << 10), 0u);  // legacy descriptors
    EXPECT_NE(m.get(reg::Tctl::offset) & (1u << 1), 0u);
    EXPECT_EQ(m.get(reg::Itr::offset), 10000u / 256);  // 10 us in 256 ns units
    EXPECT_TRUE(rig.port->update_stats().good_rx_packets == 0);
}

TEST(E1000ePort, TransmitsABurstWithOneTailWriteAndRecyclesLazily) {
    PortRig rig;
    net::Queue& q = rig.port->open_queue(0);
    const unsigned free_before = q.pool().available();
    net::Packet packets[40];
    std::vector<Frame> frames;
    for (unsigned i = 0; i < 40; ++i) {
        frames.push_back(frame_of(60 + i * 37, static_cast<std::uint8_t>(i)));
        ASSERT_TRUE(q.pool().get(packets[i].buffer));
        packets[i].offset = 0;
        packets[i].length = static_cast<std::uint32_t>(frames[i].size());
        std::memcpy(packets[i].data(), frames[i].data(), frames[i].size());
    }
    const unsigned writes = rig.model->tdt_writes;
    ASSERT_EQ(q.tx_burst(packets, 40), 40u);
    EXPECT_EQ(rig.model->tdt_writes, writes + 1);  // one TDT write for the burst
    ASSERT_EQ(rig.model->sent.size(), 40u);
    for (unsigned i = 0; i < 40; ++i) {
        EXPECT_EQ(rig.model->sent[i], frames[i]) << "frame " << i;
    }
    EXPECT_EQ(q.tx_pending(), 40u);  // not reclaimed until asked (or the ring runs short)
    EXPECT_EQ(q.reclaim(), 40u);
    EXPECT_EQ(q.tx_pending(), 0u);
    EXPECT_EQ(q.pool().available(), free_before);
    EXPECT_EQ(q.stats().tx_packets, 40u);
}

TEST(E1000ePort, FramesThatCanNeverBeSentAreCountedAndDropped) {
    PortRig rig;
    net::Queue& q = rig.port->open_queue(0);
    net::Packet p[2];
    ASSERT_TRUE(q.pool().get(p[0].buffer));
    p[0].length = 1515;  // beyond max_frame
    ASSERT_TRUE(q.pool().get(p[1].buffer));
    p[1].length = 10;  // shorter than an Ethernet header
    EXPECT_EQ(q.tx_burst(p, 2), 2u);
    EXPECT_EQ(q.stats().tx_errors, 2u);
    EXPECT_TRUE(rig.model->sent.empty());
}

TEST(E1000ePort, ReceivesInjectedFramesAndRefillsWithOneTailWrite) {
    PortRig rig;
    net::Queue& q = rig.port->open_queue(0);
    EXPECT_EQ(rig.model->get(reg::Rdt::offset), 63u);  // all but one posted (§7.1.3)
    std::vector<Frame> frames;
    for (unsigned i = 0; i < 10; ++i) {
        frames.push_back(frame_of(60 + i * 145, static_cast<std::uint8_t>(i)));
        ASSERT_TRUE(rig.model->inject(frames.back()));
    }
    const unsigned writes = rig.model->rdt_writes;
    net::Packet in[16];
    ASSERT_EQ(q.rx_burst(in, 16), 10u);
    EXPECT_EQ(rig.model->rdt_writes, writes + 1);
    for (unsigned i = 0; i < 10; ++i) {
        ASSERT_EQ(in[i].length, frames[i].size());
        EXPECT_EQ(0, std::memcmp(in[i].data(), frames[i].data(), frames[i].size()));
        q.pool().put(in[i].buffer);
    }
    EXPECT_EQ(q.stats().rx_packets, 10u);
}

TEST(E1000ePort, DescriptorGarbageIsCountedNotTrusted) {
    PortRig rig;
    net::Queue& q = rig.port->open_queue(0);
    const Frame good = frame_of(100, 1);
    ASSERT_TRUE(rig.model->inject(good, rx_status::dd | rx_status::eop, 4000));  // too long
    ASSERT_TRUE(rig.model->inject(good, rx_status::dd | rx_status::eop, 0));
    ASSERT_TRUE(rig.model->inject(good, rx_status::dd));  // no EOP: a split frame...
    ASSERT_TRUE(rig.model->inject(good, rx_status::dd | rx_status::eop));  // ...and its end
    ASSERT_TRUE(rig.model->inject(good, rx_status::dd | rx_status::eop, -1, rx_error::ce));
    ASSERT_TRUE(rig.model->inject(good));
    net::Packet in[8];
    ASSERT_EQ(q.rx_burst(in, 8), 1u);
    EXPECT_EQ(in[0].length, 100u);
    q.pool().put(in[0].buffer);
    EXPECT_EQ(q.stats().rx_errors, 5u);
    EXPECT_EQ(q.stats().rx_packets, 1u);
}

TEST(E1000ePort, PollModeBurstsAllocateNothing) {
    PortRig rig;
    net::Queue& q = rig.port->open_queue(0);
    rig.model->keep_sent = false;
    net::Packet packets[8];
    const auto round = [&] {
        for (auto& p : packets) {
            ASSERT_TRUE(q.pool().get(p.buffer));
            p.offset = 0;
            p.length = 64;
        }
        ASSERT_EQ(q.tx_burst(packets, 8), 8u);
        q.reclaim();
        net::Packet in[8];
        const unsigned n = q.rx_burst(in, 8);
        for (unsigned i = 0; i < n; ++i) {
            q.pool().put(in[i].buffer);
        }
    };
    round();
    rig.model->device.accesses.reserve(rig.model->device.accesses.size() + 10000);
    rig.model->device.dma().accessed.reserve(rig.model->device.dma().accessed.size() + 100000);
    const std::uint64_t before = g_allocations.load();
    for (int r = 0; r < 50; ++r) {
        round();
    }
    EXPECT_EQ(g_allocations.load() - before, 0u);
    EXPECT_EQ(rig.model->sent_count, 408u);
}

TEST(E1000ePort, MsixRoutesTheQueueThroughIvarAndOtherToVector1) {
    PortRig rig(irq::WaitMode::interrupt);
    EXPECT_EQ(rig.port->interrupt_kind(), InterruptKind::msix);
    // RxQ0 and TxQ0 -> vector 0 (valid), Other -> vector 1 (valid): §10.2.4.9.
    EXPECT_EQ(rig.model->get(reg::Ivar::offset), 0x8u | 0x8u << 8 | (0x8u | 1u) << 16);
    EXPECT_EQ(rig.model->get(reg::Eiac::offset), 1u << 20 | 1u << 22);
    EXPECT_EQ(rig.model->device.enabled_vectors(IrqKind::msix), 2u);
    EXPECT_EQ(rig.model->get(reg::Eitr::offset_of(0)), 10000u / 256);
}

TEST(E1000ePort, FallsBackToMsiWithoutMsix) {
    FakeE1000eOptions o;
    o.msix_vectors = 0;
    PortRig rig(irq::WaitMode::interrupt, o);
    EXPECT_EQ(rig.port->interrupt_kind(), InterruptKind::msi);
    EXPECT_EQ(rig.model->device.enabled_vectors(IrqKind::msi), 1u);
}

TEST(E1000ePort, InterruptModeWaitArmsTheQueueCauses) {
    PortRig rig(irq::WaitMode::interrupt);
    net::Queue& q = rig.port->open_queue(0, 0, irq::WaitMode::interrupt);
    EXPECT_EQ(q.wait(net::kReadyRx, 1ms), net::kReadyNone);            // nothing arrived: timed out
    EXPECT_EQ(rig.model->get(reg::Ims::offset), 1u << 20 | 1u << 22);  // armed
    EXPECT_EQ(rig.model->get(reg::Imc::offset), 1u << 20 | 1u << 22);  // disarmed after
    ASSERT_TRUE(rig.model->inject(frame_of(64, 3)));
    rig.model->device.raise(IrqKind::msix, 0);
    EXPECT_EQ(q.wait(net::kReadyRx, 1s), net::kReadyRx);
}

TEST(E1000ePort, StatisticsAreAccumulatedAcrossReadOnClearReads) {
    PortRig rig;
    rig.model->stats[(reg::stats::Gprc::offset - 0x4000) / 4] = 5;
    rig.model->stats[(reg::stats::Gorcl::offset - 0x4000) / 4] = 500;
    EXPECT_EQ(rig.port->update_stats().good_rx_packets, 5u);
    rig.model->stats[(reg::stats::Gprc::offset - 0x4000) / 4] = 7;
    rig.model->stats[(reg::stats::Gorch::offset - 0x4000) / 4] = 1;
    const HardwareStats& s = rig.port->update_stats();
    EXPECT_EQ(s.good_rx_packets, 12u);
    EXPECT_EQ(s.good_rx_octets, 500u + (1ull << 32));
}

TEST(E1000ePort, TheOldE1000IsRefusedByName) {
    auto device = std::make_unique<ring3::testing::FakeDevice>("vfio:0000:03:00.0");
    device->set_ids(kVendorIntel, kDevice82540EM, 0x020000);
    EXPECT_EQ(error_of([&] { refuse_82540(std::move(device), {}); }, ENODEV),
              "open network port vfio:0000:03:00.0: [8086:100e] is an Intel 82540EM (QEMU "
              "-device e1000), which ring3 does not drive: only the 82574L (e1000e, [8086:10d3], "
              "QEMU -device e1000e) is supported");
}

TEST(E1000ePort, BadOptionsAreRefused) {
    FakeE1000e model;
    PortOptions o = small_options();
    o.ring_size = 60;
    EXPECT_EQ(error_of([&] { Port(std::move(model.owned), o); }, EINVAL),
              "open e1000e fake:e1000e: a ring of 60 descriptors: must be a multiple of 8 up to "
              "4096");
}

}  // namespace
}  // namespace ring3::e1000e
