// Test frames (frame.hpp), MAC addresses, sequence bookkeeping, and the NIC driver registry.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ring3/core/error.hpp"
#include "ring3/net/frame.hpp"
#include "ring3/net/open.hpp"
#include "ring3/net/perf.hpp"
#include "ring3/net/tap_port.hpp"
#include "test_support.hpp"

namespace ring3::net {
namespace {

using ring3::testing::error_of;

std::vector<std::byte> bytes_of(std::initializer_list<unsigned> values) {
    std::vector<std::byte> out;
    for (const unsigned v : values) {
        out.push_back(static_cast<std::byte>(v));
    }
    return out;
}

unsigned at(const std::vector<std::byte>& f, std::size_t i) {
    return std::to_integer<unsigned>(f[i]);
}
unsigned be16(const std::vector<std::byte>& f, std::size_t i) {
    return at(f, i) << 8 | at(f, i + 1);
}

// The RFC 1071 sum written independently of frame.cpp: byte pairs into a 32-bit accumulator,
// the carry folded after every addition.
std::uint16_t reference_checksum(const std::byte* data, std::size_t size) {
    std::uint32_t sum = 0;
    for (std::size_t i = 0; i < size; i += 2) {
        const std::uint32_t high = std::to_integer<std::uint32_t>(data[i]);
        const std::uint32_t low = i + 1 < size ? std::to_integer<std::uint32_t>(data[i + 1]) : 0;
        sum += high * 256 + low;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return static_cast<std::uint16_t>(0xffff - sum);
}

TestFlow flow() {
    TestFlow f;
    f.source_mac = MacAddress{{0x02, 0, 0, 0, 0, 0x01}};
    f.destination_mac = MacAddress{{0x02, 0, 0, 0, 0, 0x02}};
    return f;
}

std::vector<std::byte> frame(std::size_t size, std::uint16_t stream, std::uint64_t sequence,
                             const FillPattern& pattern) {
    std::vector<std::byte> f(size);
    build_test_frame(f, flow(), stream, sequence, pattern);
    return f;
}

TEST(InternetChecksum, MatchesAKnownHeader) {
    // An IPv4 header whose checksum field (bytes 10-11) holds b861, the value the sum gives.
    auto header = bytes_of({0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                            0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7});
    EXPECT_EQ(internet_checksum(header), 0xb861);
    header[10] = std::byte{0xb8};
    header[11] = std::byte{0x61};
    EXPECT_EQ(internet_checksum(header), 0);
    const auto odd = bytes_of({0x01, 0x02, 0x03});
    EXPECT_EQ(internet_checksum(odd), reference_checksum(odd.data(), odd.size()));
}

// One template writing frames of changing lengths over one buffer (as a sender reusing its
// buffers does): each frame is whole, checks as a test frame, and its IPv4 checksum (the
// template's incremental sum) is the one computed over the header from scratch.
TEST(TestFrame, TemplateRewritesReusedBuffersWhole) {
    const FillPattern pattern(7);
    const TestFrameTemplate reused(flow(), 5);
    std::vector<std::byte> buffer(kMaxFrameSize, std::byte{0xee});
    std::uint64_t sequence = 0xfffffffffffffff0ull;  // across the wrap of the 64-bit sequence
    for (const std::size_t size : {1514u, 60u, 61u, 1000u, 64u, 1514u, 333u}) {
        SCOPED_TRACE(size);
        reused.write({buffer.data(), size}, sequence, pattern);
        const std::vector<std::byte> written(buffer.begin(), buffer.begin() + size);
        EXPECT_EQ(written, frame(size, 5, sequence, pattern));
        EXPECT_EQ(reference_checksum(written.data() + kEthernetHeader, kIpv4Header), 0);
        const FrameCheck c = check_test_frame(written, pattern);
        EXPECT_EQ(c.kind, FrameKind::test) << c.problem;
        EXPECT_EQ(c.sequence, sequence);
        EXPECT_EQ(c.stream, 5u);
        sequence += 9;
    }
}

TEST(TestFrame, HeadersAreValidEthernetIpv4Udp) {
    const FillPattern pattern(42);
    for (const std::size_t size : {60u, 64u, 65u, 128u, 1000u, 1514u}) {
        SCOPED_TRACE(size);
        const auto f = frame(size, 3, 0x0102030405060708ull, pattern);
        EXPECT_EQ(std::memcmp(f.data(), flow().destination_mac.bytes.data(), 6), 0);
        EXPECT_EQ(std::memcmp(f.data() + 6, flow().source_mac.bytes.data(), 6), 0);
        EXPECT_EQ(be16(f, 12), 0x0800u);
        EXPECT_EQ(at(f, 14), 0x45u);        // IPv4, 20-byte header
        EXPECT_EQ(be16(f, 16), size - 14);  // total length
        EXPECT_EQ(be16(f, 20), 0x4000u);    // don't fragment
        EXPECT_EQ(at(f, 22), 64u);          // TTL
        EXPECT_EQ(at(f, 23), 17u);          // UDP
        // The checksum field holds the sum of the header with the field as zero.
        std::vector<std::byte> header(f.begin() + 14, f.begin() + 34);
        header[10] = header[11] = std::byte{0};
        EXPECT_EQ(be16(f, 24), reference_checksum(header.data(), header.size()));
        EXPECT_EQ(reference_checksum(f.data() + 14, 20), 0);
        EXPECT_EQ(at(f, 26), 198u);
        EXPECT_EQ(at(f, 29), 1u);
        EXPECT_EQ(at(f, 33), 2u);
        EXPECT_EQ(be16(f, 34), 1024u + 3);  // source port: the stream
        EXPECT_EQ(be16(f, 36), 21043u);
        EXPECT_EQ(be16(f, 38), size - 34);  // UDP length
        EXPECT_EQ(be16(f, 40), 0u);         // no UDP checksum
        EXPECT_EQ(be16(f, 42), 0x7233u);    // "r3nt"
        EXPECT_EQ(be16(f, 46), 3u);         // stream
        EXPECT_EQ(be16(f, 48), 0x0102u);    // sequence, big-endian
        EXPECT_EQ(be16(f, 54), 0x0708u);

        const FrameCheck c = check_test_frame(f, pattern);
        EXPECT_EQ(c.kind, FrameKind::test) << c.problem;
        EXPECT_EQ(c.stream, 3);
        EXPECT_EQ(c.sequence, 0x0102030405060708ull);
    }
}

TEST(TestFrame, PayloadDependsOnSeedAndSequence) {
    const FillPattern a(1);
    const FillPattern b(2);
    EXPECT_NE(frame(200, 0, 5, a), frame(200, 0, 5, b));
    const auto f5 = frame(200, 0, 5, a);
    const auto f6 = frame(200, 0, 6, a);
    EXPECT_NE(std::memcmp(f5.data() + 60, f6.data() + 60, 140), 0);
    // Another seed's frame is a corrupt test frame, not a foreign one.
    EXPECT_EQ(check_test_frame(frame(200, 0, 5, b), a).kind, FrameKind::corrupt);
}

TEST(TestFrame, EveryCorruptionIsCaught) {
    const FillPattern pattern(7);
    const auto good = frame(300, 1, 99, pattern);
    struct Case {
        std::size_t offset;
        const char* problem;
    };
    for (const Case c :
         {Case{15, "IPv4 header checksum wrong"},  // DSCP
          Case{26, "IPv4 header checksum wrong"},  // source address
          Case{35, "UDP source port does not match the stream"}, Case{43, "magic wrong"},
          Case{47, "UDP source port does not match the stream"},           // stream
          Case{55, "check word wrong (header corrupt, or another seed)"},  // seq
          Case{58, "check word wrong (header corrupt, or another seed)"},
          Case{60, "payload differs from the pattern"},
          Case{299, "payload differs from the pattern"}}) {
        SCOPED_TRACE(c.offset);
        auto bad = good;
        bad[c.offset] ^= std::byte{0x10};
        const FrameCheck check = check_test_frame(bad, pattern);
        EXPECT_EQ(check.kind, FrameKind::corrupt);
        EXPECT_STREQ(check.problem, c.problem);
    }
    auto truncated = good;
    truncated.resize(200);
    EXPECT_STREQ(check_test_frame(truncated, pattern).problem,
                 "IPv4 total length does not match the frame");
    truncated.resize(50);
    EXPECT_STREQ(check_test_frame(truncated, pattern).problem,
                 "shorter than a test frame (60 bytes)");
}

TEST(TestFrame, OtherTrafficIsForeign) {
    const FillPattern pattern(7);
    auto arp = frame(60, 0, 0, pattern);
    arp[12] = std::byte{0x08};
    arp[13] = std::byte{0x06};
    EXPECT_EQ(check_test_frame(arp, pattern).kind, FrameKind::foreign);
    auto other_port = frame(60, 0, 0, pattern);
    other_port[37] = std::byte{53};
    EXPECT_EQ(check_test_frame(other_port, pattern).kind, FrameKind::foreign);
    EXPECT_EQ(check_test_frame(std::vector<std::byte>(20), pattern).kind, FrameKind::foreign);
}

TEST(TestFrame, SwapMacs) {
    const FillPattern pattern(7);
    auto f = frame(60, 0, 0, pattern);
    swap_macs(f.data());
    EXPECT_EQ(std::memcmp(f.data(), flow().source_mac.bytes.data(), 6), 0);
    EXPECT_EQ(std::memcmp(f.data() + 6, flow().destination_mac.bytes.data(), 6), 0);
}

TEST(MacAddress, ParsesAndPrints) {
    const auto mac = MacAddress::parse("02:1A:b3:00:ff:09");
    ASSERT_TRUE(mac);
    EXPECT_EQ(mac->to_string(), "02:1a:b3:00:ff:09");
    EXPECT_EQ(MacAddress::parse("02-1a-b3-00-ff-09"), mac);
    EXPECT_FALSE(MacAddress::parse("02:1a:b3:00:ff"));
    EXPECT_FALSE(MacAddress::parse("02:1a-b3:00:ff:09"));
    EXPECT_FALSE(MacAddress::parse("02:1a:b3:00:ff:0g"));
    EXPECT_TRUE(MacAddress::parse("ff:ff:ff:ff:ff:ff")->is_multicast());
    EXPECT_TRUE(MacAddress{}.is_zero());
}

TEST(SequenceTracker, InOrder) {
    SequenceTracker t;
    for (std::uint64_t s = 0; s < 10000; ++s) {
        t.record(s);
    }
    EXPECT_EQ(t.received(), 10000u);
    EXPECT_EQ(t.lost() + t.reordered() + t.duplicates() + t.stale(), 0u);
    EXPECT_EQ(t.next(), 10000u);
}

TEST(SequenceTracker, LossReorderDuplicateStale) {
    SequenceTracker t;
    for (const std::uint64_t s : {0, 1, 2, 5, 6}) {  // 3 and 4 missing
        t.record(s);
    }
    EXPECT_EQ(t.lost(), 2u);
    t.record(4);  // late: a reordering, no longer lost
    EXPECT_EQ(t.lost(), 1u);
    EXPECT_EQ(t.reordered(), 1u);
    t.record(4);
    t.record(6);
    EXPECT_EQ(t.duplicates(), 2u);
    EXPECT_EQ(t.lost(), 1u);  // 3 never came
    t.record(100000);         // a jump beyond the window
    EXPECT_EQ(t.lost(), 1u + (100000 - 7));
    t.record(3);  // older than the window: cannot tell
    EXPECT_EQ(t.stale(), 1u);
    t.record(100000 - 10);  // skipped, inside the window: a reordering
    EXPECT_EQ(t.reordered(), 2u);
    EXPECT_EQ(t.received(), 11u);
}

TEST(NetRegistry, FindsByVendorDeviceAndClass) {
    const NetDriver drivers[] = {
        {"virtio-net", 0x1af4, 0x1041, 0x020000, 0xffff00, nullptr},
        {"anything-intel", 0x8086, NetDriver::kAnyDevice, 0x020000, 0xff0000, nullptr},
    };
    EXPECT_EQ(find_net_driver(drivers, 0x1af4, 0x1041, 0x020000), &drivers[0]);
    EXPECT_EQ(find_net_driver(drivers, 0x1af4, 0x1042, 0x010000), nullptr);  // virtio-blk
    EXPECT_EQ(find_net_driver(drivers, 0x8086, 0x10d3, 0x020000), &drivers[1]);
    EXPECT_EQ(find_net_driver(drivers, 0x8086, 0x10d3, 0x010802), nullptr);  // not a NIC
    EXPECT_EQ(no_driver_reason(drivers, 0x1234, 0x11e8, 0x00ff00),
              "no network driver for [1234:11e8] class 00ff00 (not a network controller); ring3 "
              "drives: virtio-net ([1af4:1041]), anything-intel ([8086:*])");
    // ring3's own list: virtio-net (modern and transitional ids), the e1000e (82574L), and the
    // e1000 (82540EM) matched only to be refused, so not listed as driven.
    EXPECT_NE(find_net_driver(net_drivers(), 0x1af4, 0x1041, 0x020000), nullptr);
    EXPECT_NE(find_net_driver(net_drivers(), 0x1af4, 0x1000, 0x020000), nullptr);
    ASSERT_NE(find_net_driver(net_drivers(), 0x8086, 0x10d3, 0x020000), nullptr);
    EXPECT_STREQ(find_net_driver(net_drivers(), 0x8086, 0x10d3, 0x020000)->name, "e1000e");
    ASSERT_NE(find_net_driver(net_drivers(), 0x8086, 0x100e, 0x020000), nullptr);
    EXPECT_EQ(no_driver_reason(net_drivers(), 0x8086, 0x1533, 0x020000),
              "no network driver for [8086:1533] class 020000 (Ethernet controller); ring3 "
              "drives: virtio-net ([1af4:1041]), virtio-net ([1af4:1000]), e1000e ([8086:10d3])");
    EXPECT_EQ(no_driver_reason({}, 0x8086, 0x10d3, 0x020000),
              "no network driver for [8086:10d3] class 020000 (Ethernet controller); ring3 "
              "drives: none yet (a TAP device works: tap:NAME)");
}

TEST(TapPort, RefusesBadNamesBeforeTouchingTheKernel) {
    EXPECT_EQ(error_of([] { open_net_port("tap:"); }, EINVAL),
              "open TAP tap:: no interface name (tap:NAME)");
    EXPECT_EQ(error_of([] { open_net_port("tap:0123456789abcdef"); }, EINVAL),
              "open TAP tap:0123456789abcdef: an interface name has at most 15 characters");
    EXPECT_EQ(error_of([] { open_net_port("tap:a/b"); }, EINVAL),
              "open TAP tap:a/b: not an interface name (no '/', ':' or white space; not . or ..)");
}

TEST(TapPort, NamesTheCloneDeviceItCannotOpen) {
    TapOptions options;
    options.tun_path = "/nonexistent/net/tun";
    EXPECT_EQ(error_of([&] { open_tap_port("tap0", options); }, ENOENT),
              "open /nonexistent/net/tun: No such file or directory");
}

}  // namespace
}  // namespace ring3::net
