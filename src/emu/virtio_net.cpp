// emu::VirtioNetDevice: the network device (VIRTIO 1.2 §5.1) with its backends, on the virtio
// PCI transport of emu::VirtioFunction (virtio_function.cpp).
#include "ring3/emu/virtio_net.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/pci/config_space.hpp"
#include "ring3/virtio/registers.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::emu {
namespace {

namespace reg = virtio::reg;
using virtio::bit;

// PCI Code and ID Assignment §1.3: 02h network controller, 00h Ethernet.
constexpr std::uint32_t kEthernetClass = 0x020000;
constexpr std::uint32_t kHeader = sizeof(virtio::NetHeader);  // §5.1.6: 12 bytes with VERSION_1
constexpr std::uint32_t kEthernetHeader = 14;
constexpr std::uint32_t kVlanTag = 4;
constexpr std::size_t kMaxDatagram = 65536;
constexpr std::size_t kControlMax = 64;  // a control command's device-readable bytes (§5.1.6.5)

}  // namespace

std::array<std::uint8_t, 6> parse_mac(const std::string& text) {
    std::array<std::uint8_t, 6> mac{};
    unsigned parts[6] = {};
    char tail = 0;
    if (text.size() != 17 ||
        std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &parts[0], &parts[1], &parts[2],
                    &parts[3], &parts[4], &parts[5], &tail) != 6) {
        throw Error::invalid("parse MAC address", fmt::format("'{}'", text),
                             "expected six hex pairs, e.g. 02:00:00:00:00:01");
    }
    for (std::size_t i = 0; i < 6; ++i) {
        mac[i] = static_cast<std::uint8_t>(parts[i]);
    }
    if ((mac[0] & 1u) != 0) {
        throw Error::invalid("use MAC address", text, "a multicast address cannot be a NIC's");
    }
    return mac;
}

VirtioNetOptions VirtioNetDevice::checked(VirtioNetOptions o, const std::string& name) {
    // §5.1.4: max_virtqueue_pairs 1..0x8000; the notify page gives each queue 4 bytes.
    const unsigned max_pairs = (VirtioFunction::kMaxQueues - 1) / 2;
    if (o.queue_pairs < 1 || o.queue_pairs > max_pairs || o.queue_size < 2 ||
        o.queue_size > virtio::kMaxQueueSize || (o.queue_size & (o.queue_size - 1)) != 0 ||
        o.mtu < 68 || o.mtu > 65535 - kEthernetHeader - kVlanTag) {
        throw Error::invalid("create virtio-net device", name,
                             fmt::format("queue pairs 1..{}, queue size a power of two 2..32768, "
                                         "MTU 68..65517",
                                         max_pairs));
    }
    if (o.loopback && !o.peer_path.empty()) {
        throw Error::invalid("create virtio-net device", name,
                             "loopback and a peer exclude each other");
    }
    return o;
}

std::uint16_t VirtioNetDevice::num_queues(const VirtioNetOptions& options) noexcept {
    // §5.1.2: receiveqN = 2(N-1), transmitqN = 2(N-1)+1, the control queue (with MQ) last.
    return static_cast<std::uint16_t>(2 * options.queue_pairs + (options.queue_pairs > 1));
}

VirtioFunction::Options VirtioNetDevice::transport_options(const VirtioNetOptions& options) {
    VirtioFunction::Options t;
    // §4.1.2: device 0x1040 + 1 (network card).
    t.device_id = virtio::kNetModernDeviceId;
    t.class_code = kEthernetClass;
    t.num_queues = num_queues(options);
    t.queue_size = options.queue_size;
    // §4.1.5.1.2: vector 0 for configuration changes, one per queue pair after it.
    t.msix_vectors = options.queue_pairs + 1;
    t.config_length = kDeviceLength;
    t.max_chain_bytes = 1u << 20;  // far above any frame: a longer chain is garbage
    t.faults = options.faults;
    return t;
}

VirtioNetDevice::VirtioNetDevice(PciFunction& function, VirtioNetOptions options)
    : function_(function),
      options_(checked(std::move(options), function.name())),
      transport_(function, *this, transport_options(options_)) {
    frame_.resize(kHeader + kMaxDatagram);
    pending_rx_.resize(kMaxDatagram);
    open_backend();
    counters_.tx_frames_by_pair.resize(options_.queue_pairs);
    transport_.start();
}

VirtioNetDevice::~VirtioNetDevice() {
    transport_.stop();
    auto lock = function_.lock();
    if (capture_ != nullptr) {
        std::fclose(capture_);
    }
    if (socket_ && !options_.dgram_path.empty()) {
        ::unlink(options_.dgram_path.c_str());
    }
}

VirtioNetCounters VirtioNetDevice::counters() const {
    const VirtioCounters transport = transport_.counters();
    auto lock = function_.lock();
    VirtioNetCounters c = counters_;
    c.interrupts = transport.interrupts;
    c.needs_reset = transport.needs_reset;
    c.resets = transport.resets;
    return c;
}

std::uint64_t VirtioNetDevice::offered_features() const noexcept {
    namespace net = virtio::net_feature;
    std::uint64_t f = bit(virtio::feature::version_1) | bit(virtio::feature::access_platform) |
                      bit(virtio::feature::event_idx) | bit(net::mac) | bit(net::status) |
                      bit(net::mtu);
    if (options_.queue_pairs > 1) {
        f |= bit(net::ctrl_vq) | bit(net::mq);  // §5.1.3.1: MQ needs the control queue
    }
    return f;
}

const char* VirtioNetDevice::refuse_features(std::uint64_t driver_features) const noexcept {
    // §5.1.3.1: MQ only with the control queue.
    const bool mq = (driver_features & bit(virtio::net_feature::mq)) != 0;
    const bool ctrl = (driver_features & bit(virtio::net_feature::ctrl_vq)) != 0;
    return mq && !ctrl ? "VIRTIO_NET_F_MQ without VIRTIO_NET_F_CTRL_VQ" : nullptr;
}

void VirtioNetDevice::read_config(std::span<std::byte> out) const noexcept {
    // §5.1.4: struct virtio_net_config up to mtu.
    std::byte config[kDeviceLength] = {};
    std::memcpy(config + reg::net::kMacOffset, options_.mac.data(), 6);
    const std::uint16_t link = virtio::kNetStatusLinkUp;
    const auto pairs = static_cast<std::uint16_t>(options_.queue_pairs);
    std::memcpy(config + reg::net::Status::offset, &link, 2);
    std::memcpy(config + reg::net::MaxVirtqueuePairs::offset, &pairs, 2);
    std::memcpy(config + reg::net::Mtu::offset, &options_.mtu, 2);
    for (std::size_t i = 0; i < out.size() && i < sizeof config; ++i) {
        out[i] = config[i];
    }
}

void VirtioNetDevice::reset() noexcept {
    active_pairs_ = 1;
}

// --- The device's pass (under the lock, while the device is live) ----------------------------

bool VirtioNetDevice::process(VirtioFunction& transport) {
    bool worked = false;
    if (options_.queue_pairs > 1) {
        worked = process_control() || worked;
    }
    for (unsigned pair = 0; pair < options_.queue_pairs && transport.live(); ++pair) {
        worked = process_tx(pair) || worked;
    }
    if (transport.live()) {
        worked = process_rx_from_peer() || worked;
    }
    return worked;
}

bool VirtioNetDevice::process_tx(unsigned pair) {
    const unsigned index = 2 * pair + 1;
    Rings r;
    if (!transport_.rings(index, r)) {
        return false;
    }
    bool worked = false;
    Chain& chain = chain_;
    for (unsigned budget = 64; budget != 0 && transport_.next_chain(index, r, chain); --budget) {
        // §5.1.6.2: a transmit chain is the header and the frame, all device-readable.
        if (chain.writable != 0 || chain.readable < kHeader) {
            transport_.needs_reset(
                fmt::format("transmitq{}: chain from {} has {} writable and {} readable "
                            "bytes (the header alone is {})",
                            pair + 1, chain.head, chain.writable, chain.readable, kHeader));
            return worked;
        }
        const std::uint64_t longest =
            std::uint64_t{kHeader} + options_.mtu + kEthernetHeader + kVlanTag;
        std::size_t at = 0;
        if (chain.readable <= longest) {
            for (const Run& run : chain.runs) {
                std::memcpy(frame_.data() + at, run.data, run.length);
                at += run.length;
            }
        }
        const std::span<const std::byte> frame(frame_.data() + kHeader,
                                               at < kHeader ? 0 : at - kHeader);
        const bool sendable = frame.size() >= kEthernetHeader;  // and not too long (not copied)
        if (sendable && socket_) {
            const Sent sent = send_to_peer(frame);
            if (sent == Sent::busy) {
                break;  // the peer is full: the frame stays in the ring, tried again next pass
            }
            if (sent == Sent::dropped) {
                ++counters_.tx_dropped;
            }
        } else if (sendable && options_.loopback) {
            if (!deliver(pair, frame)) {
                ++counters_.rx_dropped;  // no receive buffer posted
            }
        } else {
            ++counters_.tx_dropped;
        }
        if (sendable) {
            ++counters_.tx_frames;
            ++counters_.tx_frames_by_pair[pair];
            counters_.tx_bytes += frame.size();
            capture(frame);
        }
        ++transport_.queue(index).last_avail;
        worked = true;
        // §5.1.6.2.1: nothing written into a transmit buffer.
        transport_.complete(index, r, chain.head, 0);
        if (!transport_.live()) {
            break;  // a bad descriptor on the way, or a fault
        }
    }
    return worked;
}

bool VirtioNetDevice::deliver(unsigned pair, std::span<const std::byte> frame) {
    const unsigned index = 2 * pair;
    Rings r;
    Chain& chain = rx_chain_;
    if (!transport_.rings(index, r) || !transport_.next_chain(index, r, chain)) {
        return false;
    }
    // §5.1.6.3: receive buffers are device-writable only.
    if (chain.readable != 0) {
        transport_.needs_reset(fmt::format("receiveq{}: chain from {} has {} device-readable bytes",
                                           pair + 1, chain.head, chain.readable));
        return false;
    }
    const std::uint64_t needed = kHeader + frame.size();
    if (chain.writable < needed) {
        // §5.1.6.3.1: without MRG_RXBUF the driver posts buffers that hold any frame; this one
        // does not. The frame is dropped and the buffer kept for the next.
        ++counters_.rx_dropped;
        return true;
    }
    // §5.1.6.4: no offload negotiated, so the header is all zeros but num_buffers, which is 1.
    virtio::NetHeader header{};
    header.num_buffers = 1;
    std::size_t from = 0;
    const auto* header_bytes = reinterpret_cast<const std::byte*>(&header);
    for (const Run& run : chain.runs) {
        std::size_t put = 0;
        while (put < run.length && from < needed) {
            const std::size_t n = from < kHeader
                                      ? std::min<std::size_t>(kHeader - from, run.length - put)
                                      : std::min<std::size_t>(needed - from, run.length - put);
            const std::byte* source =
                from < kHeader ? header_bytes + from : frame.data() + (from - kHeader);
            std::memcpy(run.data + put, source, n);
            put += n;
            from += n;
        }
    }
    ++transport_.queue(index).last_avail;
    ++counters_.rx_frames;
    counters_.rx_bytes += frame.size();
    transport_.complete(index, r, chain.head, static_cast<std::uint32_t>(needed));
    return true;
}

bool VirtioNetDevice::process_rx_from_peer() {
    if (!socket_) {
        return false;
    }
    bool worked = false;
    for (unsigned budget = 64; budget != 0; --budget) {
        if (!has_pending_rx_) {
            const ssize_t n = ::recv(socket_.get(), pending_rx_.data(), pending_rx_.size(),
                                     MSG_DONTWAIT | MSG_TRUNC);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    log_warn("{}: receive from {}: {}", function_.name(), options_.dgram_path,
                             std::strerror(errno));
                }
                break;
            }
            const auto length = static_cast<std::size_t>(n);
            if (length < kEthernetHeader || length > pending_rx_.size() ||
                length > std::size_t{options_.mtu} + kEthernetHeader + kVlanTag) {
                ++counters_.rx_dropped;  // not a frame this link carries
                worked = true;
                continue;
            }
            pending_rx_length_ = length;
            pending_rx_pair_ = steer({pending_rx_.data(), length});
            has_pending_rx_ = true;
        }
        if (!deliver(pending_rx_pair_, {pending_rx_.data(), pending_rx_length_})) {
            break;  // no buffer posted: the frame waits here, and the peer's next ones there
        }
        has_pending_rx_ = false;
        worked = true;
        if (!transport_.live()) {
            break;
        }
    }
    return worked;
}

unsigned VirtioNetDevice::steer(std::span<const std::byte> frame) const noexcept {
    // A flow stays on one queue pair so that its frames stay in order: IPv4 UDP/TCP by ports,
    // everything else on the first pair (the device's choice: no RSS is offered, §5.1.6.5.6).
    if (active_pairs_ <= 1 || frame.size() < 38 || frame[12] != std::byte{0x08} ||
        frame[13] != std::byte{0x00}) {
        return 0;
    }
    const std::size_t ip_header = 4 * (std::to_integer<unsigned>(frame[14]) & 0xfu);
    const auto protocol = std::to_integer<unsigned>(frame[23]);
    if ((protocol != 6 && protocol != 17) || 14 + ip_header + 4 > frame.size()) {
        return 0;
    }
    const std::byte* ports = frame.data() + 14 + ip_header;
    unsigned hash = 0;
    for (int i = 0; i < 4; ++i) {
        hash = hash * 31 + std::to_integer<unsigned>(ports[i]);
    }
    return hash % active_pairs_;
}

bool VirtioNetDevice::process_control() {
    const unsigned index = 2 * options_.queue_pairs;
    Rings r;
    Chain& chain = chain_;
    bool worked = false;
    while (transport_.rings(index, r) && transport_.next_chain(index, r, chain)) {
        // §5.1.6.5: class and command, the command's data (device-readable), one ack byte.
        if (chain.readable < sizeof(virtio::NetControlHeader) || chain.writable < 1) {
            transport_.needs_reset(
                fmt::format("control queue: chain from {} has {} readable and {} "
                            "writable bytes",
                            chain.head, chain.readable, chain.writable));
            return worked;
        }
        std::byte command[kControlMax] = {};
        std::size_t at = 0;
        for (const Run& run : chain.runs) {
            if (!run.writable) {
                const std::size_t n = std::min<std::size_t>(run.length, kControlMax - at);
                std::memcpy(command + at, run.data, n);
                at += n;
            }
        }
        std::uint8_t ack = virtio::net_ctrl::err;
        const auto klass = std::to_integer<std::uint8_t>(command[0]);
        const auto code = std::to_integer<std::uint8_t>(command[1]);
        if (klass == virtio::net_ctrl::class_mq && code == virtio::net_ctrl::mq_vq_pairs_set &&
            chain.readable == 4) {
            // §5.1.6.5.5: 1..max_virtqueue_pairs; from now on only these pairs receive.
            std::uint16_t pairs = 0;
            std::memcpy(&pairs, command + 2, 2);
            if (pairs >= 1 && pairs <= options_.queue_pairs) {
                active_pairs_ = pairs;
                ack = virtio::net_ctrl::ok;
            }
        }
        for (const Run& run : chain.runs) {
            if (run.writable) {
                std::memcpy(run.data, &ack, 1);
                break;
            }
        }
        ++transport_.queue(index).last_avail;
        transport_.post_used(index, r, chain.head, 1);
        worked = true;
    }
    return worked;
}

// --- Backends ---------------------------------------------------------------------------------

void VirtioNetDevice::open_backend() {
    const VirtioNetOptions& o = options_;
    if (!o.peer_path.empty()) {
        sockaddr_un address{};
        for (const std::string* path : {&o.peer_path, &o.dgram_path}) {
            if (path->empty() || path->size() >= sizeof address.sun_path) {
                throw Error::invalid("open virtio-net peer socket", *path,
                                     fmt::format("a socket path of 1..{} characters is needed",
                                                 sizeof address.sun_path - 1));
            }
        }
        socket_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!socket_) {
            throw Error::from_errno("create datagram socket for", o.dgram_path);
        }
        struct stat st {};
        if (::lstat(o.dgram_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
            ::unlink(o.dgram_path.c_str());  // a stale socket of an earlier run
        }
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path, o.dgram_path.c_str(), o.dgram_path.size());
        if (::bind(socket_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) !=
            0) {
            const Error error = Error::from_errno("bind datagram socket", o.dgram_path);
            socket_.reset();
            throw error;
        }
    }
    if (!o.capture_path.empty()) {
        capture_ = std::fopen(o.capture_path.c_str(), "wb");
        if (capture_ == nullptr) {
            throw Error::from_errno("create capture file", o.capture_path);
        }
        // The classic pcap header (microsecond timestamps, host order), link type 1: Ethernet.
        struct {
            std::uint32_t magic = 0xa1b2c3d4;
            std::uint16_t major = 2;
            std::uint16_t minor = 4;
            std::int32_t zone = 0;
            std::uint32_t sigfigs = 0;
            std::uint32_t snaplen = 65535;
            std::uint32_t linktype = 1;
        } header;
        static_assert(sizeof header == 24);
        if (std::fwrite(&header, sizeof header, 1, capture_) != 1) {
            throw Error::from_errno("write capture file", o.capture_path);
        }
    }
}

VirtioNetDevice::Sent VirtioNetDevice::send_to_peer(std::span<const std::byte> frame) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, options_.peer_path.c_str(), options_.peer_path.size());
    const ssize_t n =
        ::sendto(socket_.get(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&address), sizeof address);
    if (n >= 0) {
        return Sent::ok;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR) {
        return Sent::busy;
    }
    // No one bound at the peer's path (ENOENT, ECONNREFUSED) or worse: the frame is lost, as on
    // a cable with nothing at its other end.
    if (counters_.tx_dropped == 0) {
        log_warn("{}: send to {}: {}; frames are dropped while it lasts", function_.name(),
                 options_.peer_path, std::strerror(errno));
    }
    return Sent::dropped;
}

void VirtioNetDevice::capture(std::span<const std::byte> frame) {
    if (capture_ == nullptr) {
        return;
    }
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    const std::uint32_t record[4] = {
        static_cast<std::uint32_t>(now.tv_sec), static_cast<std::uint32_t>(now.tv_nsec / 1000),
        static_cast<std::uint32_t>(frame.size()), static_cast<std::uint32_t>(frame.size())};
    if (std::fwrite(record, sizeof record, 1, capture_) != 1 ||
        std::fwrite(frame.data(), 1, frame.size(), capture_) != frame.size()) {
        log_warn("{}: writing the capture {} failed; capture stopped", function_.name(),
                 options_.capture_path);
        std::fclose(capture_);
        capture_ = nullptr;
    }
}

}  // namespace ring3::emu
