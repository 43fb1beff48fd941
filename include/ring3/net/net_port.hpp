// NetPort: the generic face of a network driver (DESIGN.md, "drivers/ generic faces"), the sibling
// of block::BlockDevice. virtio-net and e1000e will implement it over PCI; tap_port.hpp implements
// it over a Linux TAP device. `ring3 perf net` and applications use only this.
//
// A port has one or more queue pairs (one receive ring and one transmit ring each). A queue pair
// belongs to one thread at a time and is never locked; nothing on the data path is shared between
// queue pairs. rx_burst() and tx_burst() are noexcept, allocate nothing and, in poll mode, make no
// system call (a TAP port is the exception: its rings are a file descriptor, so every burst is a
// read() or write() per frame).
//
// Frames live in packet buffers from a dma::BufferPool, so a PCI NIC can DMA into and out of them
// directly. A Packet names its buffer and where the frame lies in it. Ownership moves with the
// packet, as in DPDK's burst API:
//   - rx_burst() hands out filled buffers; the caller owns them and gives each back to the queue's
//     pool (pool().put()) or passes it on to a tx_burst() of a queue that uses the same pool;
//   - tx_burst() takes the buffers of the packets it accepted and returns them to their pool once
//     the device has sent them (at once for TAP, from a later burst or wait() for a NIC).
//
// Conventions of this layer ("no room" and errors, one way everywhere):
//   - Control path (open_queue, link, set up): throws ring3::Error.
//   - Data path: counts, never -errno. rx_burst() returns how many packets it filled (0: nothing
//     arrived). tx_burst() returns how many of the first packets it accepted; fewer than asked
//     means "no room" (the ring is full): packets[accepted..n) are still the caller's, to retry
//     later (after wait(Ready::tx)) or to give back. A frame that can never be sent (empty, longer
//     than max_frame, not in the queue's pool) is accepted, dropped and counted in tx_errors, so a
//     bad frame never blocks the ones behind it. Frames the port had to drop (no buffer posted,
//     ring overrun) count in rx_drops; frames received broken count in rx_errors.
//   - One frame, one buffer: max_frame + headroom fits a buffer (no chained segments yet).
//   - A queue whose device failed (fd error, device gone, reset needed) reports it through
//     failure() (an errno, 0 while healthy); from then on its bursts return 0.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ring3/dma/pool.hpp"
#include "ring3/irq/interrupt.hpp"

namespace ring3::net {

// An IEEE 802 MAC address, in transmission order.
struct MacAddress {
    std::array<std::uint8_t, 6> bytes{};

    // "02:00:00:00:00:01" (lower-case hex, colons).
    std::string to_string() const;
    // Six hex pairs separated by ':' or '-'; nullopt when `text` is not one.
    static std::optional<MacAddress> parse(std::string_view text) noexcept;
    bool is_multicast() const noexcept { return (bytes[0] & 0x01) != 0; }
    bool is_zero() const noexcept;
    friend bool operator==(const MacAddress&, const MacAddress&) = default;
};

// Offloads a packet may ask for (tx) or report (rx); none is implemented yet. The flags exist so
// drivers and callers agree where they go: checksums are computed in software unless a flag asks
// the device, and a device that cannot leaves the flag unset in PortInfo::offloads.
enum PacketFlags : std::uint16_t {
    kNoFlags = 0,
    kTxIpChecksum = 1u << 0,    // tx: the device fills the IPv4 header checksum
    kTxL4Checksum = 1u << 1,    // tx: the device fills the TCP/UDP checksum
    kRxL4ChecksumOk = 1u << 8,  // rx: the device verified the TCP/UDP checksum
};

// One frame in a packet buffer: Ethernet header first, no FCS (the device adds and strips it).
struct Packet {
    dma::Buffer buffer;        // from the queue's pool
    std::uint16_t offset = 0;  // the frame starts at buffer.data + offset
    std::uint16_t flags = 0;   // PacketFlags
    std::uint32_t length = 0;  // bytes of the frame

    std::byte* data() const noexcept { return buffer.data + offset; }
};

// Counters of one queue pair since it was opened. Owned by the queue's thread: read them there,
// or after that thread stopped using the queue.
struct QueueStats {
    std::uint64_t rx_packets = 0;
    std::uint64_t rx_bytes = 0;   // frame bytes, without FCS
    std::uint64_t rx_drops = 0;   // frames lost for want of a buffer or ring space
    std::uint64_t rx_errors = 0;  // frames received broken, or failed reads
    std::uint64_t tx_packets = 0;
    std::uint64_t tx_bytes = 0;
    std::uint64_t tx_drops = 0;   // frames accepted but discarded before the wire
    std::uint64_t tx_errors = 0;  // frames that could never be sent, or failed writes
    // Doorbell writes / notifies telling the device about new tx frames or refilled rx buffers
    // (block::QueueStats has the same): under emulation each is a trap into the hypervisor, so
    // a driver batches them per burst. 0 for TAP, whose every frame is a system call instead.
    std::uint64_t notifications = 0;

    QueueStats& operator+=(const QueueStats& other) noexcept;
};

// What wait() waits for, and what it found: bits.
enum Ready : unsigned {
    kReadyNone = 0,
    kReadyRx = 1u << 0,  // rx_burst() would return a frame
    kReadyTx = 1u << 1,  // tx_burst() has room (or sent buffers to reclaim)
};

class Queue {
  public:
    virtual ~Queue() = default;

    // Receives up to `n` frames into packets[0..k); returns k. Each packet's buffer is the
    // caller's from then on (give it back with pool().put(), or transmit it).
    virtual unsigned rx_burst(Packet* packets, unsigned n) noexcept = 0;
    // Offers packets[0..n) for transmission in order; returns how many of the first it accepted
    // (their buffers now belong to the queue; see the conventions above).
    virtual unsigned tx_burst(Packet* packets, unsigned n) noexcept = 0;
    // Returns the buffers of sent frames to their pool now (tx_burst() and wait() do it too);
    // returns how many. Nothing for TAP, which returns each buffer in tx_burst().
    virtual unsigned reclaim() noexcept = 0;
    // Frames accepted by tx_burst() and not yet sent.
    virtual unsigned tx_pending() const noexcept = 0;

    // Waits until one of `events` is ready, the way the queue's mode says (poll: spin; interrupt:
    // sleep on the interrupt or fd; adaptive: spin a while, then sleep), at most `timeout`.
    // Returns the ready events among `events` (kReadyNone on timeout). Throws ring3::Error when
    // the interrupt or fd fails.
    virtual unsigned wait(unsigned events, std::chrono::microseconds timeout) = 0;

    virtual QueueStats stats() const noexcept = 0;
    virtual int failure() const noexcept = 0;  // 0, or the errno that stopped the queue

    virtual unsigned index() const noexcept = 0;
    virtual unsigned depth() const noexcept = 0;  // descriptors per ring
    virtual irq::WaitMode mode() const noexcept = 0;
    // Where rx_burst() takes buffers from, and where sent buffers go back.
    virtual dma::BufferPool& pool() noexcept = 0;
    // Bytes at the start of each buffer the port keeps for itself (a virtio-net header, say):
    // a transmitted frame starts at an offset of at least this.
    virtual std::uint16_t headroom() const noexcept = 0;
};

struct PortInfo {
    MacAddress mac;
    std::uint32_t mtu = 1500;        // bytes of an IP packet (Linux's MTU), not of a frame
    std::uint32_t max_frame = 1514;  // the longest frame without FCS it sends and receives
    std::uint32_t queue_pairs = 1;   // queues available to open_queue()
    std::uint32_t max_queue_depth = 0;
    std::uint32_t buffer_size = 2048;  // bytes of each buffer of a queue's own pool
    std::uint16_t headroom = 0;        // see Queue::headroom()
    std::uint16_t offloads = 0;        // PacketFlags the port can honour; none yet
};

struct LinkStatus {
    bool up = false;               // frames can pass: the link is up (TAP: the interface is up)
    std::uint32_t speed_mbps = 0;  // 0: unknown
    bool full_duplex = true;
};

// How many buffers a queue's own pool holds (open_queue without a pool): every ring slot twice
// (one set with the device, one being filled or consumed), and 512 more for bursts in the caller's
// hands and a second queue sharing the pool (the two sides of a forwarder).
constexpr std::uint32_t own_pool_buffers(std::size_t ring_slots) noexcept {
    return static_cast<std::uint32_t>(2 * ring_slots + 512);
}

class NetPort {
  public:
    virtual ~NetPort() = default;
    virtual std::string name() const = 0;  // "tap:tap0", "vfio:0000:01:00.0"
    virtual PortInfo info() const = 0;
    // Asks the device (or the kernel, for TAP) now; throws ring3::Error when it cannot.
    virtual LinkStatus link() const = 0;

    // Queue pair `index` (< info().queue_pairs), set up on first use with `depth` descriptors per
    // ring (0: the port's default) and the wait mode. Its buffers come from `pool` when given
    // (two queues that share a pool, e.g. the two sides of a forwarder, must run on the same
    // thread, and the pool's memory must be reachable by both devices), else from a pool of its
    // own over dma_pool(). Opening an open queue again returns it (its settings unchanged).
    virtual Queue& open_queue(unsigned index, unsigned depth = 0,
                              irq::WaitMode mode = irq::WaitMode::poll,
                              dma::BufferPool* pool = nullptr) = 0;

    // DMA memory the device can reach, for packet buffer pools.
    virtual dma::DmaPool& dma_pool() = 0;

    // Not here yet (add them when a driver needs them): receive filters (promiscuous mode,
    // multicast lists), changing the MTU, port-wide hardware counters, offloads.
};

}  // namespace ring3::net
