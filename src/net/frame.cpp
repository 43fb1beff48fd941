// Test frames of `ring3 perf net` (frame.hpp).
#include "ring3/net/frame.hpp"

#include <cstring>

namespace ring3::net {
namespace {

constexpr std::uint32_t kMagic = 0x72336e74;   // "r3nt"
constexpr std::uint8_t kIpv4NoOptions = 0x45;  // version 4, IHL 5 words
constexpr std::uint16_t kDontFragment = 0x4000;
constexpr std::uint8_t kTtl = 64;
constexpr std::uint8_t kProtocolUdp = 17;

// Offsets of the fields the builder and the checker touch.
constexpr std::size_t kIp = kEthernetHeader;
constexpr std::size_t kUdp = kIp + kIpv4Header;
constexpr std::size_t kPayload = kTestPayloadOffset;

void put16(std::byte* at, std::uint16_t value) noexcept {
    at[0] = static_cast<std::byte>(value >> 8);
    at[1] = static_cast<std::byte>(value);
}
void put32(std::byte* at, std::uint32_t value) noexcept {
    put16(at, static_cast<std::uint16_t>(value >> 16));
    put16(at + 2, static_cast<std::uint16_t>(value));
}
void put64(std::byte* at, std::uint64_t value) noexcept {
    put32(at, static_cast<std::uint32_t>(value >> 32));
    put32(at + 4, static_cast<std::uint32_t>(value));
}
std::uint16_t get16(const std::byte* at) noexcept {
    return static_cast<std::uint16_t>(std::to_integer<unsigned>(at[0]) << 8 |
                                      std::to_integer<unsigned>(at[1]));
}
std::uint32_t get32(const std::byte* at) noexcept {
    return std::uint32_t{get16(at)} << 16 | get16(at + 2);
}
std::uint64_t get64(const std::byte* at) noexcept {
    return std::uint64_t{get32(at)} << 32 | get32(at + 4);
}

// splitmix64's finaliser (Steele, Lea, Flood 2014): a cheap, well-mixing 64-bit hash step.
std::uint64_t mix(std::uint64_t z) noexcept {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

constexpr std::size_t kMaxFiller = kMaxFrameSize - kTestFillerOffset;

}  // namespace

std::uint16_t internet_checksum(std::span<const std::byte> bytes) noexcept {
    std::uint64_t sum = 0;
    std::size_t i = 0;
    for (; i + 1 < bytes.size(); i += 2) {
        sum += get16(bytes.data() + i);
    }
    if (i < bytes.size()) {
        sum += std::to_integer<std::uint64_t>(bytes[i]) << 8;
    }
    while ((sum >> 16) != 0) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return static_cast<std::uint16_t>(~sum);
}

// Whole 8-byte words: the loop below writes eight bytes at a time.
FillPattern::FillPattern(std::uint64_t seed)
    : seed_(seed), bytes_((kMaxFiller + kRotations * 8 + 7) / 8 * 8) {
    std::uint64_t state = seed;
    for (std::size_t i = 0; i < bytes_.size(); i += 8) {
        state = mix(state);
        put64(bytes_.data() + i, state);
    }
}

std::uint32_t test_check_word(std::uint64_t seed, std::uint16_t stream, std::uint64_t sequence,
                              std::uint32_t frame_length) noexcept {
    const std::uint64_t h =
        mix(mix(seed ^ (std::uint64_t{stream} << 48) ^ frame_length) ^ sequence);
    return static_cast<std::uint32_t>(h ^ (h >> 32));
}

TestFrameTemplate::TestFrameTemplate(const TestFlow& flow, std::uint16_t stream) noexcept
    : stream_(stream) {
    std::byte* f = fixed_.data();
    std::memcpy(f, flow.destination_mac.bytes.data(), 6);
    std::memcpy(f + 6, flow.source_mac.bytes.data(), 6);
    put16(f + 12, kEtherTypeIpv4);

    std::byte* ip = f + kIp;
    ip[0] = std::byte{kIpv4NoOptions};
    ip[1] = std::byte{0};
    put16(ip + 2, 0);  // total length: per frame
    put16(ip + 4, 0);  // identification: unused, the datagram is never fragmented
    put16(ip + 6, kDontFragment);
    ip[8] = std::byte{kTtl};
    ip[9] = std::byte{kProtocolUdp};
    put16(ip + 10, 0);  // checksum: per frame
    std::memcpy(ip + 12, flow.source_ip.data(), 4);
    std::memcpy(ip + 16, flow.destination_ip.data(), 4);
    for (std::size_t i = 0; i < kIpv4Header; i += 2) {
        ip_sum_ += get16(ip + i);
    }

    std::byte* udp = f + kUdp;
    put16(udp, static_cast<std::uint16_t>(kTestSourcePortBase + stream));
    put16(udp + 2, kTestPort);
    put16(udp + 4, 0);  // length: per frame
    put16(udp + 6, 0);  // checksum 0: not computed

    std::byte* payload = f + kPayload;
    put32(payload, kMagic);
    put16(payload + 4, stream);
}

void TestFrameTemplate::write(std::span<std::byte> out, std::uint64_t sequence,
                              const FillPattern& pattern) const noexcept {
    std::byte* f = out.data();
    const auto length = static_cast<std::uint32_t>(out.size());
    std::memcpy(f, fixed_.data(), kFixed);
    const auto ip_length = static_cast<std::uint16_t>(length - kEthernetHeader);
    put16(f + kIp + 2, ip_length);
    // RFC 1071 §2(B), (C): the sum of the fixed words plus the one that changed, folded.
    std::uint32_t sum = ip_sum_ + ip_length;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    put16(f + kIp + 10, static_cast<std::uint16_t>(~sum));
    put16(f + kUdp + 4, static_cast<std::uint16_t>(length - kUdp));
    std::byte* payload = f + kPayload;
    put64(payload + 6, sequence);
    put32(payload + 14, test_check_word(pattern.seed(), stream_, sequence, length));
    std::memcpy(f + kTestFillerOffset, pattern.for_sequence(sequence), length - kTestFillerOffset);
}

void build_test_frame(std::span<std::byte> out, const TestFlow& flow, std::uint16_t stream,
                      std::uint64_t sequence, const FillPattern& pattern) noexcept {
    TestFrameTemplate(flow, stream).write(out, sequence, pattern);
}

FrameCheck check_test_frame(std::span<const std::byte> frame, const FillPattern& pattern) noexcept {
    FrameCheck result;
    const std::byte* f = frame.data();
    const std::size_t length = frame.size();
    // Addressed as a test frame? Anything else is someone else's traffic.
    if (length < kPayload || get16(f + 12) != kEtherTypeIpv4 ||
        std::to_integer<std::uint8_t>(f[kIp]) != kIpv4NoOptions ||
        std::to_integer<std::uint8_t>(f[kIp + 9]) != kProtocolUdp ||
        get16(f + kUdp + 2) != kTestPort) {
        return result;
    }
    result.kind = FrameKind::corrupt;
    const auto problem = [&](const char* text) {
        result.problem = text;
        return result;
    };
    if (length < kMinFrameSize) {
        return problem("shorter than a test frame (60 bytes)");
    }
    if (length > kMaxFrameSize) {
        return problem("longer than a test frame (1514 bytes)");
    }
    if (internet_checksum({f + kIp, kIpv4Header}) != 0) {
        return problem("IPv4 header checksum wrong");
    }
    if (get16(f + kIp + 2) != length - kEthernetHeader) {
        return problem("IPv4 total length does not match the frame");
    }
    if (get16(f + kUdp + 4) != length - kUdp) {
        return problem("UDP length does not match the frame");
    }
    if (get32(f + kPayload) != kMagic) {
        return problem("magic wrong");
    }
    const std::uint16_t stream = get16(f + kPayload + 4);
    const std::uint64_t sequence = get64(f + kPayload + 6);
    if (get16(f + kUdp) != static_cast<std::uint16_t>(kTestSourcePortBase + stream)) {
        return problem("UDP source port does not match the stream");
    }
    if (get32(f + kPayload + 14) !=
        test_check_word(pattern.seed(), stream, sequence, static_cast<std::uint32_t>(length))) {
        return problem("check word wrong (header corrupt, or another seed)");
    }
    if (std::memcmp(f + kTestFillerOffset, pattern.for_sequence(sequence),
                    length - kTestFillerOffset) != 0) {
        return problem("payload differs from the pattern");
    }
    result.kind = FrameKind::test;
    result.stream = stream;
    result.sequence = sequence;
    return result;
}

void swap_macs(std::byte* frame) noexcept {
    std::byte mac[6];
    std::memcpy(mac, frame, 6);
    std::memmove(frame, frame + 6, 6);
    std::memcpy(frame + 6, mac, 6);
}

}  // namespace ring3::net
