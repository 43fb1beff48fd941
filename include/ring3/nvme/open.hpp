// The NVMe driver's factory for the block face's registry (include/ring3/block/registry.hpp).
#pragma once

#include <memory>

#include "ring3/block/block_device.hpp"
#include "ring3/block/open.hpp"
#include "ring3/device/device.hpp"

namespace ring3::nvme {

// Class code 01:08:02: mass storage, non-volatile memory controller, NVM Express (PCI Code and
// ID Assignment Specification §1.2).
inline constexpr std::uint32_t kNvmeClass = 0x010802;

std::unique_ptr<block::BlockDevice> open_block(std::unique_ptr<Device> device,
                                               const block::OpenBlockOptions& options);

}  // namespace ring3::nvme
