#include <fmt/core.h>

#include "ring3/block/open.hpp"
#include "ring3/core/error.hpp"
#include "ring3/nvme/block_device.hpp"

namespace ring3::block {

// Class code 01:08:02: mass storage, non-volatile memory controller, NVM Express (PCI Code and
// ID Assignment Specification §1.2).
constexpr std::uint32_t kNvmeClass = 0x010802;

std::unique_ptr<BlockDevice> open_block_device(std::string_view spec,
                                               const OpenBlockOptions& options) {
    auto device = open_device(spec, options.device);
    mark(options.timeline, "open device");
    const std::uint32_t class_code = device->class_code();
    if (class_code == kNvmeClass) {
        nvme::BlockOptions nvme_options;
        nvme_options.namespace_id = options.namespace_id;
        nvme_options.queues = options.queues;
        nvme_options.mode = options.mode;
        nvme_options.use_sgl = options.use_sgl;
        nvme_options.controller.timeline = options.timeline;
        if (options.dma_chunk_size != 0) {
            nvme_options.controller.arena.chunk_size = options.dma_chunk_size;
        }
        return std::make_unique<nvme::NvmeBlockDevice>(std::move(device), nvme_options);
    }
    throw Error::invalid("open block device", device->name(),
                         fmt::format("no block driver for class {:06x} [{:04x}:{:04x}]; ring3 "
                                     "drives NVMe (010802)",
                                     class_code, device->vendor_id(), device->device_id()),
                         ENODEV);
}

}  // namespace ring3::block
