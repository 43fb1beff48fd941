// In-use detection, the part of DriverBinder (bind.hpp) that reads mounts, swaps, block device
// holders and interface flags. Internal to ring3_pci.
#pragma once

#include <string>
#include <vector>

#include "ring3/pci/bind.hpp"

namespace ring3::pci {

// What DriverBinder::find_uses returns for the device whose sysfs directory is `dir` (`bdf`
// names it in errors). Holders are looked up under env.sysfs_root/class/block, mounts and
// swaps under env.proc_root; throws when <proc>/self/mountinfo cannot be read or the directory
// cannot be walked.
std::vector<DeviceUse> find_device_uses(const std::string& dir, const std::string& bdf,
                                        const BindEnvironment& env);

}  // namespace ring3::pci
