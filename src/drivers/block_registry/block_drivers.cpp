// The block face's driver list, explicit (see include/ring3/block/registry.hpp), and
// open_block_device(spec) over it. This library sits above the drivers; the drivers and the
// block layer know nothing of it.
#include "ring3/block/open.hpp"
#include "ring3/block/registry.hpp"
#include "ring3/core/timeline.hpp"
#include "ring3/nvme/open.hpp"
#include "ring3/virtio/blk.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::block {
namespace {

const DriverEntry kDrivers[] = {
    {"NVMe", kAnyId, kAnyId, nvme::kNvmeClass, 0xffffff, &nvme::open_block, ""},
    // virtio-blk: the modern id (VIRTIO 1.2 §4.1.2.1), class 01:00 (mass storage, SCSI) as QEMU
    // gives it; the transitional id too, so that a legacy-only device hears why it is refused.
    {"virtio-blk", virtio::kVendorId, virtio::kBlockModernDeviceId, 0x010000, 0xffff00,
     &virtio::open_blk, "modern"},
    {"virtio-blk", virtio::kVendorId, virtio::kBlockTransitionalDeviceId, 0x010000, 0xffff00,
     &virtio::open_blk, "transitional, with its modern interface"},
};

}  // namespace

std::span<const DriverEntry> block_drivers() noexcept {
    return kDrivers;
}

std::unique_ptr<BlockDevice> open_block_device(std::string_view spec,
                                               const OpenBlockOptions& options) {
    auto device = open_device(spec, options.device);
    mark(options.timeline, "open device");
    return open_block_device(std::move(device), block_drivers(), options);
}

}  // namespace ring3::block
