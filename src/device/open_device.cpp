#include <fmt/core.h>

#include <cerrno>

#include "ring3/core/error.hpp"
#include "ring3/device/device.hpp"
#include "ring3/device/uio.hpp"
#include "ring3/device/vfio.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3 {

std::unique_ptr<Device> open_device(std::string_view spec, const OpenOptions& options) {
    const auto starts_with = [&](std::string_view prefix) {
        return spec.substr(0, prefix.size()) == prefix;
    };
    if (starts_with("vfio:")) {
        return vfio::open(pci::Address::parse(spec.substr(5)), options);
    }
    if (starts_with("uio:")) {
        return uio::open(pci::Address::parse(spec.substr(4)), options);
    }
    if (spec.find('/') != std::string_view::npos || starts_with("vfio-user:")) {
        throw Error::invalid("open device", fmt::format("'{}'", spec),
                             "unknown kind of device; give vfio:BDF, uio:BDF or a bare BDF",
                             EINVAL);
    }
    // A bare BDF: whatever user-space driver the device is bound to.
    const pci::Address address = pci::Address::parse(spec);
    const pci::Sysfs sysfs(options.sysfs_root);
    const std::string driver = sysfs.driver(address);
    if (driver == "vfio-pci") {
        return vfio::open(address, options);
    }
    if (driver == "uio_pci_generic") {
        return uio::open(address, options);
    }
    throw Error::invalid(
        "open device", address.to_string(),
        fmt::format("{}; give it to a user-space driver first: `ring3 bind {} vfio-pci` (with an "
                    "IOMMU) or `ring3 bind {} uio_pci_generic` (without one)",
                    driver.empty()
                        ? std::string("the device is bound to no driver")
                        : fmt::format("the device is bound to kernel driver '{}'", driver),
                    address.to_string(), address.to_string()),
        ENODEV);
}

}  // namespace ring3
