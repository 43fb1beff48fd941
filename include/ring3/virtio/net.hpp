// virtio-net (VIRTIO 1.2 §5.1) behind the generic net::NetPort face: one receive and one
// transmit virtqueue per net::Queue (VIRTIO_NET_F_MQ gives several pairs, switched on through the
// control queue), the MAC address, link status and MTU from the device configuration. No
// offload is negotiated (checksums are the sender's), nor mergeable receive buffers: every frame
// is one descriptor holding the 12-byte virtio-net header and the frame behind it (§5.1.6).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/timeline.hpp"
#include "ring3/device/device.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/net/net_port.hpp"
#include "ring3/net/open.hpp"
#include "ring3/virtio/session.hpp"
#include "ring3/virtio/virtqueue.hpp"

namespace ring3::virtio {

struct NetOptions {
    unsigned queues = 1;  // queue pairs
    irq::WaitMode mode = irq::WaitMode::poll;
    std::uint16_t max_queue_size = 1024;  // ring entries, below the device's maximum
    std::uint32_t buffer_size = 2048;     // bytes of each buffer of a queue's own pool
    dma::ArenaOptions arena;
    TransportOptions transport;
    // How long a control-queue command may take.
    std::chrono::milliseconds control_timeout{1000};
};

// Names of the virtio-net feature bits (§5.1.3), for logs.
const char* net_feature_name(unsigned bit);

// The device configuration as the driver uses it (§5.1.4).
struct NetConfig {
    net::MacAddress mac;  // zero when the device gives none (VIRTIO_NET_F_MAC not offered)
    std::uint16_t status = kNetStatusLinkUp;  // without VIRTIO_NET_F_STATUS: assumed up
    std::uint16_t max_queue_pairs = 1;
    std::uint16_t mtu = 1500;
    std::uint32_t speed_mbps = 0;  // 0: unknown
    bool full_duplex = true;
};

class NetDevice;

class NetQueue final : public net::Queue {
  public:
    NetQueue(NetDevice& owner, unsigned index, std::unique_ptr<SplitQueue> rx,
             std::unique_ptr<SplitQueue> tx, irq::Interrupt* interrupt);
    ~NetQueue() override;

    unsigned rx_burst(net::Packet* packets, unsigned n) noexcept override;
    unsigned tx_burst(net::Packet* packets, unsigned n) noexcept override;
    unsigned reclaim() noexcept override;
    unsigned tx_pending() const noexcept override { return tx_->in_flight(); }
    unsigned wait(unsigned events, std::chrono::microseconds timeout) override;
    net::QueueStats stats() const noexcept override;
    int failure() const noexcept override;
    unsigned index() const noexcept override { return index_; }
    unsigned depth() const noexcept override { return depth_; }
    irq::WaitMode mode() const noexcept override { return mode_; }
    dma::BufferPool& pool() noexcept override { return *pool_; }
    std::uint16_t headroom() const noexcept override { return sizeof(NetHeader); }

    // First use (NetDevice::open_queue): the pool, the mode and the depth; posts receive buffers.
    void open(unsigned depth, irq::WaitMode mode, dma::BufferPool* pool);
    bool opened() const noexcept { return pool_ != nullptr; }
    SplitQueue& rx_ring() noexcept { return *rx_; }
    SplitQueue& tx_ring() noexcept { return *tx_; }
    // Garbage the device returned: rx chains shorter than the header (counted in rx_errors too).
    std::uint64_t garbage() const noexcept;

  private:
    static void on_rx(void* owner, void* context, std::uint16_t head,
                      std::uint32_t written) noexcept;
    static void on_tx(void* owner, void* context, std::uint16_t head,
                      std::uint32_t written) noexcept;
    void refill() noexcept;
    bool owns(const dma::Buffer& buffer) const noexcept {
        return buffer.index < pool_->capacity() && pool_->buffer(buffer.index).data == buffer.data;
    }

    NetDevice& owner_;
    unsigned index_;
    std::unique_ptr<SplitQueue> rx_;
    std::unique_ptr<SplitQueue> tx_;
    irq::Interrupt* interrupt_;
    irq::WaitMode mode_ = irq::WaitMode::poll;
    unsigned depth_ = 0;
    std::uint32_t max_frame_ = 0;
    dma::BufferPool* pool_ = nullptr;
    std::unique_ptr<dma::BufferPool> own_pool_;
    std::vector<dma::Buffer> rx_buffers_;  // by descriptor head
    std::vector<dma::Buffer> tx_buffers_;
    unsigned rx_posted_ = 0;
    // rx_burst's output while the used ring is reaped (SplitQueue::poll calls on_rx).
    net::Packet* burst_ = nullptr;
    unsigned burst_count_ = 0;
    net::QueueStats stats_;
    std::uint64_t short_chains_ = 0;
    CycleClock::time_point last_health_check_{};
};

class NetDevice final : public net::NetPort {
  public:
    NetDevice(std::unique_ptr<Device> device, const NetOptions& options);
    ~NetDevice() override;

    std::string name() const override;
    net::PortInfo info() const override { return info_; }
    net::LinkStatus link() const override;
    net::Queue& open_queue(unsigned index, unsigned depth = 0,
                           irq::WaitMode mode = irq::WaitMode::poll,
                           dma::BufferPool* pool = nullptr) override;
    dma::DmaPool& dma_pool() override { return session_->pool(); }

    PciTransport& transport() noexcept { return session_->transport(); }
    // The device's health (Session::check_health): looked at by queues whose wait found nothing.
    int check_health(CycleClock::time_point& last_check) noexcept {
        return session_->check_health(last_check);
    }
    int failure() const noexcept { return session_->failure(); }
    const NetConfig& config() const noexcept { return config_; }
    const NetOptions& options() const noexcept { return options_; }
    std::uint64_t control_commands() const noexcept { return control_commands_; }

  private:
    void start(std::unique_ptr<Device> device);
    void stop() noexcept;
    NetConfig read_config();
    // §5.1.6.5: sends one command on the control queue and waits (bounded) for its ack; throws
    // ring3::Error when the device refuses it or does not answer.
    void control(std::uint8_t command_class, std::uint8_t command, const void* data,
                 std::uint32_t length, const char* what);

    NetOptions options_;
    std::unique_ptr<Session> session_;  // outlives the queues (their rings are in its pool)
    NetConfig config_;
    net::PortInfo info_;
    std::unique_ptr<SplitQueue> control_;
    dma::DmaBuffer control_buffer_;
    std::uint64_t control_commands_ = 0;
    std::vector<std::unique_ptr<NetQueue>> queues_;
};

// The NetPort factory the registry calls (vendor 1af4, device 1041; and 1000, the transitional
// id, to say clearly that a legacy-only device is not driven).
std::unique_ptr<net::NetPort> open_net(std::unique_ptr<Device> device,
                                       const net::OpenNetOptions& options);

}  // namespace ring3::virtio
