// A device region as a pci::RegionAccess (bounds-checked typed reads and writes), whatever the
// backend: mapped when the backend can map it, else through the backend's read/write calls.
#pragma once

#include <memory>

#include "ring3/device/device.hpp"
#include "ring3/pci/bar.hpp"

namespace ring3 {

// `device` must outlive the result when the region is not mapped.
std::unique_ptr<pci::RegionAccess> open_region_access(Device& device, unsigned index,
                                                      MapMode mode = MapMode::uncached);

}  // namespace ring3
