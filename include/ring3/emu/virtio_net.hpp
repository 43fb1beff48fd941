// An emulated virtio-net device served over vfio-user (VIRTIO 1.2 §5.1 network device), on the
// shared virtio PCI transport of emu::VirtioFunction (virtio_function.hpp: BAR0 layout, queues
// polled by a thread, descriptor validation, faults). Its device configuration (§5.1.4) holds
// the MAC, status (LINK_UP), max_virtqueue_pairs and the MTU.
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
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "ring3/core/unique_fd.hpp"
#include "ring3/emu/virtio_function.hpp"

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

class VirtioNetDevice final : public VirtioDeviceType {
  public:
    static constexpr std::uint64_t kBarSize = VirtioFunction::kBarSize;
    static constexpr std::uint32_t kCommonOffset = VirtioFunction::kCommonOffset;
    static constexpr std::uint32_t kDeviceOffset = VirtioFunction::kDeviceOffset;
    static constexpr std::uint32_t kDeviceLength = 12;  // mac, status, pairs, mtu (§5.1.4)

    // Declares the function's config space and BAR0, opens the backend and starts the polling
    // thread. Throws ring3::Error for bad options or a socket/capture file that cannot be used.
    VirtioNetDevice(PciFunction& function, VirtioNetOptions options);
    VirtioNetDevice(const VirtioNetDevice&) = delete;
    VirtioNetDevice& operator=(const VirtioNetDevice&) = delete;
    ~VirtioNetDevice() override;  // stops the poller, closes the backend, flushes the capture

    VirtioNetCounters counters() const;  // any thread (takes the lock)
    std::uint8_t status() const noexcept { return transport_.status(); }

    // VirtioDeviceType, under the function's lock.
    std::uint64_t offered_features() const noexcept override;
    const char* refuse_features(std::uint64_t driver_features) const noexcept override;
    void read_config(std::span<std::byte> out) const noexcept override;
    bool process(VirtioFunction& transport) override;
    void reset() noexcept override;

  private:
    using Rings = VirtioFunction::Rings;
    using Chain = VirtioFunction::Chain;
    using Run = VirtioFunction::Run;

    // Options checked before anything is declared on the function; throws ring3::Error.
    static VirtioNetOptions checked(VirtioNetOptions options, const std::string& name);
    static std::uint16_t num_queues(const VirtioNetOptions& options) noexcept;
    static VirtioFunction::Options transport_options(const VirtioNetOptions& options);
    bool process_tx(unsigned pair);
    bool process_rx_from_peer();
    bool process_control();
    bool deliver(unsigned pair, std::span<const std::byte> frame);
    unsigned steer(std::span<const std::byte> frame) const noexcept;

    // Backends.
    void open_backend();
    enum class Sent { ok, busy, dropped };
    Sent send_to_peer(std::span<const std::byte> frame);
    void capture(std::span<const std::byte> frame);

    PciFunction& function_;
    VirtioNetOptions options_;
    unsigned active_pairs_ = 1;
    Chain chain_;                        // scratch: the transmit or control chain in hand
    Chain rx_chain_;                     // scratch: the receive chain a frame goes into
    std::vector<std::byte> frame_;       // scratch: one frame with its header
    std::vector<std::byte> pending_rx_;  // a datagram read from the peer, not yet delivered
    std::size_t pending_rx_length_ = 0;
    unsigned pending_rx_pair_ = 0;
    bool has_pending_rx_ = false;
    UniqueFd socket_;
    std::FILE* capture_ = nullptr;
    VirtioNetCounters counters_;  // under the lock; copied out by counters()
    VirtioFunction transport_;    // last: built after, and stopped before, the state above
};

// "02:00:00:00:00:01" into six bytes; throws ring3::Error naming the text.
std::array<std::uint8_t, 6> parse_mac(const std::string& text);

}  // namespace ring3::emu
