#include <fmt/core.h>

#include <fcntl.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>

#include "ring3/broker/client.hpp"
#include "ring3/core/error.hpp"
#include "ring3/device/device.hpp"
#include "ring3/device/uio.hpp"
#include "ring3/device/vfio.hpp"
#include "ring3/device/vfio_user.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3 {
namespace {

// "vfio-fd:BDF,CONTAINER_FD,DEVICE_FD": a VFIO device another process opened and handed over
// (inherited across exec from `ring3 hold`, or received over a socket), its container's IOMMU
// already set up. The fds are taken over: closing the device closes them.
std::unique_ptr<Device> open_handed_over(std::string_view spec) {
    const auto fail = [&](const std::string& why) {
        return Error::invalid("open device", fmt::format("'{}'", spec),
                              why + "; expected vfio-fd:BDF,CONTAINER_FD,DEVICE_FD", EINVAL);
    };
    const std::string_view rest = spec.substr(8);
    const auto first = rest.find(',');
    const auto second = first == std::string_view::npos ? first : rest.find(',', first + 1);
    if (second == std::string_view::npos) {
        throw fail("the container and device fds are missing");
    }
    const pci::Address address = pci::Address::parse(rest.substr(0, first));
    const auto parse_fd = [&](std::string_view text, const char* which) {
        int fd = -1;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
        if (ec != std::errc() || end != text.data() + text.size() || fd < 0) {
            throw fail(fmt::format("the {} fd '{}' is not a number", which, text));
        }
        if (::fcntl(fd, F_GETFD) < 0) {
            throw Error::from_errno(fmt::format("use the handed-over {} fd {} of", which, fd),
                                    std::string(spec));
        }
        return UniqueFd(fd);
    };
    UniqueFd container_fd = parse_fd(rest.substr(first + 1, second - first - 1), "container");
    UniqueFd device_fd = parse_fd(rest.substr(second + 1), "device");
    auto container = vfio::Container::adopt(std::move(container_fd), 0, UniqueFd());
    return vfio::adopt(address, std::move(container), std::move(device_fd));
}

}  // namespace

std::unique_ptr<Device> open_device(std::string_view spec, const OpenOptions& options) {
    const auto starts_with = [&](std::string_view prefix) {
        return spec.substr(0, prefix.size()) == prefix;
    };
    if (starts_with("ring3d:")) {
        // Claimed from the I/O server: no access to /dev/vfio or sysfs needed here.
        const pci::Address address = pci::Address::parse(spec.substr(7));
        broker::Claim claim = broker::Client().claim(address);
        auto container = vfio::Container::adopt(std::move(claim.container), 0, UniqueFd());
        return vfio::adopt(address, std::move(container), std::move(claim.device),
                           std::move(claim.lease));
    }
    if (starts_with("vfio:")) {
        return vfio::open(pci::Address::parse(spec.substr(5)), options);
    }
    if (starts_with("uio:")) {
        return uio::open(pci::Address::parse(spec.substr(4)), options);
    }
    if (starts_with("vfio-fd:")) {
        return open_handed_over(spec);
    }
    if (starts_with("vfio-user:")) {
        const std::string path(spec.substr(10));
        if (path.empty()) {
            throw Error::invalid("open device", fmt::format("'{}'", spec),
                                 "no socket path; expected vfio-user:/path/to/socket", EINVAL);
        }
        vfio_user::ClientOptions client;
        const char* env = std::getenv("RING3_VFIO_USER_RECONNECT");
        client.reconnect =
            options.vfio_user_reconnect || (env != nullptr && env == std::string("1"));
        return vfio_user::open(path, client);
    }
    if (spec.find('/') != std::string_view::npos) {
        throw Error::invalid("open device", fmt::format("'{}'", spec),
                             "unknown kind of device; give vfio:BDF, uio:BDF, ring3d:BDF, "
                             "vfio-user:/path/to/socket or a bare BDF",
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
