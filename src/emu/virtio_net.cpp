// emu::VirtioNetDevice: the virtio PCI transport registers (VIRTIO 1.2 §4.1.4), device status
// and feature negotiation (§2.1, §2.2, §3.1), split virtqueues served by a polling thread
// (§2.7), and the network device (§5.1) with its backends.
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
namespace status = virtio::status;
using virtio::bit;
using Clock = std::chrono::steady_clock;

// PCI Code and ID Assignment §1.3: 02h network controller, 00h Ethernet.
constexpr std::uint32_t kEthernetClass = 0x020000;
constexpr std::uint32_t kHeader = sizeof(virtio::NetHeader);  // §5.1.6: 12 bytes with VERSION_1
constexpr std::uint32_t kEthernetHeader = 14;
constexpr std::uint32_t kVlanTag = 4;
constexpr std::uint64_t kMaxChainBytes = 1u
                                         << 20;  // far above any frame: a longer chain is garbage
constexpr std::size_t kMaxDatagram = 65536;
constexpr std::size_t kControlMax = 64;  // a control command's device-readable bytes (§5.1.6.5)

bool aligned(std::uint64_t value, std::uint64_t to) {
    return (value & (to - 1)) == 0;
}

std::uint16_t load16(const std::byte* at) {
    return __atomic_load_n(reinterpret_cast<const std::uint16_t*>(at), __ATOMIC_ACQUIRE);
}

// One virtio structure capability (§4.1.4: struct virtio_pci_cap, and the notify variant's
// multiplier, §4.1.4.4), without its first two bytes (id and next), which the list owns.
std::vector<std::uint8_t> virtio_cap(std::uint8_t type, std::uint32_t offset, std::uint32_t length,
                                     std::uint32_t multiplier = 0) {
    const bool notify = type == virtio::pci_cap_type::notify_cfg;
    std::vector<std::uint8_t> body(notify ? 18 : 14, 0);
    body[0] = static_cast<std::uint8_t>(body.size() + 2);  // cap_len
    body[1] = type;                                        // cfg_type
    body[2] = 0;                                           // bar
    body[3] = 0;                                           // id
    std::memcpy(body.data() + 6, &offset, 4);
    std::memcpy(body.data() + 10, &length, 4);
    if (notify) {
        std::memcpy(body.data() + 14, &multiplier, 4);
    }
    return body;
}

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

VirtioNetDevice::VirtioNetDevice(PciFunction& function, VirtioNetOptions options)
    : function_(function), options_(std::move(options)) {
    const VirtioNetOptions& o = options_;
    // §5.1.4: max_virtqueue_pairs 1..0x8000; the notify page gives each queue 4 bytes.
    const unsigned max_pairs = (kNotifyLength / kNotifyMultiplier - 1) / 2;
    if (o.queue_pairs < 1 || o.queue_pairs > max_pairs || o.queue_size < 2 ||
        o.queue_size > virtio::kMaxQueueSize || (o.queue_size & (o.queue_size - 1)) != 0 ||
        o.mtu < 68 || o.mtu > 65535 - kEthernetHeader - kVlanTag) {
        throw Error::invalid("create virtio-net device", function_.name(),
                             fmt::format("queue pairs 1..{}, queue size a power of two 2..32768, "
                                         "MTU 68..65517",
                                         max_pairs));
    }
    if (o.loopback && !o.peer_path.empty()) {
        throw Error::invalid("create virtio-net device", function_.name(),
                             "loopback and a peer exclude each other");
    }
    frame_.resize(kHeader + kMaxDatagram);
    pending_rx_.resize(kMaxDatagram);
    open_backend();

    // §4.1.2: vendor 0x1af4, device 0x1040 + 1 (network card); a non-transitional device has
    // revision 1 (§4.1.2.1).
    ConfigSpace& config = function_.config();
    config.set_identity(virtio::kVendorId, virtio::kNetModernDeviceId, kEthernetClass, 1);
    config.add_bar(0, kBarSize, true);
    // §4.1.4: one capability per structure, all in BAR0.
    using virtio::pci_cap_type::common_cfg;
    using virtio::pci_cap_type::device_cfg;
    using virtio::pci_cap_type::isr_cfg;
    using virtio::pci_cap_type::notify_cfg;
    config.add_capability(pci::cap::vendor_specific,
                          virtio_cap(common_cfg, kCommonOffset, kCommonLength));
    config.add_capability(pci::cap::vendor_specific,
                          virtio_cap(notify_cfg, kNotifyOffset, kNotifyLength, kNotifyMultiplier));
    config.add_capability(pci::cap::vendor_specific, virtio_cap(isr_cfg, kIsrOffset, 4));
    config.add_capability(pci::cap::vendor_specific,
                          virtio_cap(device_cfg, kDeviceOffset, kDeviceLength));
    // §4.1.5.1.2: vector 0 for configuration changes, one per queue pair after it.
    config.add_msix(o.queue_pairs + 1, 0, kMsixTable, kMsixPba);
    function_.set_bar_handlers(
        0, [this](std::uint64_t offset, unsigned width) { return bar_read(offset, width); },
        [this](std::uint64_t offset, unsigned width, std::uint64_t value) {
            bar_write(offset, width, value);
        });
    notify_ = function_.add_memory_area(0, kNotifyOffset, kNotifyLength, true);
    queues_.resize(num_queues());
    counters_.tx_frames_by_pair.resize(o.queue_pairs);
    device_reset();
    counters_.resets = 0;
    function_.set_model(this);
    poller_ = std::thread([this] { poll_loop(); });
}

VirtioNetDevice::~VirtioNetDevice() {
    stop_.store(true);
    poller_.join();
    auto lock = function_.lock();
    function_.set_model(nullptr);
    function_.set_bar_handlers(0, {}, {});
    if (capture_ != nullptr) {
        std::fclose(capture_);
    }
    if (socket_ && !options_.dgram_path.empty()) {
        ::unlink(options_.dgram_path.c_str());
    }
}

VirtioNetCounters VirtioNetDevice::counters() const {
    auto lock = function_.lock();
    return counters_;
}

std::uint16_t VirtioNetDevice::num_queues() const noexcept {
    // §5.1.2: receiveqN = 2(N-1), transmitqN = 2(N-1)+1, the control queue (with MQ) last.
    return static_cast<std::uint16_t>(2 * options_.queue_pairs + (options_.queue_pairs > 1));
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

// --- Registers (§4.1.4) -----------------------------------------------------------------------

void VirtioNetDevice::common_snapshot(std::byte (&out)[kCommonLength]) const noexcept {
    std::memset(out, 0, sizeof out);
    const auto put = [&out](std::size_t at, auto value) {
        std::memcpy(out + at, &value, sizeof value);
    };
    const std::uint64_t offered = offered_features();
    put(reg::DeviceFeatureSelect::offset, device_feature_select_);
    put(reg::DeviceFeature::offset,
        device_feature_select_ < 2
            ? static_cast<std::uint32_t>(offered >> (32 * device_feature_select_))
            : std::uint32_t{0});
    put(reg::DriverFeatureSelect::offset, driver_feature_select_);
    put(reg::DriverFeature::offset,
        driver_feature_select_ < 2
            ? static_cast<std::uint32_t>(driver_features_ >> (32 * driver_feature_select_))
            : std::uint32_t{0});
    put(reg::ConfigMsixVector::offset, config_vector_);
    put(reg::NumQueues::offset, num_queues());
    put(reg::DeviceStatus::offset, status_);
    put(reg::ConfigGeneration::offset, std::uint8_t{0});  // the configuration never changes
    put(reg::QueueSelect::offset, queue_select_);
    if (queue_select_ < queues_.size()) {
        const Queue& q = queues_[queue_select_];
        put(reg::QueueSize::offset, q.size);
        put(reg::QueueMsixVector::offset, q.vector);
        put(reg::QueueEnable::offset, static_cast<std::uint16_t>(q.enabled));
        put(reg::QueueNotifyOff::offset, queue_select_);  // notify at index x multiplier
        put(reg::QueueDescLow::offset, q.desc);
        put(reg::QueueDriverLow::offset, q.driver);
        put(reg::QueueDeviceLow::offset, q.device);
    }
    // §4.1.4.3: queue_size reads 0 for a queue that does not exist; the rest stays 0 too.
}

std::uint64_t VirtioNetDevice::bar_read(std::uint64_t offset, unsigned width) {
    std::uint64_t value = 0;
    if (offset >= kCommonOffset && offset + width <= kCommonOffset + kCommonLength) {
        std::byte common[kCommonLength];
        common_snapshot(common);
        std::memcpy(&value, common + (offset - kCommonOffset), width);
    } else if (offset >= kIsrOffset && offset + width <= kIsrOffset + 4) {
        // §4.1.4.5: reading the ISR status clears it.
        if (offset == kIsrOffset) {
            value = isr_;
            isr_ = 0;
        }
    } else if (offset >= kDeviceOffset && offset + width <= kDeviceOffset + kDeviceLength) {
        // §5.1.4: struct virtio_net_config up to mtu.
        std::byte config[kDeviceLength] = {};
        std::memcpy(config + reg::net::kMacOffset, options_.mac.data(), 6);
        const std::uint16_t link = virtio::kNetStatusLinkUp;
        const auto pairs = static_cast<std::uint16_t>(options_.queue_pairs);
        std::memcpy(config + reg::net::Status::offset, &link, 2);
        std::memcpy(config + reg::net::MaxVirtqueuePairs::offset, &pairs, 2);
        std::memcpy(config + reg::net::Mtu::offset, &options_.mtu, 2);
        std::memcpy(&value, config + (offset - kDeviceOffset), width);
    }
    return value;  // unused parts of the BAR read 0
}

void VirtioNetDevice::bar_write(std::uint64_t offset, unsigned width, std::uint64_t value) {
    if (offset >= kCommonOffset && offset + width <= kCommonOffset + kCommonLength) {
        common_write(offset - kCommonOffset, width, value);
    }
    // The ISR and the device configuration are read-only (§4.1.4.5, §5.1.4); writes are ignored.
}

void VirtioNetDevice::common_write(std::uint64_t offset, unsigned width, std::uint64_t value) {
    // Overlay the written bytes on the current values, then apply every field they touch: any
    // access width works, as the transport allows only natural widths anyway (§4.1.3.1).
    std::byte common[kCommonLength];
    common_snapshot(common);
    std::memcpy(common + offset, &value, width);
    const auto touched = [&](std::size_t at, std::size_t size) {
        return offset < at + size && at < offset + width;
    };
    const auto get16 = [&common](std::size_t at) {
        std::uint16_t v = 0;
        std::memcpy(&v, common + at, 2);
        return v;
    };
    const auto get32 = [&common](std::size_t at) {
        std::uint32_t v = 0;
        std::memcpy(&v, common + at, 4);
        return v;
    };
    const auto get64 = [&common](std::size_t at) {
        std::uint64_t v = 0;
        std::memcpy(&v, common + at, 8);
        return v;
    };
    const unsigned vectors = function_.config().msix_vectors();
    // §4.1.5.1.2: a vector the device cannot use reads back NO_VECTOR.
    const auto vector = [vectors](std::uint16_t v) { return v < vectors ? v : virtio::kNoVector; };
    if (touched(reg::DeviceFeatureSelect::offset, 4)) {
        device_feature_select_ = get32(reg::DeviceFeatureSelect::offset);
    }
    if (touched(reg::DriverFeatureSelect::offset, 4)) {
        driver_feature_select_ = get32(reg::DriverFeatureSelect::offset);
    }
    if (touched(reg::DriverFeature::offset, 4) && driver_feature_select_ < 2 &&
        (status_ & status::features_ok) == 0) {
        // §3.1.1: features are settled before FEATURES_OK; later writes are ignored.
        const unsigned shift = 32 * driver_feature_select_;
        driver_features_ = (driver_features_ & ~(std::uint64_t{0xffffffff} << shift)) |
                           std::uint64_t{get32(reg::DriverFeature::offset)} << shift;
    }
    if (touched(reg::ConfigMsixVector::offset, 2)) {
        config_vector_ = vector(get16(reg::ConfigMsixVector::offset));
    }
    if (touched(reg::QueueSelect::offset, 2)) {
        queue_select_ = get16(reg::QueueSelect::offset);
    }
    if (queue_select_ < queues_.size()) {
        Queue& q = queues_[queue_select_];
        // §4.1.4.3.2: a queue's setup is written before it is enabled; later writes are ignored.
        if (!q.enabled) {
            if (touched(reg::QueueSize::offset, 2)) {
                q.size = get16(reg::QueueSize::offset);
            }
            if (touched(reg::QueueDescLow::offset, 8)) {
                q.desc = get64(reg::QueueDescLow::offset);
            }
            if (touched(reg::QueueDriverLow::offset, 8)) {
                q.driver = get64(reg::QueueDriverLow::offset);
            }
            if (touched(reg::QueueDeviceLow::offset, 8)) {
                q.device = get64(reg::QueueDeviceLow::offset);
            }
        }
        if (touched(reg::QueueMsixVector::offset, 2)) {
            q.vector = vector(get16(reg::QueueMsixVector::offset));
        }
        if (touched(reg::QueueEnable::offset, 2) && get16(reg::QueueEnable::offset) == 1 &&
            !q.enabled) {
            // §2.7: a power-of-two size up to the maximum; §2.7 "Virtqueue Part Alignment":
            // descriptor table 16, available ring 2, used ring 4 bytes.
            if (q.size == 0 || q.size > options_.queue_size || (q.size & (q.size - 1)) != 0 ||
                !aligned(q.desc, 16) || !aligned(q.driver, 2) || !aligned(q.device, 4)) {
                needs_reset(
                    fmt::format("queue {} enabled with size {}, desc {:#x}, driver {:#x}, "
                                "device {:#x}",
                                queue_select_, q.size, q.desc, q.driver, q.device));
            } else {
                q.enabled = true;
                q.last_avail = 0;
                q.used_idx = 0;
                q.signalled_used = 0;
            }
        }
    }
    if (touched(reg::DeviceStatus::offset, 1)) {
        write_status(static_cast<std::uint8_t>(common[reg::DeviceStatus::offset]));
    }
}

void VirtioNetDevice::write_status(std::uint8_t value) {
    if (value == 0) {
        // §4.1.4.3.2 / §2.4: writing 0 resets the device; it reads 0 once the reset is done
        // (at once here: nothing is in flight outside this lock).
        device_reset();
        ++counters_.resets;
        return;
    }
    std::uint8_t next = static_cast<std::uint8_t>((value & ~status::device_needs_reset) |
                                                  (status_ & status::device_needs_reset));
    if ((value & status::features_ok) != 0 && (status_ & status::features_ok) == 0) {
        // §2.2.2 / §3.1.1 step 5: accept only offered features, VERSION_1 among them, and MQ
        // only with the control queue (§5.1.3.1); otherwise FEATURES_OK does not stay set.
        const std::uint64_t offered = offered_features();
        const bool mq = (driver_features_ & bit(virtio::net_feature::mq)) != 0;
        const bool ctrl = (driver_features_ & bit(virtio::net_feature::ctrl_vq)) != 0;
        if ((driver_features_ & ~offered) != 0 ||
            (driver_features_ & bit(virtio::feature::version_1)) == 0 || (mq && !ctrl)) {
            log_info("{}: features {:#x} refused (offered {:#x})", function_.name(),
                     driver_features_, offered);
            next = static_cast<std::uint8_t>(next & ~status::features_ok);
        }
    }
    status_ = next;
    status_snapshot_.store(status_);
}

void VirtioNetDevice::device_reset() {
    for (std::size_t i = 0; i < queues_.size(); ++i) {
        queues_[i] = Queue{};
        queues_[i].size = options_.queue_size;
    }
    device_feature_select_ = 0;
    driver_feature_select_ = 0;
    driver_features_ = 0;
    config_vector_ = virtio::kNoVector;
    status_ = 0;
    queue_select_ = 0;
    isr_ = 0;
    active_pairs_ = 1;
    halted_ = false;
    std::memset(notify_.data(), 0, notify_.size());
    status_snapshot_.store(0);
}

void VirtioNetDevice::reset() {
    device_reset();
    ++counters_.resets;
}

void VirtioNetDevice::client_detached() {
    // The rings' memory went with the client: the queues wait (dma() finds nothing) until the
    // next client resets the device, as every driver does first (§3.1.1 step 1).
    log_info("{}: client detached; device status {:#04x} kept", function_.name(), status_);
}

// --- The poller -------------------------------------------------------------------------------

void VirtioNetDevice::poll_loop() {
    function_.run_poller(stop_, [this] { return poll_once(); });
}

bool VirtioNetDevice::live() const noexcept {
    constexpr std::uint8_t running = status::features_ok | status::driver_ok;
    return !halted_ && (status_ & running) == running &&
           (status_ & (status::device_needs_reset | status::failed)) == 0;
}

bool VirtioNetDevice::poll_once() {
    if (!live()) {
        return false;
    }
    bool worked = false;
    if (options_.faults.delay_us != 0) {
        post_due(Clock::now());
    }
    if (options_.queue_pairs > 1) {
        worked = process_control() || worked;
    }
    for (unsigned pair = 0; pair < options_.queue_pairs && live(); ++pair) {
        worked = process_tx(pair) || worked;
    }
    if (live()) {
        worked = process_rx_from_peer() || worked;
    }
    // §2.7.7 / §2.7.10: one interrupt decision per queue per pass.
    for (Queue& q : queues_) {
        if (q.enabled && q.used_idx != q.signalled_used) {
            Rings r;
            if (rings(q, r)) {
                interrupt(q, r);
            }
        }
    }
    return worked;
}

bool VirtioNetDevice::rings(Queue& q, Rings& out) noexcept {
    if (!q.enabled) {
        return false;
    }
    const std::uint64_t size = q.size;
    out.desc = function_.dma(q.desc, sizeof(virtio::Descriptor) * size, false);
    out.avail = function_.dma(q.driver, virtio::avail_ring_bytes(size), false);
    out.used = function_.dma(q.device, virtio::used_ring_bytes(size), true);
    if (out.desc == nullptr || out.avail == nullptr || out.used == nullptr) {
        return false;  // not mapped (yet, or any more): wait
    }
    // The device polls, so it asks for no notifications: NO_NOTIFY without EVENT_IDX (§2.7.7);
    // with it, avail_event says "tell me at the next buffer" (§2.7.10), which costs the driver a
    // store into the notify page and nothing else.
    if ((driver_features_ & bit(virtio::feature::event_idx)) != 0) {
        __atomic_store_n(reinterpret_cast<std::uint16_t*>(out.used + 4 + 8 * size), q.last_avail,
                         __ATOMIC_RELAXED);
    } else {
        __atomic_store_n(reinterpret_cast<std::uint16_t*>(out.used), virtio::kUsedNoNotify,
                         __ATOMIC_RELAXED);
    }
    return true;
}

bool VirtioNetDevice::next_chain(Queue& q, const Rings& r, Chain& chain) {
    // §2.7.13.3: the driver publishes idx after the ring entry; the acquire load pairs with its
    // barrier, so the entry and the descriptors are visible.
    const std::uint16_t avail_idx = load16(r.avail + 2);
    if (avail_idx == q.last_avail) {
        return false;
    }
    const auto index = static_cast<std::size_t>(&q - queues_.data());
    if (static_cast<std::uint16_t>(avail_idx - q.last_avail) > q.size) {
        needs_reset(
            fmt::format("queue {}: avail idx {} is {} past the last one taken ({}), more "
                        "than the {} entries",
                        index, avail_idx, static_cast<std::uint16_t>(avail_idx - q.last_avail),
                        q.last_avail, q.size));
        return false;
    }
    std::uint16_t head = 0;
    std::memcpy(&head, r.avail + 4 + 2 * (q.last_avail % q.size), 2);
    chain.head = head;
    chain.readable = 0;
    chain.writable = 0;
    chain.runs.clear();
    std::uint16_t at = head;
    for (unsigned count = 0;; ++count) {
        // §2.7.5: indexes inside the table; a chain longer than the table loops (§2.7.5.2).
        if (at >= q.size || count >= q.size) {
            needs_reset(fmt::format("queue {}: descriptor chain from {} {}", index, head,
                                    at >= q.size
                                        ? fmt::format("names descriptor {} of {}", at, q.size)
                                        : std::string("loops")));
            return false;
        }
        virtio::Descriptor d;
        std::memcpy(&d, r.desc + sizeof d * at, sizeof d);
        const bool writable = (d.flags & virtio::desc_flag::write) != 0;
        if ((d.flags & virtio::desc_flag::indirect) != 0) {
            needs_reset(fmt::format("queue {}: indirect descriptor {} (not offered)", index, at));
            return false;
        }
        if (!writable && chain.writable != 0) {
            // §2.7.4.2: device-readable descriptors come before device-writable ones.
            needs_reset(
                fmt::format("queue {}: readable descriptor {} after a writable one", index, at));
            return false;
        }
        if (d.len != 0) {
            std::byte* data = function_.dma(d.addr, d.len, writable);
            if (data == nullptr) {
                needs_reset(
                    fmt::format("queue {}: descriptor {} names [{:#x}, +{:#x}), not {} "
                                "memory of the driver",
                                index, at, d.addr, d.len, writable ? "writable mapped" : "mapped"));
                return false;
            }
            chain.runs.push_back(Run{data, d.len, writable});
            (writable ? chain.writable : chain.readable) += d.len;
            if (chain.readable + chain.writable > kMaxChainBytes) {
                needs_reset(fmt::format("queue {}: chain from {} holds over {} bytes", index, head,
                                        kMaxChainBytes));
                return false;
            }
        }
        if ((d.flags & virtio::desc_flag::next) == 0) {
            return true;
        }
        at = d.next;
    }
}

bool VirtioNetDevice::process_tx(unsigned pair) {
    Queue& q = queues_[2 * pair + 1];
    Rings r;
    if (!rings(q, r)) {
        return false;
    }
    bool worked = false;
    Chain chain;
    for (unsigned budget = 64; budget != 0 && next_chain(q, r, chain); --budget) {
        // §5.1.6.2: a transmit chain is the header and the frame, all device-readable.
        if (chain.writable != 0 || chain.readable < kHeader) {
            needs_reset(
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
        ++q.last_avail;
        worked = true;
        complete(q, r, chain.head, 0);  // §5.1.6.2.1: nothing written into a transmit buffer
        if (!live()) {
            break;  // a bad descriptor on the way, or a fault
        }
    }
    return worked;
}

bool VirtioNetDevice::deliver(unsigned pair, std::span<const std::byte> frame) {
    Queue& q = queues_[2 * pair];
    Rings r;
    Chain chain;
    if (!rings(q, r) || !next_chain(q, r, chain)) {
        return false;
    }
    // §5.1.6.3: receive buffers are device-writable only.
    if (chain.readable != 0) {
        needs_reset(fmt::format("receiveq{}: chain from {} has {} device-readable bytes", pair + 1,
                                chain.head, chain.readable));
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
    ++q.last_avail;
    ++counters_.rx_frames;
    counters_.rx_bytes += frame.size();
    complete(q, r, chain.head, static_cast<std::uint32_t>(needed));
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
        if (!live()) {
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
    Queue& q = queues_[2 * options_.queue_pairs];
    Rings r;
    Chain chain;
    bool worked = false;
    while (rings(q, r) && next_chain(q, r, chain)) {
        // §5.1.6.5: class and command, the command's data (device-readable), one ack byte.
        if (chain.readable < sizeof(virtio::NetControlHeader) || chain.writable < 1) {
            needs_reset(
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
        ++q.last_avail;
        post_used(q, r, chain.head, 1);
        worked = true;
    }
    return worked;
}

// --- Used ring and interrupts (§2.7.8, §2.7.10) -----------------------------------------------

void VirtioNetDevice::complete(Queue& q, const Rings& r, std::uint32_t id, std::uint32_t len) {
    const std::uint64_t n = ++frames_;
    const Faults& f = options_.faults;
    if (f.corrupt_io == n) {
        log_info("{}: fault: frame {} returns descriptor {} as {}", function_.name(), n, id,
                 id + q.size);
        id += q.size;  // no such descriptor
    }
    if (f.drop_io == n) {
        log_info("{}: fault: frame {} (descriptor {}) is never returned", function_.name(), n, id);
    } else if (f.delay_us != 0 || !q.pending.empty()) {
        q.pending.push_back({Clock::now() + std::chrono::microseconds(f.delay_us), id, len});
    } else {
        post_used(q, r, id, len);
    }
    if (f.fatal_after == n) {
        needs_reset(fmt::format("fault: DEVICE_NEEDS_RESET after {} frames", n));
    }
    if (f.vanish_after == n) {
        log_info("{}: fault: vanishing after {} frames", function_.name(), n);
        halted_ = true;
        function_.request_disconnect();
    }
}

void VirtioNetDevice::post_used(Queue& q, const Rings& r, std::uint32_t id, std::uint32_t len) {
    const virtio::UsedElement element{id, len};
    std::memcpy(r.used + 4 + sizeof element * (q.used_idx % q.size), &element, sizeof element);
    ++q.used_idx;
    // §2.7.8.2 / §2.7.13: the element before the index that publishes it.
    __atomic_store_n(reinterpret_cast<std::uint16_t*>(r.used + 2), q.used_idx, __ATOMIC_RELEASE);
}

void VirtioNetDevice::post_due(Clock::time_point now) {
    for (Queue& q : queues_) {
        Rings r;
        if (q.pending.empty() || !rings(q, r)) {
            continue;
        }
        while (!q.pending.empty() && q.pending.front().due <= now) {
            post_used(q, r, q.pending.front().id, q.pending.front().len);
            q.pending.pop_front();
        }
    }
}

void VirtioNetDevice::interrupt(Queue& q, const Rings& r) {
    // §2.7.13.4: the used idx store before reading what the driver asks for, or a driver that
    // asks for an interrupt just after it last looked would sleep through this one.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    bool wanted = false;
    if ((driver_features_ & bit(virtio::feature::event_idx)) != 0) {
        const std::uint16_t used_event = load16(r.avail + 4 + 2 * std::size_t{q.size});
        wanted = virtio::need_event(used_event, q.used_idx, q.signalled_used);  // §2.7.10
    } else {
        wanted = (load16(r.avail) & virtio::kAvailNoInterrupt) == 0;  // §2.7.7
    }
    q.signalled_used = q.used_idx;
    if (wanted && q.vector != virtio::kNoVector) {
        isr_ |= 1u;  // §4.1.4.5: queue interrupt
        if (function_.raise_msix(q.vector)) {
            ++counters_.interrupts;
        }
    }
}

void VirtioNetDevice::needs_reset(const std::string& why) {
    if ((status_ & status::device_needs_reset) != 0) {
        return;
    }
    // §2.1.2: the device stops and says so; the driver must reset it. §4.1.4.5: a configuration
    // change notification tells a driver that sleeps.
    log_warn("{}: DEVICE_NEEDS_RESET: {}", function_.name(), why);
    status_ |= status::device_needs_reset;
    status_snapshot_.store(status_);
    ++counters_.needs_reset;
    isr_ |= 2u;
    if (config_vector_ != virtio::kNoVector && function_.raise_msix(config_vector_)) {
        ++counters_.interrupts;
    }
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
