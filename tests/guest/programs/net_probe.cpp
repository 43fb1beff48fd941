// ring3_guest_net_probe: the kernel's side of the net-tap guest case
// (tests/guest/cases/net-tap.sh).
//
//   ring3_guest_net_probe mktap NAME [multi]             a persistent TAP (IFF_MULTI_QUEUE if
//   multi) ring3_guest_net_probe rmtap NAME [multi]             delete it again
//   ring3_guest_net_probe send IFACE COUNT SEED SIZE     COUNT test frames through an AF_PACKET
//                                                        socket: the kernel transmits them on
//                                                        IFACE, so a TAP's reader receives them
//   ring3_guest_net_probe capture IFACE COUNT SECONDS    an AF_PACKET socket on IFACE checks what
//                                                        arrives there (a TAP: what its fd wrote)
//
// `capture` shares no code with ring3: it parses Ethernet, IPv4 and UDP itself, recomputes the
// IPv4 header checksum, and checks that the UDP test frames (destination port 21043) carry, per
// stream, every sequence number from 0 once. It prints "ready" once the socket is bound, and a
// summary line; it exits 0 only when all COUNT frames came and all were right.
// `send` builds its frames with ring3's own builder (that is what `perf net --rx` must accept),
// paced by the interface's tx counters so that the TAP's queue (500 frames) never overflows.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ring3/net/frame.hpp"

namespace {

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "net_probe: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(2);
}

int open_tap(const std::string& name, bool multi) {
    const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        die("open /dev/net/tun");
    }
    ifreq request{};
    std::snprintf(request.ifr_name, IFNAMSIZ, "%s", name.c_str());
    request.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0));
    if (::ioctl(fd, TUNSETIFF, &request) != 0) {
        die("TUNSETIFF " + name);
    }
    return fd;
}

int set_persist(const std::string& name, bool multi, bool persist) {
    const int fd = open_tap(name, multi);
    if (::ioctl(fd, TUNSETPERSIST, persist ? 1 : 0) != 0) {
        die("TUNSETPERSIST " + name);
    }
    ::close(fd);
    return 0;
}

int packet_socket(const std::string& iface) {
    const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) {
        die("socket(AF_PACKET)");
    }
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ALL);
    address.sll_ifindex = static_cast<int>(::if_nametoindex(iface.c_str()));
    if (address.sll_ifindex == 0) {
        die("if_nametoindex " + iface);
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        die("bind to " + iface);
    }
    return fd;
}

std::uint64_t counter(const std::string& iface, const std::string& name) {
    std::ifstream in("/sys/class/net/" + iface + "/statistics/" + name);
    std::uint64_t value = 0;
    in >> value;
    return value;
}

int send(const std::string& iface, std::uint64_t count, std::uint64_t seed, std::size_t size) {
    const int fd = packet_socket(iface);
    ring3::net::TestFlow flow;
    flow.source_mac = ring3::net::MacAddress{{0x02, 0x00, 0x00, 0x00, 0x00, 0x09}};
    flow.destination_mac = ring3::net::MacAddress{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    const ring3::net::FillPattern pattern(seed);
    std::vector<std::byte> frame(size);
    const std::uint64_t base = counter(iface, "tx_packets") + counter(iface, "tx_dropped");
    const auto start = std::chrono::steady_clock::now();
    for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
        // At most 256 frames in the TAP's queue (it holds 500 before the kernel drops).
        const auto queued = [&] {
            const std::uint64_t done =
                counter(iface, "tx_packets") + counter(iface, "tx_dropped") - base;
            return static_cast<std::int64_t>(sequence) - static_cast<std::int64_t>(done);
        };
        while (sequence % 64 == 0 && queued() > 256) {
            if (std::chrono::steady_clock::now() - start > std::chrono::seconds(60)) {
                std::fprintf(stderr, "net_probe: send: nobody reads %s\n", iface.c_str());
                return 1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        ring3::net::build_test_frame(frame, flow, 0, sequence, pattern);
        if (::send(fd, frame.data(), frame.size(), 0) != static_cast<ssize_t>(frame.size())) {
            die("send on " + iface);
        }
    }
    std::printf("sent %llu frames of %zu bytes on %s\n", static_cast<unsigned long long>(count),
                size, iface.c_str());
    return 0;
}

// ---- capture: its own parsing, nothing of ring3 -------------------------------------------------

unsigned u8(const unsigned char* p) {
    return p[0];
}
unsigned u16(const unsigned char* p) {
    return static_cast<unsigned>(p[0]) << 8 | p[1];
}

bool ipv4_header_ok(const unsigned char* ip) {
    unsigned long sum = 0;
    for (int i = 0; i < 20; i += 2) {
        sum += u16(ip + i);
    }
    while (sum > 0xffff) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return sum == 0xffff;
}

int capture(const std::string& iface, std::uint64_t count, unsigned seconds) {
    const int fd = packet_socket(iface);
    const int buffer = 64 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer);
    std::printf("ready\n");
    std::fflush(stdout);

    std::map<unsigned, std::set<std::uint64_t>> streams;
    std::uint64_t test_frames = 0, other = 0, bad = 0, duplicates = 0, outgoing = 0;
    std::string first_bad;
    std::string first_macs;
    const auto start = std::chrono::steady_clock::now();
    auto deadline = start + std::chrono::seconds(seconds);
    bool lingering = false;
    std::vector<unsigned char> frame(65536);
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline - std::chrono::steady_clock::now())
                              .count();
        if (left <= 0) {
            break;
        }
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) {
            continue;
        }
        sockaddr_ll from{};
        socklen_t from_size = sizeof from;
        const ssize_t n = ::recvfrom(fd, frame.data(), frame.size(), 0,
                                     reinterpret_cast<sockaddr*>(&from), &from_size);
        if (n < 0) {
            die("recvfrom on " + iface);
        }
        if (from.sll_pkttype == PACKET_OUTGOING) {
            ++outgoing;  // the kernel's own transmissions, not what the TAP's fd wrote
            continue;
        }
        const auto length = static_cast<std::size_t>(n);
        const unsigned char* f = frame.data();
        if (length < 42 || u16(f + 12) != 0x0800 || u8(f + 23) != 17 || u16(f + 36) != 21043) {
            ++other;
            continue;
        }
        ++test_frames;
        std::string problem;
        if (length < 60 || length > 1514) {
            problem = "length " + std::to_string(length);
        } else if (u8(f + 14) != 0x45) {
            problem = "IPv4 version/IHL";
        } else if (!ipv4_header_ok(f + 14)) {
            problem = "IPv4 header checksum";
        } else if (u16(f + 16) != length - 14) {
            problem = "IPv4 total length";
        } else if (u16(f + 38) != length - 34) {
            problem = "UDP length";
        } else if (u16(f + 42) != 0x7233 || u16(f + 44) != 0x6e74) {
            problem = "magic";
        }
        if (!problem.empty()) {
            if (bad++ == 0) {
                first_bad = problem;
            }
            continue;
        }
        const unsigned stream = u16(f + 46);
        std::uint64_t sequence = 0;
        for (int i = 0; i < 8; ++i) {
            sequence = sequence << 8 | f[48 + i];
        }
        if (u16(f + 34) != 1024 + stream) {
            if (bad++ == 0) {
                first_bad = "UDP source port vs stream";
            }
            continue;
        }
        if (first_macs.empty()) {
            char text[64];
            std::snprintf(text, sizeof text,
                          "destination %02x:%02x:%02x:%02x:%02x:%02x, source "
                          "%02x:%02x:%02x:%02x:%02x:%02x",
                          f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11]);
            first_macs = text;
        }
        if (!streams[stream].insert(sequence).second) {
            ++duplicates;
        }
        if (!lingering && test_frames >= count) {
            // Everything expected came: listen a little longer for extra frames.
            lingering = true;
            deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
        }
    }
    std::uint64_t missing = 0;
    for (const auto& [stream, seen] : streams) {
        const std::uint64_t highest = seen.empty() ? 0 : *seen.rbegin() + 1;
        missing += highest - seen.size();  // holes below the highest sequence
    }
    tpacket_stats stats{};
    socklen_t stats_size = sizeof stats;
    ::getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &stats, &stats_size);
    std::printf(
        "captured %llu test frames in %zu stream(s): %llu bad, %llu duplicates, %llu "
        "missing below the highest sequence; %llu other frames, %llu outgoing; socket "
        "drops %u%s%s\n",
        static_cast<unsigned long long>(test_frames), streams.size(),
        static_cast<unsigned long long>(bad), static_cast<unsigned long long>(duplicates),
        static_cast<unsigned long long>(missing), static_cast<unsigned long long>(other),
        static_cast<unsigned long long>(outgoing), stats.tp_drops,
        first_bad.empty() ? "" : "; first bad: ", first_bad.c_str());
    if (!first_macs.empty()) {
        std::printf("first test frame: %s\n", first_macs.c_str());
    }
    for (const auto& [stream, seen] : streams) {
        std::printf("stream %u: %zu frames, sequences %llu..%llu\n", stream, seen.size(),
                    static_cast<unsigned long long>(seen.empty() ? 0 : *seen.begin()),
                    static_cast<unsigned long long>(seen.empty() ? 0 : *seen.rbegin()));
    }
    const bool ok =
        test_frames == count && bad == 0 && duplicates == 0 && missing == 0 && stats.tp_drops == 0;
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    const auto usage = [] {
        std::fprintf(stderr,
                     "usage: ring3_guest_net_probe mktap|rmtap NAME [multi] | send IFACE COUNT "
                     "SEED SIZE | capture IFACE COUNT SECONDS\n");
        return 2;
    };
    if (args.size() >= 2 && (args[0] == "mktap" || args[0] == "rmtap")) {
        return set_persist(args[1], args.size() > 2 && args[2] == "multi", args[0] == "mktap");
    }
    if (args.size() == 5 && args[0] == "send") {
        return send(args[1], std::stoull(args[2]), std::stoull(args[3]), std::stoul(args[4]));
    }
    if (args.size() == 4 && args[0] == "capture") {
        return capture(args[1], std::stoull(args[2]), static_cast<unsigned>(std::stoul(args[3])));
    }
    return usage();
}
