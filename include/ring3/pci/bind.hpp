// Moving a PCI device between drivers through sysfs, and telling whether it is in use first.
//
// The kernel's interface (Documentation/ABI/testing/sysfs-bus-pci):
//   /sys/bus/pci/devices/BDF/driver_override  only the named driver may bind the device; an empty
//                                             string (a lone newline) clears it;
//   /sys/bus/pci/drivers/NAME/unbind          writing BDF detaches it from that driver;
//   /sys/bus/pci/drivers_probe                writing BDF asks every driver to probe it;
//   /sys/bus/pci/devices/BDF/driver           symlink to the bound driver, absent when unbound.
// Writing drivers_probe succeeds even when the probe fails (REFERENCE.md), so every step is
// confirmed by reading the `driver` link back.
//
// Policy (what `ring3 bind` and `ring3 unbind` do):
//   bind BDF DRIVER: refuse a device in use (mounted or swapped-on block device, a holder such as
//     dm or md, an interface that is up) unless forced; load DRIVER with modprobe when it is not
//     registered; for vfio-pci, refuse up front a device with no IOMMU group (the probe would fail
//     after the old driver was gone); set driver_override to DRIVER, unbind the old driver, probe,
//     and check the link. The override stays set, so the device keeps DRIVER across re-probes
//     until `ring3 unbind` or another bind. When the probe fails, the override is cleared again
//     and the device is left with no driver; the error names the device and driver, says how to
//     give it back to its old driver, and points at dmesg.
//   unbind BDF: the same in-use refusal; detach the driver, then clear driver_override. The device
//     then stays without a driver until something probes it (`ring3 bind BDF DRIVER`, or writing
//     BDF to drivers_probe, which gives it to the driver whose ID table matches, e.g. nvme).
// Every check runs before the first write to sysfs: a refusal changes nothing.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/pci/address.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3::pci {

// Something that makes a device unsafe to take from its driver.
struct DeviceUse {
    enum class Kind { mount, swap, holder, interface_up };
    Kind kind = Kind::mount;
    std::string description;  // "block device vda (254:0) is mounted on /"
};

struct BindReport {
    std::string previous_driver;  // empty: none
    std::string driver;           // after the operation; empty: none
    bool changed = false;
    std::string cleared_override;       // unbind: the driver_override value it cleared
    std::vector<std::string> warnings;  // IOMMU group members that are not isolated
};

// Where the binder looks and how it acts on the system. Tests replace all of it: a fake sysfs and
// proc tree, a writer that also plays the kernel's part, a module loader that registers a driver.
struct BindEnvironment {
    std::string sysfs_root = "/sys";
    std::string proc_root = "/proc";
    // One write(2) of `value` to the sysfs attribute at `path`; default: open O_WRONLY, write,
    // throw ring3::Error with the kernel's errno.
    std::function<void(const std::string& path, std::string_view value)> write_attribute;
    // Makes driver `name` available; default: `modprobe NAME` via posix_spawn, killed after
    // module_load_timeout. Not called when sysfs_root is not "/sys" and no loader was given.
    std::function<void(const std::string& name)> load_module;
    std::chrono::milliseconds module_load_timeout{30'000};
    // How long to wait for the `driver` link to appear after drivers_probe (a driver with
    // asynchronous probing may bind a little later); polled every 10 ms.
    std::chrono::milliseconds probe_settle{1'000};
};

class DriverBinder {
  public:
    explicit DriverBinder(BindEnvironment environment = {});

    // Everything that makes the device busy: block devices in its sysfs subtree that are mounted
    // (per <proc>/self/mountinfo and <proc>/1/mountinfo), swapped on (<proc>/swaps), or held by
    // another block device (dm, md; followed recursively), and network interfaces that are up.
    std::vector<DeviceUse> find_uses(const Address& address) const;

    BindReport bind(const Address& address, const std::string& driver, bool force = false) const;
    BindReport unbind(const Address& address, bool force = false) const;

    const BindEnvironment& environment() const noexcept { return env_; }

  private:
    std::string device_dir(const Address& address) const;  // throws when there is no device
    void refuse_if_in_use(const Address& address, std::string_view action) const;
    void ensure_driver_registered(const std::string& driver) const;
    void write(const std::string& path, std::string_view value) const;
    void detach(const Address& address, const std::string& driver) const;
    std::string wait_for_driver(const Address& address) const;
    std::vector<std::string> group_warnings(const Address& address,
                                            const std::string& driver) const;

    BindEnvironment env_;
    Sysfs sysfs_;
};

// `modprobe NAME` with posix_spawn; waits at most `timeout`, then kills it. Throws ring3::Error
// when it cannot be started, fails, or times out.
void run_modprobe(const std::string& name, std::chrono::milliseconds timeout);

}  // namespace ring3::pci
