// virtio-net (include/ring3/virtio/net.hpp) over the FakeVirtioNet model: bring-up and the
// configuration, transmit and receive through the NetPort face byte for byte, multiqueue through
// the control queue, interrupt-mode waits, and what a broken device returns: counted, not trusted.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fake_device.hpp"
#include "fake_virtio_device.hpp"
#include "ring3/net/frame.hpp"
#include "ring3/virtio/net.hpp"
#include "test_support.hpp"

extern std::atomic<std::uint64_t> g_allocations;  // counting_new.cpp

namespace ring3::virtio {
namespace {

using namespace std::chrono_literals;
using ring3::testing::error_of;
using testing::FakeVirtioNet;
using Frame = FakeVirtioNet::Frame;

NetOptions small_options() {
    NetOptions o;
    o.arena.chunk_size = 2 << 20;
    o.arena.max_size = 32 << 20;
    o.arena.huge_pages = dma::HugePages::never;
    return o;
}

Frame frame_of(std::uint32_t length, std::uint8_t seed) {
    Frame f(length);
    for (std::uint32_t i = 0; i < length; ++i) {
        f[i] = static_cast<std::byte>(seed + i * 7);
    }
    return f;
}

struct NetRig {
    FakeVirtioNet model;
    std::unique_ptr<NetDevice> port;
    explicit NetRig(const FakeVirtioNet::Options& o = FakeVirtioNet::Options(),
                    NetOptions options = small_options())
        : model(o) {
        port = std::make_unique<NetDevice>(model.take(), options);
    }
    ~NetRig() { port.reset(); }  // the driver goes before the model
};

// Sends `frames` on `queue`: each copied into a pool buffer behind the headroom.
unsigned send(net::Queue& queue, const std::vector<Frame>& frames) {
    std::vector<net::Packet> packets(frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
        net::Packet& p = packets[i];
        EXPECT_TRUE(queue.pool().get(p.buffer));
        p.offset = queue.headroom();
        p.length = static_cast<std::uint32_t>(frames[i].size());
        std::memcpy(p.data(), frames[i].data(), frames[i].size());
    }
    const unsigned accepted = queue.tx_burst(packets.data(), static_cast<unsigned>(frames.size()));
    for (std::size_t i = accepted; i < frames.size(); ++i) {
        queue.pool().put(packets[i].buffer);
    }
    return accepted;
}

TEST(VirtioNet, ReadsTheConfigurationAndNegotiatesNoOffload) {
    NetRig rig;  // the region is not mappable: every register access goes through read/write
    const net::PortInfo info = rig.port->info();
    EXPECT_EQ(info.mac.to_string(), "52:54:00:aa:bb:cc");
    EXPECT_EQ(info.mtu, 1500u);
    EXPECT_EQ(info.max_frame, 1514u);
    EXPECT_EQ(info.queue_pairs, 1u);
    EXPECT_EQ(info.max_queue_depth, 64u);
    EXPECT_EQ(info.headroom, sizeof(NetHeader));
    EXPECT_TRUE(rig.port->link().up);
    const std::uint64_t negotiated = rig.model.driver_features;
    EXPECT_NE(negotiated & bit(net_feature::mac), 0u);
    EXPECT_NE(negotiated & bit(net_feature::ctrl_vq), 0u);
    EXPECT_EQ(negotiated & bit(net_feature::mrg_rxbuf), 0u);  // one buffer per frame
    EXPECT_EQ(negotiated & bit(net_feature::csum), 0u);       // no offload unless asked
    EXPECT_EQ(rig.model.status() & status::driver_ok, status::driver_ok);
    EXPECT_TRUE(rig.model.commands.empty());  // no MQ: no control command
}

TEST(VirtioNet, LinkDownIsReported) {
    FakeVirtioNet::Options o;
    o.status = 0;
    NetRig rig(o);
    EXPECT_FALSE(rig.port->link().up);
}

TEST(VirtioNet, TransmitsFramesByteForByteAndRecyclesTheirBuffers) {
    NetRig rig;
    net::Queue& q = rig.port->open_queue(0);
    const std::uint32_t free_before = q.pool().available();
    std::vector<Frame> frames;
    for (unsigned i = 0; i < 40; ++i) {
        frames.push_back(frame_of(60 + i * 37, static_cast<std::uint8_t>(i)));
    }
    EXPECT_EQ(send(q, frames), 40u);
    ASSERT_EQ(rig.model.sent[0].size(), 40u);
    for (unsigned i = 0; i < 40; ++i) {
        EXPECT_EQ(rig.model.sent[0][i], frames[i]) << "frame " << i;
    }
    for (const auto& h : rig.model.headers) {  // §5.1.6.2: no offload, an all-zero header
        for (std::byte b : h) {
            EXPECT_EQ(b, std::byte{0});
        }
    }
    EXPECT_EQ(q.reclaim(), 40u);
    EXPECT_EQ(q.tx_pending(), 0u);
    EXPECT_EQ(q.pool().available(), free_before);
    const net::QueueStats s = q.stats();
    EXPECT_EQ(s.tx_packets, 40u);
    EXPECT_EQ(s.tx_errors, 0u);
    EXPECT_EQ(s.notifications, 2u);  // one for the posted receive buffers, one for the burst
}

TEST(VirtioNet, FramesThatCanNeverBeSentAreCountedAndDropped) {
    NetRig rig;
    net::Queue& q = rig.port->open_queue(0);
    const std::vector<Frame> frames = {frame_of(10, 1), frame_of(1515, 2), frame_of(64, 3)};
    EXPECT_EQ(send(q, frames), 3u);  // all accepted: the bad ones dropped, not blocking
    ASSERT_EQ(rig.model.sent[0].size(), 1u);
    EXPECT_EQ(rig.model.sent[0][0], frames[2]);
    EXPECT_EQ(q.stats().tx_errors, 2u);
    // A packet with no room for the header before it is refused the same way.
    net::Packet p;
    ASSERT_TRUE(q.pool().get(p.buffer));
    p.offset = 4;
    p.length = 64;
    EXPECT_EQ(q.tx_burst(&p, 1), 1u);
    EXPECT_EQ(q.stats().tx_errors, 3u);
    EXPECT_EQ(rig.model.sent[0].size(), 1u);
}

TEST(VirtioNet, ReceivesInjectedFramesWhole) {
    NetRig rig;
    net::Queue& q = rig.port->open_queue(0);
    std::vector<Frame> frames;
    for (unsigned i = 0; i < 100; ++i) {  // more than the ring: buffers must be refilled
        frames.push_back(frame_of(60 + (i * 131) % 1455, static_cast<std::uint8_t>(i)));
    }
    std::vector<net::Packet> got;
    std::size_t next = 0;
    net::Packet burst[16];
    for (int round = 0; round < 100 && got.size() < frames.size(); ++round) {
        while (next < frames.size() && rig.model.waiting(0) < 8) {
            rig.model.inject(0, frames[next++]);
        }
        const unsigned n = q.rx_burst(burst, 16);
        got.insert(got.end(), burst, burst + n);
    }
    ASSERT_EQ(got.size(), frames.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i].length, frames[i].size()) << "frame " << i;
        EXPECT_EQ(std::memcmp(got[i].data(), frames[i].data(), got[i].length), 0) << i;
        EXPECT_EQ(got[i].offset, sizeof(NetHeader));
        q.pool().put(got[i].buffer);
    }
    EXPECT_EQ(q.stats().rx_packets, 100u);
    EXPECT_EQ(q.stats().rx_errors, 0u);
}

TEST(VirtioNet, UsedRingGarbageIsCountedNotTrusted) {
    NetRig rig;
    auto& q = static_cast<NetQueue&>(rig.port->open_queue(0));
    // A received chain shorter than the header: an error, its buffer reposted.
    rig.model.rx_len_override = 4;
    rig.model.inject(0, frame_of(64, 2));
    net::Packet p[4];
    EXPECT_EQ(q.rx_burst(p, 4), 0u);
    EXPECT_EQ(q.stats().rx_errors, 1u);
    EXPECT_EQ(q.garbage(), 1u);
    // A length beyond the buffer is clamped to it (the frame is then the buffer's worth).
    rig.model.rx_len_override = 1 << 20;
    rig.model.inject(0, frame_of(64, 3));
    ASSERT_EQ(q.rx_burst(p, 4), 1u);
    EXPECT_EQ(p[0].length, q.pool().buffer_size() - sizeof(NetHeader));
    EXPECT_EQ(q.rx_ring().counters().bad_lengths, 1u);
    q.pool().put(p[0].buffer);
    // The queue still works.
    rig.model.inject(0, frame_of(80, 4));
    ASSERT_EQ(q.rx_burst(p, 4), 1u);
    EXPECT_EQ(p[0].length, 80u);
    q.pool().put(p[0].buffer);
    EXPECT_EQ(q.failure(), 0);
    // A transmit completion naming a descriptor outside the ring: the device lost track of
    // it, the queue stops (failure() says so, bursts send nothing).
    rig.model.next_used_id = 999;
    EXPECT_EQ(send(q, {frame_of(64, 1)}), 1u);
    EXPECT_EQ(q.reclaim(), 0u);
    EXPECT_EQ(q.tx_ring().counters().bad_ids, 1u);
    EXPECT_TRUE(q.tx_ring().broken());
    EXPECT_EQ(q.failure(), EIO);
    EXPECT_EQ(send(q, {frame_of(64, 5)}), 0u);
    EXPECT_EQ(q.garbage(), 3u);
}

TEST(VirtioNet, AUsedIndexBeyondTheRingStopsTheQueue) {
    NetRig rig;
    auto& q = static_cast<NetQueue&>(rig.port->open_queue(0));
    rig.model.used_idx_jump = 1000;
    rig.model.inject(0, frame_of(64, 5));
    net::Packet p[4];
    EXPECT_EQ(q.rx_burst(p, 4), 0u);
    EXPECT_EQ(q.failure(), EIO);
    EXPECT_EQ(q.rx_ring().counters().index_jumps, 1u);
}

TEST(VirtioNet, TwoQueuePairsCarryTheirOwnTraffic) {
    FakeVirtioNet::Options o;
    o.features |= bit(net_feature::mq);
    o.pairs = 4;
    o.msix_vectors = 5;
    NetOptions options = small_options();
    options.queues = 2;
    NetRig rig(o, options);
    EXPECT_EQ(rig.port->info().queue_pairs, 2u);
    // §5.1.6.5.5: the device is told how many pairs are in use.
    ASSERT_EQ(rig.model.commands.size(), 1u);
    EXPECT_EQ(rig.model.commands[0].command_class, net_ctrl::class_mq);
    EXPECT_EQ(rig.model.commands[0].command, net_ctrl::mq_vq_pairs_set);
    EXPECT_EQ(rig.model.commands[0].data, (std::vector<std::uint8_t>{2, 0}));
    net::Queue& q0 = rig.port->open_queue(0);
    net::Queue& q1 = rig.port->open_queue(1);
    EXPECT_EQ(send(q0, {frame_of(64, 1), frame_of(65, 2)}), 2u);
    EXPECT_EQ(send(q1, {frame_of(66, 3)}), 1u);
    EXPECT_EQ(rig.model.sent[0].size(), 2u);
    EXPECT_EQ(rig.model.sent[1].size(), 1u);
    EXPECT_EQ(rig.model.sent[1][0], frame_of(66, 3));
    rig.model.inject(1, frame_of(70, 4));
    net::Packet p[4];
    EXPECT_EQ(q0.rx_burst(p, 4), 0u);
    ASSERT_EQ(q1.rx_burst(p, 4), 1u);
    EXPECT_EQ(p[0].length, 70u);
    q1.pool().put(p[0].buffer);
    // The pair the device has but the port did not set up.
    EXPECT_EQ(error_of([&] { rig.port->open_queue(2); }, EINVAL),
              "open queue 2 fake:virtio-net: the device has 2 queue pair(s) in use (it offers "
              "4)");
}

TEST(VirtioNet, InterruptModeSleepsUntilAFrameArrives) {
    NetOptions options = small_options();
    options.mode = irq::WaitMode::interrupt;
    NetRig rig(FakeVirtioNet::Options(), options);
    net::Queue& q = rig.port->open_queue(0, 0, irq::WaitMode::interrupt);
    EXPECT_EQ(q.mode(), irq::WaitMode::interrupt);
    EXPECT_EQ(q.wait(net::kReadyRx, 2ms), net::kReadyNone);  // nothing: times out
    // A frame arrives while the queue sleeps: the device raises the vector it was asked for.
    const Frame frame = frame_of(64, 1);
    std::thread device([&] {
        std::this_thread::sleep_for(20ms);
        rig.model.inject(0, frame);
    });
    const unsigned ready = q.wait(net::kReadyRx, 5s);
    device.join();
    EXPECT_EQ(ready, net::kReadyRx);
    EXPECT_EQ(rig.model.interrupts_raised, 1u);
    net::Packet p[2];
    ASSERT_EQ(q.rx_burst(p, 2), 1u);
    q.pool().put(p[0].buffer);
    EXPECT_EQ(q.wait(net::kReadyTx, 1ms), net::kReadyTx);  // room at once
}

TEST(VirtioNet, PollModeBurstsAllocateNothing) {
    NetRig rig;
    net::Queue& q = rig.port->open_queue(0);
    rig.model.keep_sent = false;  // the model's bookkeeping would count too
    net::Packet packets[8];
    const auto round = [&] {
        for (auto& p : packets) {
            ASSERT_TRUE(q.pool().get(p.buffer));
            p.offset = q.headroom();
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
    round();  // the fakes' own logs grow here once
    rig.model.device.accesses.reserve(rig.model.device.accesses.size() + 10000);
    rig.model.device.dma().accessed.reserve(rig.model.device.dma().accessed.size() + 100000);
    const std::uint64_t before = g_allocations.load();
    for (int r = 0; r < 50; ++r) {
        round();
    }
    EXPECT_EQ(g_allocations.load() - before, 0u);
    EXPECT_EQ(rig.model.sent_count, 408u);
}

TEST(VirtioNet, BadDevicesAreRefusedWithTheReason) {
    {
        FakeVirtioNet::Options o;
        o.features &= ~bit(feature::version_1);
        FakeVirtioNet model(o);
        const std::string message =
            error_of([&] { NetDevice port(model.take(), small_options()); });
        EXPECT_NE(message.find("VERSION_1"), std::string::npos) << message;
    }
    {
        FakeVirtioNet::Options o;
        o.queue_size = 0;
        FakeVirtioNet model(o);
        const std::string message =
            error_of([&] { NetDevice port(model.take(), small_options()); }, ENODEV);
        EXPECT_NE(message.find("queue_size 0"), std::string::npos) << message;
        EXPECT_EQ(model.status_writes.back(), 0u);  // reset on the way out
    }
    {
        FakeVirtioNet::Options o;
        o.legacy_only = true;
        FakeVirtioNet model(o);
        const std::string message =
            error_of([&] { NetDevice port(model.take(), small_options()); });
        EXPECT_NE(message.find("legacy-only"), std::string::npos) << message;
    }
    {
        FakeVirtioNet::Options o;
        o.features |= bit(net_feature::mq);
        o.pairs = 0;  // MQ with max_virtqueue_pairs 0
        FakeVirtioNet model(o);
        const std::string message =
            error_of([&] { NetDevice port(model.take(), small_options()); }, EIO);
        EXPECT_NE(message.find("max_virtqueue_pairs is 0"), std::string::npos) << message;
    }
}

}  // namespace
}  // namespace ring3::virtio
