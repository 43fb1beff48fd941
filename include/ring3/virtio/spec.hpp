// Virtio data structures and constants, from the VIRTIO 1.2 specification (OASIS, 2022); section
// numbers below are its. Layouts are little-endian, as is every host ring3 runs on; sizes are
// asserted so a struct never drifts from the spec's layout.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ring3::virtio {

// VIRTIO 1.2 §4.1.2: PCI vendor 0x1af4; a modern device's id is 0x1040 + its device type (§5),
// a transitional one's 0x1000..0x103f.
inline constexpr std::uint16_t kVendorId = 0x1af4;
inline constexpr std::uint16_t kModernDeviceIdBase = 0x1040;
inline constexpr std::uint16_t kDeviceTypeNet = 1;    // §5: device ID 1, network card
inline constexpr std::uint16_t kDeviceTypeBlock = 2;  // §5: device ID 2, block device
inline constexpr std::uint16_t kNetModernDeviceId = kModernDeviceIdBase + kDeviceTypeNet;
inline constexpr std::uint16_t kBlockModernDeviceId = kModernDeviceIdBase + kDeviceTypeBlock;
inline constexpr std::uint16_t kNetTransitionalDeviceId = 0x1000;    // §4.1.2.3
inline constexpr std::uint16_t kBlockTransitionalDeviceId = 0x1001;  // §4.1.2.3

// VIRTIO 1.2 §2.1: device status field.
namespace status {
inline constexpr std::uint8_t acknowledge = 1;
inline constexpr std::uint8_t driver = 2;
inline constexpr std::uint8_t driver_ok = 4;
inline constexpr std::uint8_t features_ok = 8;
inline constexpr std::uint8_t device_needs_reset = 64;
inline constexpr std::uint8_t failed = 128;
}  // namespace status

// VIRTIO 1.2 §6: reserved (transport- and device-independent) feature bits.
namespace feature {
inline constexpr unsigned indirect_desc = 28;
inline constexpr unsigned event_idx = 29;
inline constexpr unsigned version_1 = 32;
inline constexpr unsigned access_platform = 33;
inline constexpr unsigned ring_packed = 34;
inline constexpr unsigned in_order = 35;
inline constexpr unsigned order_platform = 36;
inline constexpr unsigned sr_iov = 37;
inline constexpr unsigned notification_data = 38;
inline constexpr unsigned notif_config_data = 39;
inline constexpr unsigned ring_reset = 40;
}  // namespace feature

constexpr std::uint64_t bit(unsigned feature_bit) {
    return std::uint64_t{1} << feature_bit;
}

// VIRTIO 1.2 §4.1.4: virtio structure PCI capabilities (vendor-specific, ID 0x09).
namespace pci_cap_type {
inline constexpr std::uint8_t common_cfg = 1;
inline constexpr std::uint8_t notify_cfg = 2;
inline constexpr std::uint8_t isr_cfg = 3;
inline constexpr std::uint8_t device_cfg = 4;
inline constexpr std::uint8_t pci_cfg = 5;
inline constexpr std::uint8_t shared_memory_cfg = 8;
inline constexpr std::uint8_t vendor_cfg = 9;
}  // namespace pci_cap_type

struct PciCap {
    std::uint8_t cap_vndr;  // 0x09
    std::uint8_t cap_next;
    std::uint8_t cap_len;
    std::uint8_t cfg_type;  // pci_cap_type
    std::uint8_t bar;
    std::uint8_t id;
    std::uint8_t padding[2];
    std::uint32_t offset;  // within the BAR
    std::uint32_t length;
};
static_assert(sizeof(PciCap) == 16);

// VIRTIO 1.2 §4.1.4.4: the notification capability adds a multiplier after struct virtio_pci_cap.
struct PciNotifyCap {
    PciCap cap;
    std::uint32_t notify_off_multiplier;
};
static_assert(sizeof(PciNotifyCap) == 20);

// VIRTIO 1.2 §4.1.5.1.2: "no vector" for config_msix_vector and queue_msix_vector.
inline constexpr std::uint16_t kNoVector = 0xffff;

// VIRTIO 1.2 §2.7.5: the descriptor table.
struct Descriptor {
    std::uint64_t addr;
    std::uint32_t len;
    std::uint16_t flags;
    std::uint16_t next;
};
static_assert(sizeof(Descriptor) == 16);
namespace desc_flag {
inline constexpr std::uint16_t next = 1;
inline constexpr std::uint16_t write = 2;  // device writes (otherwise reads)
inline constexpr std::uint16_t indirect = 4;
}  // namespace desc_flag

// VIRTIO 1.2 §2.7.6: the available ring: le16 flags, le16 idx, le16 ring[size], le16 used_event.
inline constexpr std::uint16_t kAvailNoInterrupt = 1;
constexpr std::size_t avail_ring_bytes(std::size_t size) {
    return 2 + 2 + 2 * size + 2;
}
// VIRTIO 1.2 §2.7.8: the used ring: le16 flags, le16 idx, UsedElement ring[size], le16 avail_event.
struct UsedElement {
    std::uint32_t id;   // head of the used descriptor chain
    std::uint32_t len;  // bytes the device wrote into it
};
static_assert(sizeof(UsedElement) == 8);
inline constexpr std::uint16_t kUsedNoNotify = 1;
constexpr std::size_t used_ring_bytes(std::size_t size) {
    return 2 + 2 + sizeof(UsedElement) * size + 2;
}
// VIRTIO 1.2 §2.7 (table "Virtqueue Part Alignment"): descriptor table 16, available ring 2,
// used ring 4 bytes.
inline constexpr std::size_t kDescriptorAlignment = 16;
inline constexpr std::size_t kAvailAlignment = 2;
inline constexpr std::size_t kUsedAlignment = 4;
// VIRTIO 1.2 §2.7: a split virtqueue has at most 32768 entries.
inline constexpr std::uint16_t kMaxQueueSize = 32768;

// VIRTIO 1.2 §2.7.10: vring_need_event: does moving the index from `old_idx` to `new_idx` pass
// the event index the other side asked to be told about?
constexpr bool need_event(std::uint16_t event_idx, std::uint16_t new_idx, std::uint16_t old_idx) {
    return static_cast<std::uint16_t>(new_idx - event_idx - 1) <
           static_cast<std::uint16_t>(new_idx - old_idx);
}

// ---- virtio-blk (VIRTIO 1.2 §5.2)
// ----------------------------------------------------------------

// §5.2.3: feature bits.
namespace blk_feature {
inline constexpr unsigned size_max = 1;
inline constexpr unsigned seg_max = 2;
inline constexpr unsigned geometry = 4;
inline constexpr unsigned ro = 5;
inline constexpr unsigned blk_size = 6;
inline constexpr unsigned flush = 9;
inline constexpr unsigned topology = 10;
inline constexpr unsigned config_wce = 11;
inline constexpr unsigned mq = 12;
inline constexpr unsigned discard = 13;
inline constexpr unsigned write_zeroes = 14;
inline constexpr unsigned lifetime = 15;
inline constexpr unsigned secure_erase = 16;
}  // namespace blk_feature

// §5.2.6: capacity and request sectors are always 512 bytes, whatever blk_size says.
inline constexpr std::uint32_t kSectorSize = 512;

// §5.2.6: a request is this header, the data, and one status byte the device writes.
struct BlkRequestHeader {
    std::uint32_t type;
    std::uint32_t reserved;
    std::uint64_t sector;
};
static_assert(sizeof(BlkRequestHeader) == 16);
namespace blk_type {
inline constexpr std::uint32_t in = 0;
inline constexpr std::uint32_t out = 1;
inline constexpr std::uint32_t flush = 4;
inline constexpr std::uint32_t get_id = 8;
inline constexpr std::uint32_t discard = 11;
inline constexpr std::uint32_t write_zeroes = 13;
}  // namespace blk_type
namespace blk_status {
inline constexpr std::uint8_t ok = 0;
inline constexpr std::uint8_t ioerr = 1;
inline constexpr std::uint8_t unsupp = 2;
}  // namespace blk_status

// §5.2.6: the data of a discard or write-zeroes request: one or more of these segments.
struct BlkDiscardWriteZeroes {
    std::uint64_t sector;
    std::uint32_t num_sectors;
    std::uint32_t flags;  // bit 0: unmap (write zeroes only)
};
static_assert(sizeof(BlkDiscardWriteZeroes) == 16);

// ---- virtio-net (VIRTIO 1.2 §5.1)
// ------------------------------------------------------------------

// §5.1.3: feature bits (the ones ring3 names; offloads it never negotiates are listed for logs).
namespace net_feature {
inline constexpr unsigned csum = 0;
inline constexpr unsigned guest_csum = 1;
inline constexpr unsigned ctrl_guest_offloads = 2;
inline constexpr unsigned mtu = 3;
inline constexpr unsigned mac = 5;
inline constexpr unsigned guest_tso4 = 7;
inline constexpr unsigned guest_tso6 = 8;
inline constexpr unsigned guest_ecn = 9;
inline constexpr unsigned guest_ufo = 10;
inline constexpr unsigned host_tso4 = 11;
inline constexpr unsigned host_tso6 = 12;
inline constexpr unsigned host_ecn = 13;
inline constexpr unsigned host_ufo = 14;
inline constexpr unsigned mrg_rxbuf = 15;
inline constexpr unsigned status = 16;
inline constexpr unsigned ctrl_vq = 17;
inline constexpr unsigned ctrl_rx = 18;
inline constexpr unsigned ctrl_vlan = 19;
inline constexpr unsigned ctrl_rx_extra = 20;
inline constexpr unsigned guest_announce = 21;
inline constexpr unsigned mq = 22;
inline constexpr unsigned ctrl_mac_addr = 23;
inline constexpr unsigned rss = 60;
inline constexpr unsigned speed_duplex = 63;
}  // namespace net_feature

// §5.1.4: the `status` field of the configuration.
inline constexpr std::uint16_t kNetStatusLinkUp = 1;
// §5.1.4: max_virtqueue_pairs lies in 1..0x8000 (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN..MAX).
inline constexpr std::uint16_t kNetMaxQueuePairs = 0x8000;

// §5.1.6: every frame is preceded by this header (its 12-byte form: with VIRTIO_F_VERSION_1
// num_buffers is always there). ring3 asks for no offload, so a transmitted header is all zeros
// and a received one is not needed.
struct NetHeader {
    std::uint8_t flags;
    std::uint8_t gso_type;
    std::uint16_t hdr_len;
    std::uint16_t gso_size;
    std::uint16_t csum_start;
    std::uint16_t csum_offset;
    std::uint16_t num_buffers;
};
static_assert(sizeof(NetHeader) == 12);

// §5.1.6.5: a control queue command is this header, the command's data (device-readable), and
// one ack byte the device writes.
struct NetControlHeader {
    std::uint8_t class_;
    std::uint8_t command;
};
static_assert(sizeof(NetControlHeader) == 2);
namespace net_ctrl {
inline constexpr std::uint8_t ok = 0;  // ack values (§5.1.6.5)
inline constexpr std::uint8_t err = 1;
inline constexpr std::uint8_t class_mq = 4;         // §5.1.6.5.5
inline constexpr std::uint8_t mq_vq_pairs_set = 0;  // data: le16 virtqueue_pairs
}  // namespace net_ctrl

}  // namespace ring3::virtio
