// Test frames of `ring3 perf net`: UDP over IPv4 over Ethernet, each carrying the sender's stream
// (its queue), a sequence number and content derived from a seed, so a receiver can tell loss,
// reordering, duplicates and corruption apart.
//
// Layout (offsets in bytes; every field big-endian, as on the wire):
//    0  Ethernet: destination MAC, source MAC, EtherType 0x0800 (IPv4)
//   14  IPv4 (RFC 791): version 4, IHL 5, DSCP 0, total length = frame - 14, identification 0,
//       don't-fragment, TTL 64, protocol 17, header checksum (RFC 1071), 198.18.0.1 -> 198.18.0.2
//       (the benchmarking range of RFC 2544, which no one routes)
//   34  UDP (RFC 768): source port kTestSourcePortBase + stream, destination port kTestPort,
//       length = frame - 34, checksum 0 ("not computed", allowed over IPv4)
//   42  magic "r3nt", stream u16, sequence u64, check u32 (= a hash of seed, stream, sequence and
//       frame length)
//   60  filler: bytes of a seed-derived pattern, starting at an offset that depends on the sequence
// The shortest test frame is therefore Ethernet's minimum, 60 bytes without FCS.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ring3/net/net_port.hpp"

namespace ring3::net {

inline constexpr std::uint32_t kMinFrameSize = 60;    // Ethernet's minimum, FCS excluded
inline constexpr std::uint32_t kMaxFrameSize = 1514;  // a 1500-byte MTU, FCS excluded
inline constexpr std::uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr std::uint16_t kTestPort = 21043;  // "R3"
inline constexpr std::uint16_t kTestSourcePortBase = 1024;
inline constexpr std::size_t kEthernetHeader = 14;
inline constexpr std::size_t kIpv4Header = 20;
inline constexpr std::size_t kUdpHeader = 8;
inline constexpr std::size_t kTestHeader = 18;  // magic, stream, sequence, check
inline constexpr std::size_t kTestPayloadOffset = kEthernetHeader + kIpv4Header + kUdpHeader;
inline constexpr std::size_t kTestFillerOffset = kTestPayloadOffset + kTestHeader;
static_assert(kTestFillerOffset == kMinFrameSize);

// The RFC 1071 Internet checksum of `bytes` (an odd last byte padded with zero): the one's
// complement of the one's complement sum of the 16-bit big-endian words. A header that carries
// its correct checksum sums to 0.
std::uint16_t internet_checksum(std::span<const std::byte> bytes) noexcept;

// The addresses of a test flow.
struct TestFlow {
    MacAddress source_mac;
    MacAddress destination_mac;
    std::array<std::uint8_t, 4> source_ip{198, 18, 0, 1};
    std::array<std::uint8_t, 4> destination_ip{198, 18, 0, 2};
};

// The filler bytes of a run: derived from the seed once, shared read-only by every queue.
class FillPattern {
  public:
    explicit FillPattern(std::uint64_t seed);
    std::uint64_t seed() const noexcept { return seed_; }
    // `length` filler bytes for `sequence` (length <= kMaxFrameSize - kTestFillerOffset).
    const std::byte* for_sequence(std::uint64_t sequence) const noexcept {
        return bytes_.data() + (sequence % kRotations) * 8;
    }
    static constexpr std::size_t kRotations = 61;  // prime: a shifted frame lands elsewhere

  private:
    std::uint64_t seed_;
    std::vector<std::byte> bytes_;
};

// The check word of a frame header.
std::uint32_t test_check_word(std::uint64_t seed, std::uint16_t stream, std::uint64_t sequence,
                              std::uint32_t frame_length) noexcept;

// The part of a flow's test frames that does not change from one frame to the next (addresses,
// ports, magic, stream) built once, with the sum of its IPv4 header words kept so that a frame's
// header checksum is one addition (RFC 1071's incremental property) instead of a pass over the
// header. A sender's per-frame cost is then a 48-byte copy, the length fields, the sequence, the
// check word and the filler.
class TestFrameTemplate {
  public:
    TestFrameTemplate(const TestFlow& flow, std::uint16_t stream) noexcept;
    // Writes a complete test frame of out.size() bytes (kMinFrameSize..kMaxFrameSize; the
    // caller checks) into `out`.
    void write(std::span<std::byte> out, std::uint64_t sequence,
               const FillPattern& pattern) const noexcept;

  private:
    static constexpr std::size_t kFixed = kTestPayloadOffset + 6;  // up to the sequence
    std::array<std::byte, kFixed> fixed_{};
    std::uint32_t ip_sum_ = 0;  // the IPv4 header's words with length and checksum 0
    std::uint16_t stream_;
};

// Writes a complete test frame of out.size() bytes (kMinFrameSize..kMaxFrameSize; the caller
// checks) into `out`; the same bytes as TestFrameTemplate(flow, stream).write().
void build_test_frame(std::span<std::byte> out, const TestFlow& flow, std::uint16_t stream,
                      std::uint64_t sequence, const FillPattern& pattern) noexcept;

enum class FrameKind : std::uint8_t {
    test,     // a valid test frame
    foreign,  // not a test frame (ARP, IPv6, another UDP port ...)
    corrupt,  // addressed as a test frame (IPv4, UDP, kTestPort) but wrong somewhere
};

struct FrameCheck {
    FrameKind kind = FrameKind::foreign;
    std::uint16_t stream = 0;
    std::uint64_t sequence = 0;
    const char* problem = "";  // for corrupt frames: what is wrong (a static string)
};

// Classifies a received frame and, for a test frame, checks every byte of it.
FrameCheck check_test_frame(std::span<const std::byte> frame, const FillPattern& pattern) noexcept;

// Swaps the destination and source MAC addresses of a frame (l2fwd's "MAC swap").
void swap_macs(std::byte* frame) noexcept;

}  // namespace ring3::net
