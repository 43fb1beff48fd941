// Virtio device models over testing::FakeDevice, laid out as QEMU lays out a modern virtio-pci
// device (VIRTIO 1.2 §4.1.4): MSI-X capability, then the vendor capabilities for the common
// configuration, ISR, device configuration and notifications, all in BAR4.
//   FakeVirtioPci  the transport: the common configuration reacts to region writes
//                  (queue_select, device_status, feature selects); a notification makes the model
//                  serve the queue at once, as QEMU does under TCG, and raise the queue's MSI-X
//                  vector. Used-ring entries can be corrupted on demand.
//   FakeVirtioBlk  virtio-blk (§5.2): requests served from an in-memory disk.
//   FakeVirtioNet  virtio-net (§5.1): transmitted frames recorded, frames injected on receive
//                  queues, control-queue commands recorded and acknowledged.
#pragma once

#include <array>
#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "fake_device.hpp"
#include "ring3/virtio/registers.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::virtio::testing {

struct FakeVirtioPciOptions {
    std::uint64_t features = bit(feature::version_1);
    std::uint16_t queues = 1;  // virtqueues
    std::uint16_t queue_size = 256;
    unsigned msix_vectors = 2;
    bool mappable = false;
    bool legacy_only = false;  // no virtio capabilities (disable-modern=on)
    unsigned reset_reads = 0;  // device_status reads before a reset shows 0
    bool reject_features = false;
};

struct FakeVirtioBlkOptions : FakeVirtioPciOptions {
    FakeVirtioBlkOptions() {
        features = bit(feature::version_1) | bit(feature::access_platform) |
                   bit(feature::event_idx) | bit(feature::ring_packed) | bit(blk_feature::seg_max) |
                   bit(blk_feature::blk_size) | bit(blk_feature::flush);
    }
    std::uint64_t capacity = 2048;  // sectors
    std::uint32_t block_size = 512;
    std::uint32_t seg_max = 126;
};

class FakeVirtioPci {
  public:
    static constexpr unsigned kBar = 4;
    static constexpr std::uint32_t kCommon = 0x0000;
    static constexpr std::uint32_t kIsr = 0x1000;
    static constexpr std::uint32_t kDeviceCfg = 0x2000;
    static constexpr std::uint32_t kNotify = 0x3000;
    static constexpr std::uint32_t kNotifyMultiplier = 4;

    FakeVirtioPci(const FakeVirtioPciOptions& options, const char* name, std::uint16_t device_id,
                  std::uint32_t class_code, std::uint16_t config_queues)
        : owned(std::make_unique<ring3::testing::FakeDevice>(name)),
          device(*owned),
          options_(options),
          config_queues_(config_queues) {
        auto& d = device;
        d.set_ids(kVendorId, device_id, class_code);
        // MSI-X (PCI 3.0 §6.8.2): message control = table size - 1, table and PBA in BAR1.
        const std::uint16_t control = static_cast<std::uint16_t>(options.msix_vectors - 1);
        const std::uint8_t msix[10] = {static_cast<std::uint8_t>(control),
                                       static_cast<std::uint8_t>(control >> 8),
                                       1,
                                       0,
                                       0,
                                       0,
                                       1,
                                       8,
                                       0,
                                       0};
        d.add_capability(0x11, msix);
        d.set_irq_count(IrqKind::msix, options.msix_vectors);
        d.set_irq_count(IrqKind::intx, 1);
        d.add_bar(1, 0x1000, true);
        d.add_bar(kBar, 0x4000, options.mappable);
        if (!options.legacy_only) {
            add_cap(pci_cap_type::common_cfg, kCommon, 0x1000);
            add_cap(pci_cap_type::isr_cfg, kIsr, 0x1000);
            add_cap(pci_cap_type::device_cfg, kDeviceCfg, 0x1000);
            add_cap(pci_cap_type::notify_cfg, kNotify, 0x1000, kNotifyMultiplier);
        }
        queues_.resize(config_queues);
        reset_model();
        d.on_write(kBar, [this](std::uint64_t offset, unsigned, std::uint64_t value) {
            written(offset, value);
        });
        d.on_read(kBar, [this](std::uint64_t offset, unsigned) -> std::optional<std::uint64_t> {
            if (offset == kCommon + reg::DeviceStatus::offset && reset_left_ > 0) {
                --reset_left_;
                return 0x01;  // still resetting
            }
            return std::nullopt;
        });
    }
    FakeVirtioPci(const FakeVirtioPci&) = delete;
    FakeVirtioPci& operator=(const FakeVirtioPci&) = delete;
    virtual ~FakeVirtioPci() = default;

    struct Queue {
        std::uint16_t size = 0;
        std::uint16_t vector = kNoVector;
        std::uint16_t enable = 0;
        std::uint64_t desc = 0, driver = 0, device = 0;
        std::uint16_t last_avail = 0;
        std::uint16_t used_idx = 0;
        unsigned notifies = 0;
    };

    // The device; take() hands ownership to a driver (the model keeps using it: destroy the
    // driver before the model).
    std::unique_ptr<ring3::testing::FakeDevice> owned;
    ring3::testing::FakeDevice& device;
    std::unique_ptr<Device> take() { return std::move(owned); }
    bool serve = true;  // serve a queue when notified
    bool raise_interrupts = true;
    // Corruption of the next used entry: id and/or length replaced.
    std::optional<std::uint32_t> next_used_id;
    std::optional<std::uint32_t> next_used_len;
    std::optional<std::uint16_t> used_idx_jump;  // added to used idx once
    std::uint64_t driver_features = 0;
    std::vector<Queue>& queues() { return queues_; }
    std::uint8_t status() {
        return device.peek<std::uint8_t>(kBar, kCommon + reg::DeviceStatus::offset);
    }
    // §2.1.2: the device has failed and sets DEVICE_NEEDS_RESET (serving nothing from then on).
    void set_needs_reset() {
        serve = false;
        put8(kCommon + reg::DeviceStatus::offset,
             static_cast<std::uint8_t>(status() | status::device_needs_reset));
    }
    unsigned interrupts_raised = 0;
    unsigned indirect_chains = 0;
    std::vector<std::uint8_t>
        status_writes;  // kept by the model: readable after the device is gone

    // Serves queue `index`: every available chain the device type takes is executed.
    void serve_queue(std::uint16_t index) {
        Queue& q = queues_[index];
        auto& dma = device.dma();
        auto* avail = reinterpret_cast<std::uint16_t*>(dma.dma(q.driver, avail_ring_bytes(q.size)));
        auto* used = dma.dma(q.device, used_ring_bytes(q.size));
        auto* table = reinterpret_cast<Descriptor*>(dma.dma(q.desc, sizeof(Descriptor) * q.size));
        if (avail == nullptr || used == nullptr || table == nullptr) {
            return;
        }
        const std::uint16_t avail_idx = avail[1];
        const std::uint16_t old_used = q.used_idx;
        while (q.last_avail != avail_idx && takes(index)) {
            const std::uint16_t head = avail[2 + (q.last_avail % q.size)];
            ++q.last_avail;
            const std::uint32_t written = execute(index, walk(table, q.size, head));
            auto* ring = reinterpret_cast<UsedElement*>(used + 4);
            UsedElement& e = ring[q.used_idx % q.size];
            e.id = next_used_id ? *next_used_id : head;
            e.len = next_used_len ? *next_used_len : written;
            next_used_id.reset();
            next_used_len.reset();
            ++q.used_idx;
        }
        if (used_idx_jump) {
            q.used_idx = static_cast<std::uint16_t>(q.used_idx + *used_idx_jump);
            used_idx_jump.reset();
        }
        reinterpret_cast<std::uint16_t*>(used)[1] = q.used_idx;
        // avail_event (§2.7.10): tell us about every new chain.
        reinterpret_cast<std::uint16_t*>(used + 4 + sizeof(UsedElement) * q.size)[0] = q.last_avail;
        const bool event_idx = (driver_features & bit(feature::event_idx)) != 0;
        const std::uint16_t used_event = avail[2 + q.size];
        const bool wanted = event_idx ? need_event(used_event, q.used_idx, old_used)
                                      : (avail[0] & kAvailNoInterrupt) == 0;
        if (raise_interrupts && wanted && q.vector != kNoVector && q.used_idx != old_used) {
            device.raise(IrqKind::msix, q.vector);
            ++interrupts_raised;
        }
    }

  protected:
    // Whether queue `index` consumes another chain now (a receive queue only with a frame).
    virtual bool takes(std::uint16_t /*index*/) { return true; }
    // Executes one chain of queue `index`; returns the bytes written to the driver.
    virtual std::uint32_t execute(std::uint16_t index, std::span<const Descriptor> chain) = 0;
    void put8(std::uint64_t at, std::uint8_t v) { device.poke(kBar, at, v); }
    void put16(std::uint64_t at, std::uint16_t v) { device.poke(kBar, at, v); }
    void put32(std::uint64_t at, std::uint32_t v) { device.poke(kBar, at, v); }

  private:
    // The chain starting at `head` (through an indirect table when the head says so).
    std::span<const Descriptor> walk(Descriptor* table, std::uint16_t size, std::uint16_t head) {
        auto& dma = device.dma();
        chain_.clear();  // capacity kept: serving a queue allocates nothing after the first
        Descriptor* at = table;
        std::uint16_t limit = size;
        std::uint16_t first = head;
        if ((table[head].flags & desc_flag::indirect) != 0) {  // §2.7.5.3
            at = reinterpret_cast<Descriptor*>(dma.dma(table[head].addr, table[head].len));
            if (at == nullptr) {
                return {};
            }
            limit = static_cast<std::uint16_t>(table[head].len / sizeof(Descriptor));
            first = 0;
            ++indirect_chains;
        }
        for (std::uint16_t id = first, n = 0; n < limit && id < limit; ++n) {
            chain_.push_back(at[id]);
            if ((at[id].flags & desc_flag::next) == 0) {
                break;
            }
            id = at[id].next;
        }
        return chain_;
    }
    void add_cap(std::uint8_t type, std::uint32_t offset, std::uint32_t length,
                 std::optional<std::uint32_t> multiplier = std::nullopt) {
        std::vector<std::uint8_t> body(multiplier ? 18 : 14, 0);
        body[0] = static_cast<std::uint8_t>(body.size() + 2);  // cap_len
        body[1] = type;
        body[2] = kBar;
        std::memcpy(&body[6], &offset, 4);
        std::memcpy(&body[10], &length, 4);
        if (multiplier) {
            std::memcpy(&body[14], &*multiplier, 4);
        }
        device.add_capability(0x09, body);
    }
    void reset_model() {
        for (std::size_t i = 0; i < queues_.size(); ++i) {
            queues_[i] = Queue{};
        }
        driver_features = 0;
        put16(kCommon + reg::NumQueues::offset, config_queues_);
        put16(kCommon + reg::ConfigMsixVector::offset, kNoVector);
        select(0);
    }
    void select(std::uint16_t index) {
        put16(kCommon + reg::QueueSelect::offset, index);
        if (index >= queues_.size()) {
            put16(kCommon + reg::QueueSize::offset, 0);
            return;
        }
        const Queue& q = queues_[index];
        put16(kCommon + reg::QueueSize::offset, q.size == 0 ? options_.queue_size : q.size);
        put16(kCommon + reg::QueueMsixVector::offset, q.vector);
        put16(kCommon + reg::QueueEnable::offset, q.enable);
        put16(kCommon + reg::QueueNotifyOff::offset, index);
    }
    void written(std::uint64_t offset, std::uint64_t value) {
        if (offset >= kNotify && offset < kNotify + 0x1000) {
            const auto index = static_cast<std::uint16_t>(value);
            if (index < queues_.size()) {
                ++queues_[index].notifies;
                if (serve) {
                    serve_queue(index);
                }
            }
            return;
        }
        const std::uint16_t sel =
            device.peek<std::uint16_t>(kBar, kCommon + reg::QueueSelect::offset);
        Queue* q = sel < queues_.size() ? &queues_[sel] : nullptr;
        switch (offset) {
            case reg::DeviceFeatureSelect::offset: {
                const auto s = static_cast<std::uint32_t>(value);
                put32(kCommon + reg::DeviceFeature::offset,
                      s == 0   ? static_cast<std::uint32_t>(options_.features)
                      : s == 1 ? static_cast<std::uint32_t>(options_.features >> 32)
                               : 0);
                break;
            }
            case reg::DriverFeature::offset: {
                const auto s =
                    device.peek<std::uint32_t>(kBar, kCommon + reg::DriverFeatureSelect::offset);
                if (s < 2) {
                    const unsigned shift = 32 * s;
                    driver_features =
                        (driver_features & ~(0xffffffffull << shift)) | (value << shift);
                }
                break;
            }
            case reg::DeviceStatus::offset:
                status_writes.push_back(static_cast<std::uint8_t>(value));
                if (value == 0) {
                    reset_left_ = options_.reset_reads;
                    reset_model();
                } else if ((value & status::features_ok) != 0 &&
                           (options_.reject_features ||
                            (driver_features & ~options_.features) != 0 ||
                            (driver_features & bit(feature::version_1)) == 0)) {
                    device.poke<std::uint8_t>(
                        kBar, kCommon + reg::DeviceStatus::offset,
                        static_cast<std::uint8_t>(value & ~status::features_ok));
                }
                break;
            case reg::ConfigMsixVector::offset:
                if (value >= options_.msix_vectors) {
                    put16(kCommon + reg::ConfigMsixVector::offset, kNoVector);
                }
                break;
            case reg::QueueSelect::offset:
                select(static_cast<std::uint16_t>(value));
                break;
            case reg::QueueSize::offset:
                if (q)
                    q->size = static_cast<std::uint16_t>(value);
                break;
            case reg::QueueMsixVector::offset:
                if (q) {
                    q->vector = value < options_.msix_vectors ? static_cast<std::uint16_t>(value)
                                                              : kNoVector;
                    put16(kCommon + reg::QueueMsixVector::offset, q->vector);
                }
                break;
            case reg::QueueEnable::offset:
                if (q)
                    q->enable = static_cast<std::uint16_t>(value);
                break;
            case reg::QueueDescLow::offset:
            case reg::QueueDescHigh::offset:
                if (q)
                    set_half(q->desc, offset - reg::QueueDescLow::offset, value);
                break;
            case reg::QueueDriverLow::offset:
            case reg::QueueDriverHigh::offset:
                if (q)
                    set_half(q->driver, offset - reg::QueueDriverLow::offset, value);
                break;
            case reg::QueueDeviceLow::offset:
            case reg::QueueDeviceHigh::offset:
                if (q)
                    set_half(q->device, offset - reg::QueueDeviceLow::offset, value);
                break;
            default:
                break;
        }
    }
    static void set_half(std::uint64_t& field, std::uint64_t which, std::uint64_t value) {
        const unsigned shift = which == 0 ? 0 : 32;
        field = (field & ~(0xffffffffull << shift)) | ((value & 0xffffffffull) << shift);
    }
    FakeVirtioPciOptions options_;
    std::uint16_t config_queues_;
    std::vector<Descriptor> chain_;
    std::vector<Queue> queues_;
    unsigned reset_left_ = 0;
};

class FakeVirtioBlk final : public FakeVirtioPci {
  public:
    using Options = FakeVirtioBlkOptions;

    explicit FakeVirtioBlk(const Options& options = Options())
        : FakeVirtioPci(options, "fake:virtio-blk",
                        options.legacy_only ? kBlockTransitionalDeviceId : kBlockModernDeviceId,
                        0x010000, options.queues) {
        disk_.resize(options.capacity * kSectorSize);
        // Device configuration (§5.2.4).
        put32(kDeviceCfg + 0, static_cast<std::uint32_t>(options.capacity));
        put32(kDeviceCfg + 4, static_cast<std::uint32_t>(options.capacity >> 32));
        put32(kDeviceCfg + reg::blk::SegMax::offset, options.seg_max);
        put32(kDeviceCfg + reg::blk::BlkSize::offset, options.block_size);
        device.poke<std::uint16_t>(kBar, kDeviceCfg + reg::blk::NumQueues::offset, options.queues);
    }
    std::vector<std::byte> disk_;

  private:
    // Runs one chain: header, data, status (§5.2.6). Returns the bytes written to the driver.
    std::uint32_t execute(std::uint16_t, std::span<const Descriptor> chain) override {
        auto& dma = device.dma();
        if (chain.size() < 2)
            return 0;
        auto* header =
            reinterpret_cast<BlkRequestHeader*>(dma.dma(chain[0].addr, sizeof(BlkRequestHeader)));
        auto* status_byte = reinterpret_cast<std::uint8_t*>(dma.dma(chain.back().addr, 1));
        if (header == nullptr || status_byte == nullptr)
            return 0;
        std::uint32_t written = 1;
        std::uint64_t at = header->sector * kSectorSize;
        std::uint8_t result = blk_status::ok;
        for (std::size_t i = 1; i + 1 < chain.size(); ++i) {
            const Descriptor& d = chain[i];
            std::byte* data = dma.dma(d.addr, d.len);
            if (data == nullptr) {
                result = blk_status::ioerr;
                break;
            }
            if (header->type == blk_type::in || header->type == blk_type::out) {
                if (at + d.len > disk_.size()) {
                    result = blk_status::ioerr;
                    break;
                }
                if (header->type == blk_type::in) {
                    std::memcpy(data, disk_.data() + at, d.len);
                    written += d.len;
                } else {
                    std::memcpy(disk_.data() + at, data, d.len);
                }
                at += d.len;
            } else if (header->type == blk_type::write_zeroes ||
                       header->type == blk_type::discard) {
                BlkDiscardWriteZeroes range;
                std::memcpy(&range, data, sizeof range);
                if (header->type == blk_type::write_zeroes) {
                    std::memset(disk_.data() + range.sector * kSectorSize, 0,
                                std::uint64_t{range.num_sectors} * kSectorSize);
                }
            }
        }
        if (header->type != blk_type::in && header->type != blk_type::out &&
            header->type != blk_type::flush && header->type != blk_type::write_zeroes &&
            header->type != blk_type::discard) {
            result = blk_status::unsupp;
        }
        *status_byte = result;
        return written;
    }
};

struct FakeVirtioNetOptions : FakeVirtioPciOptions {
    FakeVirtioNetOptions() {
        features = bit(feature::version_1) | bit(feature::event_idx) | bit(net_feature::mac) |
                   bit(net_feature::status) | bit(net_feature::ctrl_vq) |
                   bit(net_feature::mrg_rxbuf) | bit(net_feature::csum);
        queue_size = 64;
    }
    std::uint16_t pairs = 1;  // max_virtqueue_pairs (offer VIRTIO_NET_F_MQ for more than one)
    std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc};
    std::uint16_t status = kNetStatusLinkUp;
};

class FakeVirtioNet final : public FakeVirtioPci {
  public:
    using Options = FakeVirtioNetOptions;
    using Frame = std::vector<std::byte>;

    explicit FakeVirtioNet(const Options& options = Options())
        : FakeVirtioPci(options, "fake:virtio-net",
                        options.legacy_only ? kNetTransitionalDeviceId : kNetModernDeviceId,
                        0x020000, static_cast<std::uint16_t>(2 * options.pairs + 1)),
          sent(options.pairs),
          pairs_(options.pairs),
          received_(options.pairs) {
        // Device configuration (§5.1.4).
        for (unsigned i = 0; i < 6; ++i) {
            put8(kDeviceCfg + reg::net::kMacOffset + i, options.mac[i]);
        }
        put16(kDeviceCfg + reg::net::Status::offset, options.status);
        put16(kDeviceCfg + reg::net::MaxVirtqueuePairs::offset, options.pairs);
    }

    // Frames for the driver on pair `pair`: delivered at once into posted buffers, the rest when
    // buffers come (a notification of the receive queue).
    void inject(unsigned pair, Frame frame) {
        received_[pair].push_back(std::move(frame));
        serve_queue(static_cast<std::uint16_t>(2 * pair));
    }
    std::size_t waiting(unsigned pair) const { return received_[pair].size(); }

    std::vector<std::vector<Frame>> sent;  // per pair: frames without their header
    std::vector<std::array<std::byte, sizeof(NetHeader)>> headers;  // of every sent frame
    // Control commands: class, command, data.
    struct Command {
        std::uint8_t command_class;
        std::uint8_t command;
        std::vector<std::uint8_t> data;
    };
    std::vector<Command> commands;
    std::optional<std::uint32_t> rx_len_override;  // the next received chain's used length
    bool keep_sent = true;  // false: transmitted frames are only counted (no allocation)
    std::uint64_t sent_count = 0;

  private:
    bool takes(std::uint16_t index) override {
        return index >= 2 * pairs_ || index % 2 == 1 || !received_[index / 2].empty();
    }
    std::uint32_t execute(std::uint16_t index, std::span<const Descriptor> chain) override {
        auto& dma = device.dma();
        if (chain.empty()) {
            return 0;
        }
        if (index == 2 * pairs_) {  // §5.1.6.5: header, data..., ack
            std::vector<std::uint8_t> in;
            for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
                const auto* p =
                    reinterpret_cast<const std::uint8_t*>(dma.dma(chain[i].addr, chain[i].len));
                if (p != nullptr) {
                    in.insert(in.end(), p, p + chain[i].len);
                }
            }
            auto* ack = reinterpret_cast<std::uint8_t*>(dma.dma(chain.back().addr, 1));
            if (in.size() >= 2 && ack != nullptr) {
                commands.push_back({in[0], in[1], {in.begin() + 2, in.end()}});
                *ack = net_ctrl::ok;
            }
            return 1;
        }
        if (index % 2 == 1) {  // transmit: header then frame, in any layout (§5.1.6.2)
            ++sent_count;
            if (!keep_sent) {
                return 0;
            }
            std::vector<std::byte> bytes;
            for (const Descriptor& d : chain) {
                const std::byte* p = dma.dma(d.addr, d.len);
                if (p != nullptr) {
                    bytes.insert(bytes.end(), p, p + d.len);
                }
            }
            if (bytes.size() >= sizeof(NetHeader)) {
                std::array<std::byte, sizeof(NetHeader)> h;
                std::memcpy(h.data(), bytes.data(), h.size());
                headers.push_back(h);
                sent[index / 2].emplace_back(bytes.begin() + sizeof(NetHeader), bytes.end());
            }
            return 0;
        }
        // Receive (§5.1.6.4): the header (all zeros, num_buffers 1) and the frame, into one
        // device-writable buffer.
        Frame frame = std::move(received_[index / 2].front());
        received_[index / 2].pop_front();
        const Descriptor& d = chain.front();
        std::byte* out = dma.dma(d.addr, d.len);
        const std::size_t total = sizeof(NetHeader) + frame.size();
        if (out == nullptr || total > d.len) {
            return 0;  // dropped, as a device without room does
        }
        NetHeader header{};
        header.num_buffers = 1;
        std::memcpy(out, &header, sizeof header);
        std::memcpy(out + sizeof header, frame.data(), frame.size());
        if (rx_len_override) {
            const std::uint32_t len = *rx_len_override;
            rx_len_override.reset();
            return len;
        }
        return static_cast<std::uint32_t>(total);
    }

    unsigned pairs_;
    std::vector<std::deque<Frame>> received_;
};

}  // namespace ring3::virtio::testing
