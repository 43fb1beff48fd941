// Virtio PCI transport and virtio-blk registers (VIRTIO 1.2), as typed declarations. Offsets are
// relative to the window the capability points at (common cfg, ISR, device cfg), not to the BAR.
// Multi-byte fields are accessed with their natural width; 64-bit fields as two 32-bit halves,
// low first (§4.1.3.1).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ring3/mmio/register.hpp"

namespace ring3::virtio::reg {

// VIRTIO 1.2 §4.1.4.3: common configuration structure layout (struct virtio_pci_common_cfg).
struct DeviceFeatureSelect : mmio::Register<0x00, std::uint32_t> {};
struct DeviceFeature : mmio::Register<0x04, std::uint32_t> {};  // read-only, 32 bits per select
struct DriverFeatureSelect : mmio::Register<0x08, std::uint32_t> {};
struct DriverFeature : mmio::Register<0x0c, std::uint32_t> {};
struct ConfigMsixVector : mmio::Register<0x10, std::uint16_t> {};
struct NumQueues : mmio::Register<0x12, std::uint16_t> {};  // read-only
struct DeviceStatus : mmio::Register<0x14, std::uint8_t> {  // §2.1
    using Failed = Field<7, 7>;
    using DeviceNeedsReset = Field<6, 6>;
    using FeaturesOk = Field<3, 3>;
    using DriverOk = Field<2, 2>;
    using Driver = Field<1, 1>;
    using Acknowledge = Field<0, 0>;
};
struct ConfigGeneration : mmio::Register<0x15, std::uint8_t> {};  // read-only
// Per queue, for the queue named by QueueSelect:
struct QueueSelect : mmio::Register<0x16, std::uint16_t> {};
struct QueueSize : mmio::Register<0x18, std::uint16_t> {};  // the device's maximum; 0: no queue
struct QueueMsixVector : mmio::Register<0x1a, std::uint16_t> {};
struct QueueEnable : mmio::Register<0x1c, std::uint16_t> {};
struct QueueNotifyOff : mmio::Register<0x1e, std::uint16_t> {};  // read-only
struct QueueDescLow : mmio::Register<0x20, std::uint32_t> {};
struct QueueDescHigh : mmio::Register<0x24, std::uint32_t> {};
struct QueueDriverLow : mmio::Register<0x28, std::uint32_t> {};  // the available ring
struct QueueDriverHigh : mmio::Register<0x2c, std::uint32_t> {};
struct QueueDeviceLow : mmio::Register<0x30, std::uint32_t> {};  // the used ring
struct QueueDeviceHigh : mmio::Register<0x34, std::uint32_t> {};
// The VIRTIO 1.0 part of the structure, which every modern device has (1.2 adds
// queue_notify_data at 0x38 and queue_reset at 0x3a, which ring3 does not use).
inline constexpr std::size_t kCommonConfigSize = 0x38;

// VIRTIO 1.2 §4.1.4.5: ISR status (read clears it; used with INTx only).
struct IsrStatus : mmio::Register<0x0, std::uint8_t> {
    using DeviceConfigurationInterrupt = Field<1, 1>;
    using QueueInterrupt = Field<0, 0>;
};

// VIRTIO 1.2 §4.1.4.4: a queue's notification address is the notify window plus
// queue_notify_off * notify_off_multiplier; the driver writes the queue's index there (16 bits,
// without VIRTIO_F_NOTIFICATION_DATA).
constexpr std::size_t notify_offset(std::uint16_t queue_notify_off, std::uint32_t multiplier) {
    return std::size_t{queue_notify_off} * multiplier;
}

// VIRTIO 1.2 §5.2.4: virtio-blk device configuration layout (struct virtio_blk_config). Fields
// exist only with their feature; capacity always.
namespace blk {
struct CapacityLow : mmio::Register<0x00, std::uint32_t> {};  // in 512-byte sectors
struct CapacityHigh : mmio::Register<0x04, std::uint32_t> {};
struct SizeMax : mmio::Register<0x08, std::uint32_t> {};            // VIRTIO_BLK_F_SIZE_MAX
struct SegMax : mmio::Register<0x0c, std::uint32_t> {};             // VIRTIO_BLK_F_SEG_MAX
struct BlkSize : mmio::Register<0x14, std::uint32_t> {};            // VIRTIO_BLK_F_BLK_SIZE
struct Writeback : mmio::Register<0x20, std::uint8_t> {};           // VIRTIO_BLK_F_CONFIG_WCE
struct NumQueues : mmio::Register<0x22, std::uint16_t> {};          // VIRTIO_BLK_F_MQ
struct MaxDiscardSectors : mmio::Register<0x24, std::uint32_t> {};  // VIRTIO_BLK_F_DISCARD
struct MaxDiscardSeg : mmio::Register<0x28, std::uint32_t> {};
struct DiscardSectorAlignment : mmio::Register<0x2c, std::uint32_t> {};
struct MaxWriteZeroesSectors : mmio::Register<0x30, std::uint32_t> {};  // VIRTIO_BLK_F_WRITE_ZEROES
struct MaxWriteZeroesSeg : mmio::Register<0x34, std::uint32_t> {};
struct WriteZeroesMayUnmap : mmio::Register<0x38, std::uint8_t> {};
inline constexpr std::size_t kConfigSizeBasic = 0x18;  // through blk_size
}  // namespace blk

// VIRTIO 1.2 §5.1.4: virtio-net device configuration layout (struct virtio_net_config). Each field
// exists with its feature: mac (MAC), status (STATUS), max_virtqueue_pairs (MQ), mtu (MTU),
// speed and duplex (SPEED_DUPLEX).
namespace net {
inline constexpr std::size_t kMacOffset = 0x00;  // 6 bytes, read byte by byte
struct Status : mmio::Register<0x06, std::uint16_t> {};
struct MaxVirtqueuePairs : mmio::Register<0x08, std::uint16_t> {};
struct Mtu : mmio::Register<0x0a, std::uint16_t> {};
struct Speed : mmio::Register<0x0c, std::uint32_t> {};  // Mbit/s; 0xffffffff: unknown
struct Duplex : mmio::Register<0x10, std::uint8_t> {};  // 1 full, 0 half, 0xff unknown
}  // namespace net

}  // namespace ring3::virtio::reg
