// Opening a block device by spec: the PCI device spec of include/ring3/device/device.hpp
// (vfio:BDF, uio:BDF, a bare BDF), with the driver chosen by the registry
// (include/ring3/block/registry.hpp) from the device's vendor, device and class: NVMe by class
// 01:08:02, virtio-blk by 1af4:1042. Implemented in ring3_block_drivers
// (src/drivers/block_registry), which holds the explicit list.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string_view>

#include "ring3/block/block_device.hpp"
#include "ring3/core/timeline.hpp"
#include "ring3/device/device.hpp"

namespace ring3::block {

struct OpenBlockOptions {
    std::uint32_t namespace_id = 1;            // NVMe namespace
    unsigned queues = 1;                       // I/O queues to set up (each opened with open_queue)
    irq::WaitMode mode = irq::WaitMode::poll;  // interrupt vectors are set up unless poll
    bool use_sgl = true;  // NVMe: SGL data pointers when the controller offers them, else PRPs
    // The DMA arena grows in chunks of this many bytes (0: the driver's default). A data buffer
    // must fit in one chunk; smaller chunks map less memory for the device. Rounded up to 2 MiB
    // when the arena gets hugepages.
    std::size_t dma_chunk_size = 0;
    // Start-up steps are marked on it when given (open device, DMA arena, controller enable, ...).
    Timeline* timeline = nullptr;
    // A request in flight longer than this starts the driver's recovery (0: the driver's own
    // default, NVMe 30 s).
    std::chrono::milliseconds io_timeout{0};
    OpenOptions device;
};

std::unique_ptr<BlockDevice> open_block_device(std::string_view spec,
                                               const OpenBlockOptions& options = {});

struct DriverEntry;
// Every block driver ring3 has, in the order they are tried (ring3_block_drivers).
std::span<const DriverEntry> block_drivers() noexcept;

}  // namespace ring3::block
