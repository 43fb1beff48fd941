// emu::VirtioFunction: the virtio PCI transport registers (VIRTIO 1.2 §4.1.4), device status
// and feature negotiation (§2.1, §2.2, §3.1), and split virtqueues served by a polling thread
// (§2.7), for every emulated virtio device type.
#include "ring3/emu/virtio_function.hpp"

#include <cstring>

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

VirtioFunction::VirtioFunction(PciFunction& function, VirtioDeviceType& type, Options options)
    : function_(function), type_(type), options_(std::move(options)) {
    const Options& o = options_;
    if (o.num_queues < 1 || o.num_queues > kMaxQueues || o.queue_size < 2 ||
        o.queue_size > virtio::kMaxQueueSize || (o.queue_size & (o.queue_size - 1)) != 0 ||
        o.msix_vectors < 1 || o.msix_vectors > 2048 || o.config_length > kDeviceMaxLength) {
        throw Error::invalid("create virtio device", function_.name(),
                             fmt::format("1..{} queues, queue size a power of two 2..32768, "
                                         "1..2048 MSI-X vectors, configuration up to {} bytes",
                                         kMaxQueues, kDeviceMaxLength));
    }
    // §4.1.2: vendor 0x1af4, device 0x1040 + the device type; a non-transitional device has
    // revision 1 (§4.1.2.1).
    ConfigSpace& config = function_.config();
    config.set_identity(virtio::kVendorId, o.device_id, o.class_code, 1);
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
    if (o.config_length != 0) {
        config.add_capability(pci::cap::vendor_specific,
                              virtio_cap(device_cfg, kDeviceOffset, o.config_length));
    }
    config.add_msix(o.msix_vectors, 0, kMsixTable, kMsixPba);
    function_.set_bar_handlers(
        0, [this](std::uint64_t offset, unsigned width) { return bar_read(offset, width); },
        [this](std::uint64_t offset, unsigned width, std::uint64_t value) {
            bar_write(offset, width, value);
        });
    notify_ = function_.add_memory_area(0, kNotifyOffset, kNotifyLength, true);
    queues_.resize(o.num_queues);
    // The transport's power-on state; the device type sets up its own (it is not built yet).
    for (Queue& q : queues_) {
        q.size = o.queue_size;
    }
    config_vector_ = virtio::kNoVector;
    function_.set_model(this);
}

VirtioFunction::~VirtioFunction() {
    stop();
    auto lock = function_.lock();
    function_.set_model(nullptr);
    function_.set_bar_handlers(0, {}, {});
}

void VirtioFunction::start() {
    if (!poller_.joinable()) {
        stop_.store(false);
        poller_ =
            std::thread([this] { function_.run_poller(stop_, [this] { return poll_once(); }); });
    }
}

void VirtioFunction::stop() noexcept {
    stop_.store(true);
    if (poller_.joinable()) {
        poller_.join();
    }
}

VirtioCounters VirtioFunction::counters() const {
    auto lock = function_.lock();
    return counters_;
}

bool VirtioFunction::negotiated(unsigned feature_bit) const noexcept {
    return (driver_features_ & bit(feature_bit)) != 0;
}

// --- Registers (§4.1.4) -----------------------------------------------------------------------

void VirtioFunction::common_snapshot(std::byte (&out)[kCommonLength]) const noexcept {
    std::memset(out, 0, sizeof out);
    const auto put = [&out](std::size_t at, auto value) {
        std::memcpy(out + at, &value, sizeof value);
    };
    const std::uint64_t offered = type_.offered_features();
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
    put(reg::NumQueues::offset, options_.num_queues);
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

std::uint64_t VirtioFunction::bar_read(std::uint64_t offset, unsigned width) {
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
    } else if (offset >= kDeviceOffset &&
               offset + width <= kDeviceOffset + options_.config_length) {
        // §4.1.4.6: the device type's configuration structure.
        std::byte config[kDeviceMaxLength] = {};
        type_.read_config({config, options_.config_length});
        std::memcpy(&value, config + (offset - kDeviceOffset), width);
    }
    return value;  // unused parts of the BAR read 0
}

void VirtioFunction::bar_write(std::uint64_t offset, unsigned width, std::uint64_t value) {
    if (offset >= kCommonOffset && offset + width <= kCommonOffset + kCommonLength) {
        common_write(offset - kCommonOffset, width, value);
    }
    // The ISR (§4.1.4.5) and the device configurations offered here are read-only: writes are
    // ignored.
}

void VirtioFunction::common_write(std::uint64_t offset, unsigned width, std::uint64_t value) {
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

void VirtioFunction::write_status(std::uint8_t value) {
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
        // §2.2.2 / §3.1.1 step 5: accept only offered features, VERSION_1 among them, and what
        // the device type accepts; otherwise FEATURES_OK does not stay set.
        const std::uint64_t offered = type_.offered_features();
        const char* refused = type_.refuse_features(driver_features_);
        if ((driver_features_ & ~offered) != 0 ||
            (driver_features_ & bit(virtio::feature::version_1)) == 0 || refused != nullptr) {
            log_info("{}: features {:#x} refused (offered {:#x}){}{}", function_.name(),
                     driver_features_, offered, refused != nullptr ? ": " : "",
                     refused != nullptr ? refused : "");
            next = static_cast<std::uint8_t>(next & ~status::features_ok);
        }
    }
    status_ = next;
    status_snapshot_.store(status_);
}

void VirtioFunction::device_reset() {
    for (Queue& q : queues_) {
        q = Queue{};
        q.size = options_.queue_size;
    }
    device_feature_select_ = 0;
    driver_feature_select_ = 0;
    driver_features_ = 0;
    config_vector_ = virtio::kNoVector;
    status_ = 0;
    queue_select_ = 0;
    isr_ = 0;
    halted_ = false;
    std::memset(notify_.data(), 0, notify_.size());
    status_snapshot_.store(0);
    type_.reset();
}

void VirtioFunction::reset() {
    device_reset();
    ++counters_.resets;
}

void VirtioFunction::client_detached() {
    // The rings' memory went with the client: the queues wait (dma() finds nothing) until the
    // next client resets the device, as every driver does first (§3.1.1 step 1).
    log_info("{}: client detached; device status {:#04x} kept", function_.name(), status_);
}

// --- The poller -------------------------------------------------------------------------------

bool VirtioFunction::live() const noexcept {
    constexpr std::uint8_t running = status::features_ok | status::driver_ok;
    return !halted_ && (status_ & running) == running &&
           (status_ & (status::device_needs_reset | status::failed)) == 0;
}

bool VirtioFunction::poll_once() {
    if (!live()) {
        return false;
    }
    if (options_.faults.delay_us != 0) {
        post_due(Clock::now());
    }
    const bool worked = type_.process(*this);
    // §2.7.7 / §2.7.10: one interrupt decision per queue per pass.
    for (std::size_t i = 0; i < queues_.size(); ++i) {
        Queue& q = queues_[i];
        if (q.enabled && q.used_idx != q.signalled_used) {
            Rings r;
            if (rings(static_cast<unsigned>(i), r)) {
                interrupt(q, r);
            }
        }
    }
    return worked;
}

bool VirtioFunction::rings(unsigned index, Rings& out) noexcept {
    Queue& q = queues_[index];
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

bool VirtioFunction::next_chain(unsigned index, const Rings& r, Chain& chain) {
    Queue& q = queues_[index];
    // §2.7.13.3: the driver publishes idx after the ring entry; the acquire load pairs with its
    // barrier, so the entry and the descriptors are visible.
    const std::uint16_t avail_idx = load16(r.avail + 2);
    if (avail_idx == q.last_avail) {
        return false;
    }
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
    chain.descriptors = 0;
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
        ++chain.descriptors;
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
            if (chain.readable + chain.writable > options_.max_chain_bytes) {
                needs_reset(fmt::format("queue {}: chain from {} holds over {} bytes", index, head,
                                        options_.max_chain_bytes));
                return false;
            }
        }
        if ((d.flags & virtio::desc_flag::next) == 0) {
            return true;
        }
        at = d.next;
    }
}

// --- Used ring and interrupts (§2.7.8, §2.7.10) -----------------------------------------------

void VirtioFunction::complete(unsigned index, const Rings& r, std::uint32_t id, std::uint32_t len) {
    Queue& q = queues_[index];
    const std::uint64_t n = ++counters_.completions;
    const Faults& f = options_.faults;
    if (f.corrupt_io == n) {
        log_info("{}: fault: completion {} returns descriptor {} as {}", function_.name(), n, id,
                 id + q.size);
        id += q.size;  // no such descriptor
    }
    if (f.drop_io == n) {
        log_info("{}: fault: completion {} (descriptor {}) is never returned", function_.name(), n,
                 id);
    } else if (f.delay_us != 0 || !q.pending.empty()) {
        q.pending.push_back({Clock::now() + std::chrono::microseconds(f.delay_us), id, len});
    } else {
        post_used(index, r, id, len);
    }
    if (f.fatal_after == n) {
        needs_reset(fmt::format("fault: DEVICE_NEEDS_RESET after {} completions", n));
    }
    if (f.vanish_after == n) {
        log_info("{}: fault: vanishing after {} completions", function_.name(), n);
        halted_ = true;
        function_.request_disconnect();
    }
}

void VirtioFunction::post_used(unsigned index, const Rings& r, std::uint32_t id,
                               std::uint32_t len) {
    Queue& q = queues_[index];
    const virtio::UsedElement element{id, len};
    std::memcpy(r.used + 4 + sizeof element * (q.used_idx % q.size), &element, sizeof element);
    ++q.used_idx;
    // §2.7.8.2 / §2.7.13: the element before the index that publishes it.
    __atomic_store_n(reinterpret_cast<std::uint16_t*>(r.used + 2), q.used_idx, __ATOMIC_RELEASE);
}

void VirtioFunction::post_due(Clock::time_point now) {
    for (std::size_t i = 0; i < queues_.size(); ++i) {
        Queue& q = queues_[i];
        Rings r;
        if (q.pending.empty() || !rings(static_cast<unsigned>(i), r)) {
            continue;
        }
        while (!q.pending.empty() && q.pending.front().due <= now) {
            post_used(static_cast<unsigned>(i), r, q.pending.front().id, q.pending.front().len);
            q.pending.pop_front();
        }
    }
}

void VirtioFunction::interrupt(Queue& q, const Rings& r) {
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

void VirtioFunction::needs_reset(const std::string& why) {
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

}  // namespace ring3::emu
