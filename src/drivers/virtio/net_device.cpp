// virtio-net as a net::NetPort (VIRTIO 1.2 §5.1).
#include "ring3/virtio/net.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/irq/wait.hpp"
#include "ring3/virtio/registers.hpp"

namespace ring3::virtio {

const char* net_feature_name(unsigned bit) {
    switch (bit) {
        case net_feature::csum:
            return "NET_CSUM";
        case net_feature::guest_csum:
            return "NET_GUEST_CSUM";
        case net_feature::ctrl_guest_offloads:
            return "NET_CTRL_GUEST_OFFLOADS";
        case net_feature::mtu:
            return "NET_MTU";
        case net_feature::mac:
            return "NET_MAC";
        case net_feature::guest_tso4:
            return "NET_GUEST_TSO4";
        case net_feature::guest_tso6:
            return "NET_GUEST_TSO6";
        case net_feature::guest_ecn:
            return "NET_GUEST_ECN";
        case net_feature::guest_ufo:
            return "NET_GUEST_UFO";
        case net_feature::host_tso4:
            return "NET_HOST_TSO4";
        case net_feature::host_tso6:
            return "NET_HOST_TSO6";
        case net_feature::host_ecn:
            return "NET_HOST_ECN";
        case net_feature::host_ufo:
            return "NET_HOST_UFO";
        case net_feature::mrg_rxbuf:
            return "NET_MRG_RXBUF";
        case net_feature::status:
            return "NET_STATUS";
        case net_feature::ctrl_vq:
            return "NET_CTRL_VQ";
        case net_feature::ctrl_rx:
            return "NET_CTRL_RX";
        case net_feature::ctrl_vlan:
            return "NET_CTRL_VLAN";
        case net_feature::ctrl_rx_extra:
            return "NET_CTRL_RX_EXTRA";
        case net_feature::guest_announce:
            return "NET_GUEST_ANNOUNCE";
        case net_feature::mq:
            return "NET_MQ";
        case net_feature::ctrl_mac_addr:
            return "NET_CTRL_MAC_ADDR";
        case net_feature::rss:
            return "NET_RSS";
        case net_feature::speed_duplex:
            return "NET_SPEED_DUPLEX";
        default:
            return nullptr;
    }
}

namespace {

constexpr std::uint32_t kHeader = sizeof(NetHeader);
constexpr std::uint32_t kEthernetHeader = 14;
constexpr std::uint16_t kMinMtu = 68;    // RFC 791: every IPv4 link carries 68-byte datagrams
constexpr std::size_t kControlAck = 32;  // where the ack byte lies in the control buffer
constexpr std::uint8_t kAckUnset = 0xff;

}  // namespace

// ---- NetQueue ----------------------------------------------------------------------------------

NetQueue::NetQueue(NetDevice& owner, unsigned index, std::unique_ptr<SplitQueue> rx,
                   std::unique_ptr<SplitQueue> tx, irq::Interrupt* interrupt)
    : owner_(owner),
      index_(index),
      rx_(std::move(rx)),
      tx_(std::move(tx)),
      interrupt_(interrupt),
      rx_buffers_(rx_->size()),
      tx_buffers_(tx_->size()) {
    CycleClock::calibrate();
}

NetQueue::~NetQueue() {
    // The device was reset before (NetDevice::stop): every buffer it held comes back.
    if (pool_ == nullptr) {
        return;
    }
    const auto give_back = [](void* self, void*, std::uint16_t head, std::uint32_t) noexcept {
        auto& q = *static_cast<NetQueue*>(self);
        q.pool_->put(q.rx_buffers_[head]);
    };
    rx_->fail_all(give_back, this);
    tx_->fail_all(&NetQueue::on_tx, this);
}

void NetQueue::open(unsigned depth, irq::WaitMode mode, dma::BufferPool* pool) {
    depth_ = depth;
    mode_ = interrupt_ == nullptr ? irq::WaitMode::poll : mode;
    max_frame_ = owner_.info().max_frame;
    if (pool == nullptr) {
        const auto count = net::own_pool_buffers(rx_->size() + tx_->size());
        own_pool_ =
            std::make_unique<dma::BufferPool>(owner_.dma_pool(), owner_.info().buffer_size, count);
        pool = own_pool_.get();
    }
    pool_ = pool;
    CycleClock::calibrate();  // once per process: wait() spaces its health checks with it
    refill();
}

void NetQueue::refill() noexcept {
    const auto length = static_cast<std::uint32_t>(pool_->buffer_size());
    unsigned added = 0;
    while (rx_posted_ < depth_ && rx_->free_descriptors() != 0) {
        dma::Buffer buffer;
        if (!pool_->get(buffer)) {
            break;  // the caller holds the rest; the next burst tries again
        }
        const Segment segment{buffer.iova, length, true};
        const int head = rx_->add({&segment, 1}, nullptr);
        rx_buffers_[static_cast<std::uint16_t>(head)] = buffer;
        ++rx_posted_;
        ++added;
    }
    if (added != 0) {
        rx_->publish();
    }
}

void NetQueue::on_rx(void* owner, void*, std::uint16_t head, std::uint32_t written) noexcept {
    auto& q = *static_cast<NetQueue*>(owner);
    const dma::Buffer buffer = q.rx_buffers_[head];
    --q.rx_posted_;
    // §5.1.6.4: the device wrote the header and the frame behind it. A chain with no frame in it
    // is the device's garbage.
    if (written <= kHeader) {
        ++q.short_chains_;
        ++q.stats_.rx_errors;
        q.pool_->put(buffer);
        return;
    }
    net::Packet& p = q.burst_[q.burst_count_++];
    p.buffer = buffer;
    p.offset = static_cast<std::uint16_t>(kHeader);
    p.flags = net::kNoFlags;
    p.length = written - kHeader;
    ++q.stats_.rx_packets;
    q.stats_.rx_bytes += p.length;
}

void NetQueue::on_tx(void* owner, void*, std::uint16_t head, std::uint32_t) noexcept {
    auto& q = *static_cast<NetQueue*>(owner);
    q.pool_->put(q.tx_buffers_[head]);
}

unsigned NetQueue::rx_burst(net::Packet* packets, unsigned n) noexcept {
    if (rx_->broken() || n == 0 || owner_.failure() != 0) {
        return 0;
    }
    burst_ = packets;
    burst_count_ = 0;
    rx_->poll(&NetQueue::on_rx, this, n);
    refill();
    return burst_count_;
}

unsigned NetQueue::tx_burst(net::Packet* packets, unsigned n) noexcept {
    if (tx_->broken() || owner_.failure() != 0) {
        return 0;
    }
    if (tx_->free_descriptors() < n) {
        reclaim();
    }
    const std::size_t buffer_size = pool_->buffer_size();
    unsigned accepted = 0;
    for (; accepted < n; ++accepted) {
        const net::Packet& p = packets[accepted];
        if (!owns(p.buffer) || p.offset < kHeader || p.length < kEthernetHeader ||
            p.length > max_frame_ || std::size_t{p.offset} + p.length > buffer_size) {
            // Never sendable: accepted and dropped (net_port.hpp's convention).
            ++stats_.tx_errors;
            if (owns(p.buffer)) {
                pool_->put(p.buffer);
            }
            continue;
        }
        if (tx_->free_descriptors() == 0 || tx_->in_flight() >= depth_) {
            break;  // no room: this packet and the rest stay the caller's
        }
        // §5.1.6.2: no offload asked for, so the header is all zeros; header and frame go out
        // in one descriptor (VIRTIO_F_VERSION_1 lets the driver lay the chain out freely).
        std::byte* header = p.data() - kHeader;
        std::memset(header, 0, kHeader);
        const Segment segment{p.buffer.iova + p.offset - kHeader, p.length + kHeader, false};
        const int head = tx_->add({&segment, 1}, nullptr);
        tx_buffers_[static_cast<std::uint16_t>(head)] = p.buffer;
        ++stats_.tx_packets;
        stats_.tx_bytes += p.length;
    }
    tx_->publish();
    return accepted;
}

unsigned NetQueue::reclaim() noexcept {
    return tx_->poll(&NetQueue::on_tx, this, 0);
}

unsigned NetQueue::wait(unsigned events, std::chrono::microseconds timeout) {
    const auto ready = [&]() -> unsigned {
        unsigned found = net::kReadyNone;
        if ((events & net::kReadyRx) != 0) {
            if (rx_posted_ < depth_) {
                refill();
            }
            if (rx_->has_used()) {
                found |= net::kReadyRx;
            }
        }
        if ((events & net::kReadyTx) != 0) {
            reclaim();
            if (tx_->free_descriptors() != 0 && tx_->in_flight() < depth_) {
                found |= net::kReadyTx;
            }
        }
        return found;
    };
    if (failure() != 0) {
        return ready();
    }
    const unsigned found = irq::wait_for_completions(
        mode_, interrupt_, timeout, ready,
        [&] {
            bool already = false;
            if ((events & net::kReadyRx) != 0) {
                already = rx_->enable_interrupts() || already;
            }
            if ((events & net::kReadyTx) != 0) {
                already = tx_->enable_interrupts() || already;
            }
            return already;
        },
        [&] {
            rx_->disable_interrupts();
            tx_->disable_interrupts();
        });
    // Nothing came: a device that stopped for good (NEEDS_RESET, gone) would otherwise show
    // only as silence until the caller's own timeout.
    if (found == net::kReadyNone) {
        owner_.check_health(last_health_check_);
    }
    return found;
}

net::QueueStats NetQueue::stats() const noexcept {
    net::QueueStats s = stats_;
    s.notifications = rx_->counters().notifications + tx_->counters().notifications;
    return s;
}

int NetQueue::failure() const noexcept {
    return rx_->broken() || tx_->broken() ? EIO : owner_.failure();
}

std::uint64_t NetQueue::garbage() const noexcept {
    std::uint64_t total = short_chains_;
    for (const SplitQueue* ring : {rx_.get(), tx_.get()}) {
        const VirtqueueCounters& c = ring->counters();
        total += c.bad_ids + c.stale_ids + c.bad_lengths + c.index_jumps;
    }
    return total;
}

// ---- NetDevice ---------------------------------------------------------------------------------

NetDevice::NetDevice(std::unique_ptr<Device> device, const NetOptions& options)
    : options_(options) {
    try {
        start(std::move(device));
    } catch (...) {
        stop();  // a half-started device is reset and let go, not left running
        throw;
    }
}

NetDevice::~NetDevice() {
    stop();
}

void NetDevice::stop() noexcept {
    if (session_) {
        session_->reset_device();  // before the rings' memory goes with the queues
    }
    queues_.clear();
    control_.reset();
    control_buffer_.reset();
    session_.reset();
}

NetConfig NetDevice::read_config() {
    NetConfig c;
    if (!session_->transport().device_config_present()) {
        return c;  // every field is optional (§5.1.4); none offered
    }
    session_->transport().read_device_config([&](mmio::RegisterIo& cfg) {
        if (session_->has(net_feature::mac)) {
            session_->need_config(reg::net::kMacOffset + 6, "VIRTIO_NET_F_MAC");
            for (std::size_t i = 0; i < 6; ++i) {
                c.mac.bytes[i] = cfg.read8(reg::net::kMacOffset + i);
            }
        }
        if (session_->has(net_feature::status)) {
            session_->need_config(reg::net::Status::offset + 2, "VIRTIO_NET_F_STATUS");
            c.status = cfg.read<reg::net::Status>().raw();
        }
        if (session_->has(net_feature::mq)) {
            session_->need_config(reg::net::MaxVirtqueuePairs::offset + 2, "VIRTIO_NET_F_MQ");
            c.max_queue_pairs = cfg.read<reg::net::MaxVirtqueuePairs>().raw();
        }
        if (session_->has(net_feature::mtu)) {
            session_->need_config(reg::net::Mtu::offset + 2, "VIRTIO_NET_F_MTU");
            c.mtu = cfg.read<reg::net::Mtu>().raw();
        }
        if (session_->has(net_feature::speed_duplex)) {
            session_->need_config(reg::net::Duplex::offset + 1, "VIRTIO_NET_F_SPEED_DUPLEX");
            const std::uint32_t speed = cfg.read<reg::net::Speed>().raw();
            c.speed_mbps = speed == 0xffffffffu ? 0 : speed;
            c.full_duplex = cfg.read<reg::net::Duplex>().raw() != 0;
        }
    });
    return c;
}

void NetDevice::start(std::unique_ptr<Device> device) {
    const NetOptions& options = options_;
    SessionOptions session;
    session.driver = "virtio-net";
    session.mode = options.mode;
    session.vectors = options.queues + 1;  // configuration, then one per queue pair
    session.arena = options.arena;
    session.transport = options.transport;
    session_ = std::make_unique<Session>(std::move(device), session);
    PciTransport& transport = session_->transport();

    Initializer::Features features;
    features.required = bit(feature::version_1);
    // No offload and no mergeable buffers: a frame is one descriptor, checksums are the
    // sender's ("checksum offload off unless asked"; nothing asks yet).
    features.optional = bit(feature::access_platform) | bit(feature::event_idx) |
                        bit(net_feature::mac) | bit(net_feature::status) | bit(net_feature::mtu) |
                        bit(net_feature::ctrl_vq) | bit(net_feature::mq) |
                        bit(net_feature::speed_duplex);
    features.device_bit_name = &net_feature_name;
    session_->start(features);
    // §5.1.3.1: MQ depends on CTRL_VQ; a device offering one without the other gets no MQ use.
    const bool mq = session_->has(net_feature::mq) && session_->has(net_feature::ctrl_vq);

    config_ = read_config();
    if (mq && (config_.max_queue_pairs == 0 || config_.max_queue_pairs > kNetMaxQueuePairs)) {
        session_->refuse(
            fmt::format("max_virtqueue_pairs is {}, outside 1..32768", config_.max_queue_pairs));
    }
    if (session_->has(net_feature::mtu) && config_.mtu < kMinMtu) {
        session_->refuse(fmt::format("the device's MTU is {}, below {}", config_.mtu, kMinMtu));
    }
    if (config_.mac.is_zero() || config_.mac.is_multicast()) {
        // §5.1.5: without a usable MAC from the device the driver picks one; a locally
        // administered unicast address from the PCI address, stable across runs.
        const pci::Address a = session_->device().address().value_or(pci::Address{});
        config_.mac.bytes = {0x02,
                             0x72,
                             0x33,
                             static_cast<std::uint8_t>(a.bus),
                             static_cast<std::uint8_t>(a.device << 3 | a.function),
                             static_cast<std::uint8_t>(a.domain)};
    }

    // §5.1.2: receiveqN = 2(N-1), transmitqN = 2(N-1)+1, the control queue after all pairs.
    const unsigned device_pairs = mq ? config_.max_queue_pairs : 1u;
    if (std::size_t{2} * device_pairs > transport.num_queues()) {
        session_->refuse(fmt::format("{} queue pair(s) announced, {} virtqueues present",
                                     device_pairs, transport.num_queues()));
    }
    const unsigned pairs = std::clamp(options.queues, 1u, device_pairs);
    std::vector<std::unique_ptr<SplitQueue>> rings;
    std::uint16_t smallest = kMaxQueueSize;
    for (unsigned i = 0; i < 2 * pairs; ++i) {
        const auto index = static_cast<std::uint16_t>(i);
        const std::uint16_t max = transport.max_queue_size(index);  // throws on 0
        const std::uint16_t size = round_down_pow2(
            std::min<std::uint32_t>(max, std::max<std::uint16_t>(options.max_queue_size, 2)));
        if (size < 2) {
            session_->refuse(fmt::format("virtqueue {} holds {} descriptor(s)", i, max));
        }
        smallest = std::min(smallest, size);
        rings.push_back(session_->create_queue(index, size, session_->vector_for(i / 2)));
    }
    if (session_->has(net_feature::ctrl_vq)) {
        const auto index = static_cast<std::uint16_t>(2 * device_pairs);
        const std::uint16_t size =
            round_down_pow2(std::min<std::uint32_t>(transport.max_queue_size(index), 16));
        control_ = session_->create_queue(index, size, kNoVector);  // polled: commands are rare
        control_buffer_ = session_->pool().allocate(64, 64);
    }

    // What a frame may be: the MTU (§5.1.4, 1500 unless the device says), limited by what one
    // receive buffer holds after the header.
    const std::uint32_t buffer_room = options.buffer_size - kHeader - kEthernetHeader;
    info_.mac = config_.mac;
    info_.mtu = std::min<std::uint32_t>(config_.mtu, buffer_room);
    info_.max_frame = info_.mtu + kEthernetHeader;
    info_.queue_pairs = pairs;
    info_.max_queue_depth = smallest;
    info_.buffer_size = options.buffer_size;
    info_.headroom = static_cast<std::uint16_t>(kHeader);
    info_.offloads = 0;

    for (unsigned i = 0; i < pairs; ++i) {
        queues_.push_back(std::make_unique<NetQueue>(*this, i, std::move(rings[2 * i]),
                                                     std::move(rings[2 * i + 1]),
                                                     session_->interrupt_for(i)));
    }
    session_->driver_ok();
    if (mq) {
        // §5.1.6.5.5: until told, the device uses the first pair only (said even for one pair:
        // the device then knows the driver's choice, and the control queue is proven at start).
        const auto count = static_cast<std::uint16_t>(pairs);
        control(net_ctrl::class_mq, net_ctrl::mq_vq_pairs_set, &count, sizeof(count),
                "set the number of queue pairs (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET)");
    }
    log_info("{}: virtio-net {}, MTU {}, {} of {} queue pair(s) of {} descriptors, link {}", name(),
             info_.mac.to_string(), info_.mtu, pairs, device_pairs, smallest,
             (config_.status & kNetStatusLinkUp) != 0 ? "up" : "down");
}

void NetDevice::control(std::uint8_t command_class, std::uint8_t command, const void* data,
                        std::uint32_t length, const char* what) {
    if (!control_ || length > kControlAck - sizeof(NetControlHeader)) {
        throw Error::invalid(what, name(), "the device has no control queue (VIRTIO_NET_F_CTRL_VQ)",
                             ENOTSUP);
    }
    std::byte* buffer = control_buffer_.data();
    const NetControlHeader header{command_class, command};
    std::memcpy(buffer, &header, sizeof(header));
    std::memcpy(buffer + sizeof(header), data, length);
    buffer[kControlAck] = std::byte{kAckUnset};
    const Segment chain[] = {
        {control_buffer_.iova(), static_cast<std::uint32_t>(sizeof(header) + length), false},
        {control_buffer_.iova() + kControlAck, 1, true},
    };
    if (control_->add(chain, nullptr) < 0) {
        throw Error::invalid(what, name(), "the control queue is full", EBUSY);
    }
    control_->publish();
    ++control_commands_;
    bool done = false;
    const auto deadline = std::chrono::steady_clock::now() + options_.control_timeout;
    while (!done) {
        control_->poll([](void* flag, void*, std::uint16_t,
                          std::uint32_t) noexcept { *static_cast<bool*>(flag) = true; },
                       &done);
        if (done || control_->broken()) {
            break;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            throw Error::invalid(what, name(),
                                 fmt::format("no answer on the control queue within {} ms",
                                             options_.control_timeout.count()),
                                 ETIMEDOUT);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    const auto ack = std::to_integer<std::uint8_t>(
        static_cast<volatile std::byte&>(control_buffer_.data()[kControlAck]));
    if (!done || ack != net_ctrl::ok) {
        throw Error::invalid(what, name(),
                             done ? fmt::format("the device answered {} (VIRTIO_NET_ERR)", ack)
                                  : std::string("the control queue broke"),
                             EIO);
    }
}

std::string NetDevice::name() const {
    return session_->name();
}

net::LinkStatus NetDevice::link() const {
    net::LinkStatus link;
    const NetConfig now = const_cast<NetDevice*>(this)->read_config();
    link.up = (now.status & kNetStatusLinkUp) != 0;
    link.speed_mbps = now.speed_mbps;
    link.full_duplex = now.full_duplex;
    return link;
}

net::Queue& NetDevice::open_queue(unsigned index, unsigned depth, irq::WaitMode mode,
                                  dma::BufferPool* pool) {
    if (index >= queues_.size()) {
        throw Error::invalid(
            fmt::format("open queue {}", index), name(),
            fmt::format("the device has {} queue pair(s) in use{}", queues_.size(),
                        session_->has(net_feature::mq)
                            ? fmt::format(" (it offers {})", config_.max_queue_pairs)
                            : " (no VIRTIO_NET_F_MQ: QEMU offers more pairs only with mq=on "
                              "and a multi-queue backend)"));
    }
    NetQueue& queue = *queues_[index];
    if (queue.opened()) {
        return queue;
    }
    const unsigned ring = std::min(queue.rx_ring().size(), queue.tx_ring().size());
    if (depth > ring) {
        throw Error::invalid(fmt::format("open queue {} with depth {}", index, depth), name(),
                             fmt::format("the virtqueues hold {} descriptors", ring));
    }
    if (mode != irq::WaitMode::poll && !session_->has_vectors()) {
        throw Error::invalid(fmt::format("open queue {} in {} mode", index, to_string(mode)),
                             name(), "the device was opened in poll mode (no vectors)");
    }
    if (pool != nullptr && pool->buffer_size() < kHeader + info_.max_frame) {
        throw Error::invalid(fmt::format("open queue {}", index), name(),
                             fmt::format("the pool's {}-byte buffers cannot hold the header and "
                                         "a {}-byte frame",
                                         pool->buffer_size(), info_.max_frame));
    }
    queue.open(depth == 0 ? ring : depth, mode, pool);
    return queue;
}

std::unique_ptr<net::NetPort> open_net(std::unique_ptr<Device> device,
                                       const net::OpenNetOptions& options) {
    NetOptions net;
    net.queues = options.queues;
    net.mode = options.mode;
    net.transport.pause = [] { std::this_thread::sleep_for(std::chrono::microseconds(100)); };
    return std::make_unique<NetDevice>(std::move(device), net);
}

}  // namespace ring3::virtio
