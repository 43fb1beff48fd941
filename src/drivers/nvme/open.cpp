#include "ring3/nvme/open.hpp"

#include "ring3/nvme/block_device.hpp"

namespace ring3::nvme {

std::unique_ptr<block::BlockDevice> open_block(std::unique_ptr<Device> device,
                                               const block::OpenBlockOptions& options) {
    BlockOptions nvme_options;
    nvme_options.namespace_id = options.namespace_id;
    nvme_options.queues = options.queues;
    nvme_options.mode = options.mode;
    nvme_options.use_sgl = options.use_sgl;
    nvme_options.controller.timeline = options.timeline;
    if (options.io_timeout.count() > 0) {
        nvme_options.io_timeout = options.io_timeout;
    }
    if (options.dma_chunk_size != 0) {
        nvme_options.controller.arena.chunk_size = options.dma_chunk_size;
    }
    return std::make_unique<NvmeBlockDevice>(std::move(device), nvme_options);
}

}  // namespace ring3::nvme
