// `ring3 perf net` over in-memory fake ports (fake_net_port.hpp): what is sent, what the receiver
// detects, forwarding, and option errors.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "fake_net_port.hpp"
#include "ring3/core/error.hpp"
#include "ring3/net/perf.hpp"
#include "test_support.hpp"

namespace ring3::net {
namespace {

using namespace std::chrono_literals;
using ring3::testing::error_of;
using testing::FakeNetPort;
using testing::Frame;

NetPerfOptions tx_options(std::uint64_t count, unsigned queues = 1) {
    NetPerfOptions o;
    o.direction = Direction::tx;
    o.count = count;
    o.queues = queues;
    o.seed = 99;
    o.stall_timeout = 5s;
    return o;
}

NetPerfOptions rx_options(std::uint64_t count) {
    NetPerfOptions o;
    o.direction = Direction::rx;
    o.count = count;
    o.time = 5s;  // a bound, should a test frame never come
    o.seed = 99;
    return o;
}

Frame test_frame(std::size_t size, std::uint16_t stream, std::uint64_t sequence,
                 const FillPattern& pattern) {
    Frame f(size);
    TestFlow flow;
    flow.source_mac = MacAddress{{0x02, 0, 0, 0, 0, 0x09}};
    flow.destination_mac = MacAddress{{0x02, 0, 0, 0, 0, 0x01}};
    build_test_frame(f, flow, stream, sequence, pattern);
    return f;
}

// ---- tx ---------------------------------------------------------------------------------------

TEST(NetPerfTx, SendsValidFramesInSequencePerQueue) {
    FakeNetPort port;
    const NetPerfReport report = run_net_perf(port, tx_options(1001, 2));
    EXPECT_FALSE(report.failed()) << format_report(report);
    EXPECT_EQ(report.total.packets, 1001u);
    EXPECT_EQ(report.total.bytes, 1001u * 64);
    ASSERT_EQ(report.queues.size(), 2u);
    const FillPattern pattern(99);
    for (unsigned q = 0; q < 2; ++q) {
        SCOPED_TRACE(q);
        const auto sent = port.queue(q).sent();
        EXPECT_EQ(sent.size(), report.queues[q].packets);
        EXPECT_EQ(report.queues[q].port.tx_packets, sent.size());
        for (std::size_t i = 0; i < sent.size(); ++i) {
            ASSERT_EQ(sent[i].size(), 64u);
            const FrameCheck c = check_test_frame(sent[i], pattern);
            ASSERT_EQ(c.kind, FrameKind::test) << c.problem;
            EXPECT_EQ(c.stream, q);
            EXPECT_EQ(c.sequence, i);
            // The port's MAC as source, the default destination.
            EXPECT_EQ(std::to_integer<int>(sent[i][11]), 0x01);
            EXPECT_EQ(std::to_integer<int>(sent[i][5]), 0x02);
        }
        // One thread per queue, and not the caller's.
        EXPECT_EQ(port.queue(q).threads().size(), 1u);
        EXPECT_EQ(port.queue(q).threads().count(std::this_thread::get_id()), 0u);
    }
    EXPECT_EQ(report.queues[0].packets + report.queues[1].packets, 1001u);
    EXPECT_EQ(port.queue(0).pool().available(), port.queue(0).pool().capacity());
}

TEST(NetPerfTx, SizeRangeStaysInRangeAndVaries) {
    FakeNetPort port;
    NetPerfOptions o = tx_options(2000);
    o.sizes = {60, 1514};
    const NetPerfReport report = run_net_perf(port, o);
    EXPECT_FALSE(report.failed());
    std::set<std::size_t> sizes;
    std::uint64_t bytes = 0;
    const FillPattern pattern(99);
    for (const auto& f : port.queue(0).sent()) {
        EXPECT_GE(f.size(), 60u);
        EXPECT_LE(f.size(), 1514u);
        EXPECT_EQ(check_test_frame(f, pattern).kind, FrameKind::test);
        sizes.insert(f.size());
        bytes += f.size();
    }
    EXPECT_GT(sizes.size(), 500u);
    EXPECT_EQ(report.total.bytes, bytes);
}

TEST(NetPerfTx, RetriesWhatTheRingRefusesInOrder) {
    FakeNetPort port;
    port.faults.tx_room = 5;  // of each burst of 32
    port.faults.refuse_first_bursts = 3;
    const NetPerfReport report = run_net_perf(port, tx_options(500));
    EXPECT_FALSE(report.failed());
    EXPECT_GT(report.total.refused, 3u);
    const auto sent = port.queue(0).sent();
    ASSERT_EQ(sent.size(), 500u);
    const FillPattern pattern(99);
    for (std::size_t i = 0; i < sent.size(); ++i) {
        EXPECT_EQ(check_test_frame(sent[i], pattern).sequence, i);
    }
}

TEST(NetPerfTx, StopsOnTimeAndReportsFigures) {
    FakeNetPort port;
    NetPerfOptions o = tx_options(0);
    o.time = 50ms;
    const NetPerfReport report = run_net_perf(port, o);
    EXPECT_FALSE(report.failed());
    EXPECT_GT(report.total.packets, 0u);
    EXPECT_GE(report.seconds(), 0.05);
    EXPECT_LT(report.seconds(), 2.0);
    EXPECT_GT(report.pps(), 0);
    EXPECT_NEAR(report.gbps(), report.pps() * 64 * 8 / 1e9, report.gbps() * 1e-9);
    EXPECT_GT(report.cycles_per_packet(), 0);
    const std::string text = format_report(report);
    EXPECT_NE(text.find(fmt::format("net_tx_64b_pps: {} pps",
                                    static_cast<std::uint64_t>(std::llround(report.pps())))),
              std::string::npos)
        << text;
    const auto j = nlohmann::json::parse(format_report_json(report));
    EXPECT_EQ(j["packets"], report.total.packets);
    EXPECT_EQ(j["per_queue"].size(), 1u);
    EXPECT_EQ(j["per_queue"][0]["port"]["tx_packets"], report.total.packets);
    // The engine offers whole bursts: one notification per 32 frames, not one per frame.
    EXPECT_EQ(j["port"]["notifications"], (report.total.packets + 31) / 32);
    EXPECT_EQ(j["ok"], true);
    EXPECT_EQ(j["name"], "net_tx_64b_pps");
}

TEST(NetPerfTx, AFailedQueueStopsTheRun) {
    FakeNetPort port;
    port.faults.fail_with = ENODEV;
    NetPerfOptions o = tx_options(0);
    o.time = 10s;
    const NetPerfReport report = run_net_perf(port, o);
    EXPECT_TRUE(report.failed());
    ASSERT_EQ(report.fatal.size(), 1u);
    EXPECT_EQ(report.fatal[0], "queue 0: the port failed: No such device");
    EXPECT_LT(report.seconds(), 1.0);
}

TEST(NetPerfTx, FramesThePortCouldNotSendFailTheRun) {
    FakeNetPort port;
    port.mutable_info().max_frame = 150;
    port.queue(0);                         // its queue takes frames of at most 150 bytes
    port.mutable_info().max_frame = 1514;  // while the port claims 1514
    NetPerfOptions o = tx_options(10);
    o.sizes = {200, 200};
    const NetPerfReport report = run_net_perf(port, o);
    EXPECT_TRUE(report.failed());
    EXPECT_EQ(report.total.port.tx_errors, 10u);
    EXPECT_NE(format_report(report).find("FAILED: 0 queue(s) stopped, 10 tx and 0 rx errors, 0 "
                                         "corrupt, 0 duplicates\n"),
              std::string::npos)
        << format_report(report);
    EXPECT_EQ(nlohmann::json::parse(format_report_json(report))["ok"], false);
}

TEST(NetPerfTx, ProgressIsReported) {
    FakeNetPort port;
    NetPerfOptions o = tx_options(0);
    o.time = 300ms;
    o.progress_interval = 50ms;
    std::atomic<int> calls{0};
    std::uint64_t last = 0;
    o.on_progress = [&](const NetProgress& p) {
        ++calls;
        EXPECT_GE(p.packets, last);
        last = p.packets;
        EXPECT_NE(format_progress(p).find("pps"), std::string::npos);
    };
    run_net_perf(port, o);
    EXPECT_GE(calls.load(), 2);
}

// ---- rx ---------------------------------------------------------------------------------------

TEST(NetPerfRx, CleanStreamPasses) {
    FakeNetPort port;
    const FillPattern pattern(99);
    for (std::uint64_t s = 0; s < 300; ++s) {
        port.queue(0).push(
            test_frame(60 + s % 200, static_cast<std::uint16_t>(s % 3), s / 3, pattern));
    }
    const NetPerfReport report = run_net_perf(port, rx_options(300));
    EXPECT_FALSE(report.failed()) << format_report(report);
    const RxCheck& r = report.total.rx;
    EXPECT_EQ(r.test_frames, 300u);
    EXPECT_EQ(r.streams, 3u);
    EXPECT_EQ(r.lost + r.reordered + r.duplicates + r.corrupt + r.foreign + r.stale, 0u);
    EXPECT_EQ(report.total.port.rx_packets, 300u);
    EXPECT_EQ(port.queue(0).pool().available(), port.queue(0).pool().capacity());
}

TEST(NetPerfRx, DetectsLossReorderDuplicatesCorruptionAndForeignFrames) {
    FakeNetPort port;
    const FillPattern pattern(99);
    auto& q = port.queue(0);
    // Stream 0: 0 1 2 4 3 5 5 7 8 (6 lost, 3/4 swapped, 5 twice); 9 with a bad payload.
    for (const std::uint64_t s : {0, 1, 2, 4, 3, 5, 5, 7, 8}) {
        q.push(test_frame(100, 0, s, pattern));
    }
    Frame bad = test_frame(100, 0, 9, pattern);
    bad[80] ^= std::byte{1};
    q.push(bad);
    Frame foreign = test_frame(100, 0, 10, pattern);
    foreign[12] = std::byte{0x86};  // IPv6's EtherType
    foreign[13] = std::byte{0xdd};
    q.push(foreign);
    // Stream 1: another seed's frame is corrupt.
    q.push(test_frame(100, 1, 0, FillPattern(5)));
    // Enough good frames on stream 2 to reach the count (10 + 5 = 15 test frames).
    for (std::uint64_t s = 0; s < 6; ++s) {
        q.push(test_frame(100, 2, s, pattern));
    }
    const NetPerfReport report = run_net_perf(port, rx_options(15));
    const RxCheck& r = report.total.rx;
    EXPECT_EQ(r.test_frames, 15u);
    EXPECT_EQ(r.lost, 1u);
    EXPECT_EQ(r.reordered, 1u);
    EXPECT_EQ(r.duplicates, 1u);
    EXPECT_EQ(r.corrupt, 2u);
    EXPECT_EQ(r.foreign, 1u);
    EXPECT_EQ(r.streams, 2u);
    EXPECT_TRUE(report.failed());  // corrupt and duplicate frames fail a receive run
    ASSERT_EQ(report.problems.size(), 2u);
    EXPECT_EQ(report.problems[0],
              "queue 0: frame 10 received (100 bytes): payload differs from the pattern");
    EXPECT_EQ(report.problems[1],
              "queue 0: frame 12 received (100 bytes): check word wrong (header corrupt, or "
              "another seed)");
    const auto j = nlohmann::json::parse(format_report_json(report));
    EXPECT_EQ(j["rx"]["lost"], 1);
    EXPECT_EQ(j["per_queue"][0]["rx"]["duplicates"], 1);
    EXPECT_EQ(j["ok"], false);
}

TEST(NetPerfRx, TooFewFramesFailsAtTheTimeLimit) {
    FakeNetPort port;
    const FillPattern pattern(99);
    for (std::uint64_t s = 0; s < 10; ++s) {
        port.queue(0).push(test_frame(64, 0, s, pattern));
    }
    NetPerfOptions o = rx_options(11);
    o.time = 100ms;
    const NetPerfReport report = run_net_perf(port, o);
    EXPECT_EQ(report.total.rx.test_frames, 10u);
    EXPECT_TRUE(report.failed());
    EXPECT_NE(format_report(report).find("FAILED"), std::string::npos);
}

// ---- fwd --------------------------------------------------------------------------------------

TEST(NetPerfFwd, ForwardsBothWaysWithMacsSwapped) {
    FakeNetPort a("fakeA", 2);
    FakeNetPort b("fakeB", 2);
    const FillPattern pattern(99);
    for (std::uint64_t s = 0; s < 100; ++s) {
        a.queue(0).push(test_frame(64, 0, s, pattern));
        a.queue(1).push(test_frame(64, 1, s, pattern));
    }
    NetPerfOptions o;
    o.direction = Direction::fwd;
    o.queues = 2;
    o.count = 200;
    o.time = 5s;
    const NetPerfReport report = run_net_perf(a, o, &b);
    EXPECT_FALSE(report.failed()) << format_report(report);
    EXPECT_EQ(report.total.packets, 200u);
    EXPECT_EQ(report.peer, "fakeB");
    for (unsigned q = 0; q < 2; ++q) {
        const auto out = b.queue(q).sent();
        ASSERT_EQ(out.size(), 100u);
        for (std::size_t i = 0; i < out.size(); ++i) {
            Frame f = out[i];
            EXPECT_EQ(std::to_integer<int>(f[5]), 0x09);   // was the source
            EXPECT_EQ(std::to_integer<int>(f[11]), 0x01);  // was the destination
            swap_macs(f.data());
            EXPECT_EQ(f, test_frame(64, static_cast<std::uint16_t>(q), i, pattern));
        }
        // Both queues of a pair on one thread; the shared pool whole again.
        EXPECT_EQ(a.queue(q).threads(), b.queue(q).threads());
        EXPECT_EQ(a.queue(q).pool().available(), a.queue(q).pool().capacity());
    }
}

TEST(NetPerfFwd, HoldsBackWhatThePeerHasNoRoomFor) {
    FakeNetPort a("fakeA", 1);
    FakeNetPort b("fakeB", 1);
    b.faults.tx_room = 1;
    const FillPattern pattern(99);
    for (std::uint64_t s = 0; s < 64; ++s) {
        a.queue(0).push(test_frame(64, 0, s, pattern));
    }
    NetPerfOptions o;
    o.direction = Direction::fwd;
    o.time = 200ms;
    o.burst = 8;
    const NetPerfReport report = run_net_perf(a, o, &b);
    // One frame per tx_burst: the rest of each burst waits for room, nothing is dropped, and
    // the order stays.
    EXPECT_EQ(report.total.packets, 64u);
    EXPECT_EQ(report.total.dropped, 0u);
    EXPECT_GE(report.total.refused, 56u);
    ASSERT_EQ(b.queue(0).sent().size(), 64u);
    for (std::uint64_t s = 0; s < 64; ++s) {
        Frame f = b.queue(0).sent()[s];
        swap_macs(f.data());
        EXPECT_EQ(f, test_frame(64, 0, s, pattern)) << "frame " << s;
    }
    EXPECT_EQ(a.queue(0).pool().available(), a.queue(0).pool().capacity());
}

// ---- options ----------------------------------------------------------------------------------

TEST(NetPerfOptions, ParsesSizeRanges) {
    EXPECT_EQ(parse_size_range("64").min, 64u);
    EXPECT_EQ(parse_size_range("64").max, 64u);
    EXPECT_EQ(parse_size_range("60-1514").max, 1514u);
    EXPECT_EQ(error_of([] { parse_size_range("64k"); }),
              "perf net --size 64k: not a frame size: bytes (64) or a range MIN-MAX (60-1514), "
              "frames without FCS");
    EXPECT_EQ(error_of([] { parse_size_range("100-60"); }),
              "perf net --size 100-60: the range's minimum is above its maximum");
    EXPECT_EQ(error_of([] { parse_size_range("-"); }),
              "perf net --size -: not a frame size: bytes (64) or a range MIN-MAX (60-1514), "
              "frames without FCS");
}

TEST(NetPerfOptions, ErrorsNameTheOptionAndTheLimit) {
    FakeNetPort port("fake0", 2);
    const auto fails = [&](auto change) {
        NetPerfOptions o = tx_options(10);
        change(o);
        return error_of([&] { run_net_perf(port, o); }, EINVAL);
    };
    EXPECT_EQ(fails([](NetPerfOptions& o) {
                  o.sizes = {59, 59};
              }),
              "perf net --size 59: below 60 bytes, the shortest test frame (Ethernet's minimum "
              "without FCS)");
    EXPECT_EQ(fails([](NetPerfOptions& o) {
                  o.sizes = {60, 1515};
              }),
              "perf net --size 60-1515: above 1514 bytes, the longest test frame (a 1500-byte MTU "
              "without FCS)");
    port.mutable_info().max_frame = 1014;
    port.mutable_info().mtu = 1000;
    EXPECT_EQ(fails([](NetPerfOptions& o) {
                  o.sizes = {1200, 1200};
              }),
              "perf net --size 1200: above 1014 bytes, the longest frame fake0 takes (MTU 1000)");
    EXPECT_EQ(fails([](NetPerfOptions& o) { o.queues = 3; }),
              "perf net --queues 3: fake0 has 2 queue pair(s)");
    EXPECT_EQ(fails([](NetPerfOptions& o) { o.queues = 0; }),
              "perf net --queues 0: must be at least 1");
    EXPECT_EQ(fails([](NetPerfOptions& o) { o.burst = 300; }),
              "perf net --burst 300: must be 1..256");
    EXPECT_EQ(fails([](NetPerfOptions& o) { o.depth = 2048; }),
              "perf net --depth 2048: above fake0's limit of 1024 descriptors per ring");
    EXPECT_EQ(fails([](NetPerfOptions& o) { o.count = 0; }),
              "perf net --time: no stop condition: give --time or --count");
    EXPECT_EQ(fails([](NetPerfOptions& o) { o.direction = Direction::fwd; }),
              "perf net fake0: forwarding needs a peer port (--fwd PEER)");
}

}  // namespace
}  // namespace ring3::net
