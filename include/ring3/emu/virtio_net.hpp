// An emulated virtio-net device served over vfio-user (VIRTIO 1.2: §4.1 PCI transport, §2.7
// split virtqueues, §5.1 network device; sections cited where each rule is implemented).
//
// BAR0 (16 KiB, 64-bit) holds the virtio structures the vendor capabilities point at (§4.1.4):
//   0x0000 common configuration  trapped (REGION_READ/WRITE): status, features, queue setup
//   0x0800 ISR status            trapped
//   0x0c00 device configuration  trapped: MAC, status (LINK_UP), max_virtqueue_pairs, MTU
//   0x1000 notifications         a shared page the client maps: notify writes cost no message
//   0x2000 MSI-X table, 0x3000 PBA
// The device's own thread polls the available rings of the enabled queues (like a busy-polling
// vhost), so notifications are never needed; it asks for none (§2.7.7, §2.7.10).
//
// Frames leave and arrive through a backend:
//   loopback  a frame sent on transmitq N lands in a buffer of receiveq N (dropped, and counted,
//             when none is posted);
//   peer      a unix datagram socket pair, one frame per datagram without the virtio header:
//             the device binds `dgram_path` and sends every transmitted frame to `peer_path`
//             (the peer's own bound socket); datagrams that reach `dgram_path` are received.
//             Nothing is lost on the way: a full peer makes transmit wait (the frame stays in
//             the ring), and the socket is read only when a receive buffer is posted;
//   none      transmitted frames are counted and dropped; nothing is received.
// With `capture_path`, every transmitted frame is also written to a pcap file.
//
// Anything read from the driver's memory is checked (descriptor indexes, flags and lengths,
// chains that loop, addresses that are not mapped): a bad one sets DEVICE_NEEDS_RESET (§2.1.2)
// and the device stops using its queues until the driver resets it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ring3/core/unique_fd.hpp"
#include "ring3/emu/nvme.hpp"  // emu::Faults and parse_fault: one fault syntax for every model
#include "ring3/emu/server.hpp"

namespace ring3::emu {

struct VirtioNetOptions {
    unsigned queue_pairs = 1;        // > 1 offers VIRTIO_NET_F_MQ with a control queue
    std::uint16_t queue_size = 256;  // each virtqueue's maximum (a power of two)
    std::array<std::uint8_t, 6> mac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    std::uint16_t mtu = 1500;
    bool loopback = false;
    std::string peer_path;   // where transmitted frames go (a bound SOCK_DGRAM unix socket)
    std::string dgram_path;  // the device's own bound socket (needed with peer_path)
    std::string capture_path;
    // Counted over frames (transmitted and received) from the device's creation:
    //   delay:US   every used element is returned US µs late
    //   drop:N     the Nth frame's buffer is never returned
    //   corrupt:N  the Nth frame's used element names a descriptor that does not exist
    //   cfs:N      DEVICE_NEEDS_RESET after N frames (the device's "fatal status")
    //   vanish:N   the connection is dropped after N frames
    Faults faults;
};

struct VirtioNetCounters {
    std::uint64_t tx_frames = 0;
    std::uint64_t tx_bytes = 0;
    std::uint64_t tx_dropped = 0;  // no backend, no peer listening, too long
    std::uint64_t rx_frames = 0;
    std::uint64_t rx_bytes = 0;
    std::uint64_t rx_dropped = 0;  // loopback with no receive buffer posted, buffer too small
    std::uint64_t interrupts = 0;
    std::uint64_t needs_reset = 0;                 // times DEVICE_NEEDS_RESET was set
    std::uint64_t resets = 0;                      // driver resets (device_status written 0)
    std::vector<std::uint64_t> tx_frames_by_pair;  // transmitq1..N: which queues carried them
};

class VirtioNetDevice final : public DeviceModel {
  public:
    static constexpr std::uint64_t kBarSize = 0x4000;
    static constexpr std::uint32_t kCommonOffset = 0x0000;
    static constexpr std::uint32_t kCommonLength = 0x38;  // the VIRTIO 1.0 part (§4.1.4.3)
    static constexpr std::uint32_t kIsrOffset = 0x0800;
    static constexpr std::uint32_t kDeviceOffset = 0x0c00;
    static constexpr std::uint32_t kDeviceLength = 12;  // mac, status, pairs, mtu (§5.1.4)
    static constexpr std::uint32_t kNotifyOffset = 0x1000;
    static constexpr std::uint32_t kNotifyLength = 0x1000;
    static constexpr std::uint32_t kNotifyMultiplier = 4;
    static constexpr std::uint32_t kMsixTable = 0x2000;
    static constexpr std::uint32_t kMsixPba = 0x3000;

    // Declares the function's config space and BAR0, opens the backend and starts the polling
    // thread. Throws ring3::Error for bad options or a socket/capture file that cannot be used.
    VirtioNetDevice(PciFunction& function, VirtioNetOptions options);
    VirtioNetDevice(const VirtioNetDevice&) = delete;
    VirtioNetDevice& operator=(const VirtioNetDevice&) = delete;
    ~VirtioNetDevice() override;  // stops the poller, closes the backend, flushes the capture

    void reset() override;  // DEVICE_RESET or FLR, under the function's lock
    void client_detached() override;

    VirtioNetCounters counters() const;  // any thread (takes the lock)
    std::uint8_t status() const noexcept { return status_snapshot_.load(); }

  private:
    struct Queue {
        std::uint16_t size = 0;  // as the driver set it (the maximum until then)
        std::uint16_t vector = 0xffff;
        bool enabled = false;
        std::uint64_t desc = 0;
        std::uint64_t driver = 0;  // available ring
        std::uint64_t device = 0;  // used ring
        std::uint16_t last_avail = 0;
        std::uint16_t used_idx = 0;
        std::uint16_t signalled_used = 0;  // used idx at the last interrupt decision
        struct Pending {
            std::chrono::steady_clock::time_point due;
            std::uint32_t id = 0;
            std::uint32_t len = 0;
        };
        std::deque<Pending> pending;  // used elements held back (delay fault)
    };
    // One resolved descriptor chain: its head and the runs of client memory it names.
    struct Run {
        std::byte* data = nullptr;
        std::uint32_t length = 0;
        bool writable = false;
    };
    struct Chain {
        std::uint16_t head = 0;
        std::uint64_t readable = 0;
        std::uint64_t writable = 0;
        std::vector<Run> runs;
    };
    // Ring pointers resolved for one pass (valid under the lock).
    struct Rings {
        const std::byte* desc = nullptr;
        std::byte* avail = nullptr;  // the driver's; only read
        std::byte* used = nullptr;
    };

    // Registers.
    std::uint64_t bar_read(std::uint64_t offset, unsigned width);
    void bar_write(std::uint64_t offset, unsigned width, std::uint64_t value);
    void common_snapshot(std::byte (&out)[kCommonLength]) const noexcept;
    void common_write(std::uint64_t offset, unsigned width, std::uint64_t value);
    void write_status(std::uint8_t value);
    void device_reset();
    std::uint16_t num_queues() const noexcept;
    std::uint64_t offered_features() const noexcept;

    // The poller.
    void poll_loop();
    bool poll_once();
    bool live() const noexcept;  // running (DRIVER_OK), not broken, not vanished
    bool rings(Queue& q, Rings& out) noexcept;
    bool next_chain(Queue& q, const Rings& r, Chain& chain);
    bool process_tx(unsigned pair);
    bool process_rx_from_peer();
    bool process_control();
    bool deliver(unsigned pair, std::span<const std::byte> frame);
    void complete(Queue& q, const Rings& r, std::uint32_t id, std::uint32_t len);
    void post_used(Queue& q, const Rings& r, std::uint32_t id, std::uint32_t len);
    void post_due(std::chrono::steady_clock::time_point now);
    void interrupt(Queue& q, const Rings& r);
    void needs_reset(const std::string& why);
    unsigned steer(std::span<const std::byte> frame) const noexcept;

    // Backends.
    void open_backend();
    enum class Sent { ok, busy, dropped };
    Sent send_to_peer(std::span<const std::byte> frame);
    void capture(std::span<const std::byte> frame);

    PciFunction& function_;
    VirtioNetOptions options_;
    std::span<std::byte> notify_;
    std::vector<Queue> queues_;
    // Common configuration state (§4.1.4.3).
    std::uint32_t device_feature_select_ = 0;
    std::uint32_t driver_feature_select_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint16_t config_vector_ = 0xffff;
    std::uint8_t status_ = 0;
    std::uint16_t queue_select_ = 0;
    std::uint8_t isr_ = 0;
    unsigned active_pairs_ = 1;
    bool halted_ = false;  // vanished: nothing more is processed
    std::uint64_t frames_ = 0;
    std::vector<std::byte> frame_;       // scratch: one frame with its header
    std::vector<std::byte> pending_rx_;  // a datagram read from the peer, not yet delivered
    std::size_t pending_rx_length_ = 0;
    unsigned pending_rx_pair_ = 0;
    bool has_pending_rx_ = false;
    UniqueFd socket_;
    std::FILE* capture_ = nullptr;
    VirtioNetCounters counters_;  // under the lock; copied out by counters()
    std::atomic<std::uint8_t> status_snapshot_{0};
    std::atomic<bool> stop_{false};
    std::thread poller_;
};

// "02:00:00:00:00:01" into six bytes; throws ring3::Error naming the text.
std::array<std::uint8_t, 6> parse_mac(const std::string& text);

}  // namespace ring3::emu
