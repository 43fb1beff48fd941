#include "ring3/pci/bind.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "in_use.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/file.hpp"
#include "ring3/core/log.hpp"
#include "ring3/core/unique_fd.hpp"
#include "text.hpp"

extern char** environ;

namespace ring3::pci {
namespace {

bool path_exists(const std::string& path) noexcept {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

bool valid_driver_name(std::string_view name) {
    if (name.empty() || name.size() > 64 || name == "." || name == "..") {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
    });
}

// driver_override reads "(null)" when unset.
std::string read_override(const std::string& device_dir) {
    const auto text = read_optional_file(device_dir + "/driver_override");
    if (!text) {
        throw Error::invalid("read", device_dir + "/driver_override",
                             "this kernel has no driver_override (Linux 3.16 or later needed)",
                             ENOTSUP);
    }
    const std::string value = trim(*text);
    return value == "(null)" ? std::string() : value;
}

std::string bdf_of(const Address& address) {
    return address.to_string();
}

void default_write_attribute(const std::string& path, std::string_view value) {
    // O_TRUNC changes nothing for a sysfs attribute (each write(2) replaces the value) and makes
    // a fake tree of regular files behave the same way.
    const UniqueFd fd = UniqueFd::open(path, O_WRONLY | O_TRUNC);
    ssize_t n = 0;
    do {
        n = ::write(fd.get(), value.data(), value.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        throw Error::from_errno(fmt::format("write '{}' to", trim(value)), path);
    }
}

}  // namespace

// ---- modprobe ----------------------------------------------------------------------------------

void run_modprobe(const std::string& name, std::chrono::milliseconds timeout) {
    const std::string what = "modprobe " + name;
    std::string program = "modprobe";
    for (const char* candidate : {"/usr/sbin/modprobe", "/sbin/modprobe"}) {
        if (::access(candidate, X_OK) == 0) {
            program = candidate;
            break;
        }
    }
    std::string arg0 = "modprobe";
    std::string arg1 = name;
    char* argv[] = {arg0.data(), arg1.data(), nullptr};
    pid_t pid = 0;
    const int rc = ::posix_spawnp(&pid, program.c_str(), nullptr, nullptr, argv, environ);
    if (rc != 0) {
        throw Error("run", what, rc);
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    for (;;) {
        const pid_t done = ::waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            break;
        }
        if (done < 0 && errno != EINTR) {
            throw Error::from_errno("wait for", what);
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            throw Error::invalid("run", what,
                                 fmt::format("no answer after {} ms; killed", timeout.count()),
                                 ETIMEDOUT);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return;
    }
    const std::string how = WIFEXITED(status)
                                ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                : fmt::format("killed by signal {}", WTERMSIG(status));
    throw Error::invalid("run", what, how + " (its message is above)", EIO);
}

// ---- DriverBinder ------------------------------------------------------------------------------

DriverBinder::DriverBinder(BindEnvironment environment)
    : env_(std::move(environment)), sysfs_(env_.sysfs_root) {
    if (!env_.write_attribute) {
        env_.write_attribute = default_write_attribute;
    }
    if (!env_.load_module) {
        if (env_.sysfs_root == "/sys") {
            env_.load_module = [timeout = env_.module_load_timeout](const std::string& name) {
                run_modprobe(name, timeout);
            };
        } else {
            env_.load_module = [root = env_.sysfs_root](const std::string& name) {
                throw Error::invalid(
                    "modprobe", name,
                    fmt::format("not run for a sysfs root other than /sys ({})", root), ENOENT);
            };
        }
    }
}

std::string DriverBinder::device_dir(const Address& address) const {
    return sysfs_.device_path(address).string();
}

std::vector<DeviceUse> DriverBinder::find_uses(const Address& address) const {
    return find_device_uses(device_dir(address), bdf_of(address), env_);
}

void DriverBinder::refuse_if_in_use(const Address& address, std::string_view action) const {
    const auto uses = find_uses(address);
    if (uses.empty()) {
        return;
    }
    std::string list;
    for (const auto& use : uses) {
        list += list.empty() ? "" : "; ";
        list += use.description;
    }
    throw Error::invalid(std::string(action), bdf_of(address),
                         fmt::format("the device is in use: {}; --force overrides", list), EBUSY);
}

void DriverBinder::ensure_driver_registered(const std::string& driver) const {
    const std::string dir = env_.sysfs_root + "/bus/pci/drivers/" + driver;
    if (driver == "vfio-pci" && !path_exists(env_.sysfs_root + "/module/vfio_iommu_type1")) {
        // vfio-pci is useless without the type 1 IOMMU backend, which kmod loads through a
        // softdep of vfio; busybox's modprobe ignores softdeps, so load it by name.
        try {
            env_.load_module("vfio_iommu_type1");
        } catch (const Error& e) {
            log_warn(
                "vfio_iommu_type1 is not loaded and loading it failed ({}); opening the "
                "device through VFIO will fail until it is",
                e.what());
        }
    }
    if (path_exists(dir)) {
        return;
    }
    log_info("driver {} is not registered; loading it with modprobe", driver);
    try {
        env_.load_module(driver);
    } catch (const Error& e) {
        throw Error(
            "load driver", driver, e.errnum(),
            fmt::format("no PCI driver of that name is registered (see {}/bus/pci/drivers), and "
                        "loading it failed: {}",
                        env_.sysfs_root, e.what()));
    }
    if (!path_exists(dir)) {
        throw Error::invalid(
            "load driver", driver,
            fmt::format("no PCI driver of that name appeared in {}/bus/pci/drivers "
                        "(names as listed there, e.g. vfio-pci, uio_pci_generic, "
                        "nvme)",
                        env_.sysfs_root),
            ENOENT);
    }
}

void DriverBinder::write(const std::string& path, std::string_view value) const {
    log_debug("write '{}' to {}", trim(value), path);
    env_.write_attribute(path, value);
}

void DriverBinder::detach(const Address& address, const std::string& driver) const {
    const std::string bdf = bdf_of(address);
    // The write returns once the driver's remove() has finished; vfio-pci's waits until the
    // program using the device lets go.
    write(env_.sysfs_root + "/bus/pci/drivers/" + driver + "/unbind", bdf);
    if (const auto still = sysfs_.driver(address); !still.empty()) {
        throw Error::invalid("unbind", bdf,
                             fmt::format("still bound to {} after writing {} to {}'s unbind file",
                                         still, bdf, driver),
                             EBUSY);
    }
}

std::string DriverBinder::wait_for_driver(const Address& address) const {
    const auto deadline = std::chrono::steady_clock::now() + env_.probe_settle;
    for (;;) {
        auto driver = sysfs_.driver(address);
        if (!driver.empty() || std::chrono::steady_clock::now() >= deadline) {
            return driver;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

std::vector<std::string> DriverBinder::group_warnings(const Address& address,
                                                      const std::string& driver) const {
    const auto number = sysfs_.iommu_group_number(address);
    if (!number) {
        return {};
    }
    const auto group = sysfs_.iommu_group(*number);
    std::string others;
    for (const auto& member : group.members_on_kernel_drivers()) {
        if (member.address == address) {
            continue;
        }
        others += fmt::format("{}{} ({})", others.empty() ? "" : ", ", member.name, member.driver);
    }
    if (others.empty()) {
        return {};
    }
    if (driver == "vfio-pci") {
        return {
            fmt::format("IOMMU group {} of {} will not be viable for VFIO (opening it fails "
                        "with EBUSY) until its other members are bound to vfio-pci or "
                        "unbound: {}",
                        *number, bdf_of(address), others)};
    }
    return {
        fmt::format("{} shares IOMMU group {} with devices on kernel drivers, so the IOMMU "
                    "does not isolate it from them: {}",
                    bdf_of(address), *number, others)};
}

BindReport DriverBinder::bind(const Address& address, const std::string& driver, bool force) const {
    const std::string bdf = bdf_of(address);
    const std::string object = fmt::format("{} to {}", bdf, driver);
    if (!valid_driver_name(driver)) {
        throw Error::invalid("bind", object,
                             "a driver name is letters, digits, '_', '-' and '.' (as listed in "
                             "/sys/bus/pci/drivers)");
    }
    const std::string dir = device_dir(address);

    BindReport report;
    report.previous_driver = sysfs_.driver(address);
    report.driver = report.previous_driver;
    if (report.previous_driver == driver) {
        return report;
    }
    const std::string previous_override = read_override(dir);

    // ---- checks: nothing below writes to sysfs until all of them have passed ----
    if (!force) {
        refuse_if_in_use(address, "bind");
    }
    ensure_driver_registered(driver);
    const bool has_group = sysfs_.iommu_group_number(address).has_value();
    if (driver == "vfio-pci" && !has_group) {
        const auto noiommu = read_optional_file(
            env_.sysfs_root + "/module/vfio/parameters/enable_unsafe_noiommu_mode");
        if (!(noiommu && trim(*noiommu) == "Y")) {
            throw Error::invalid(
                "bind", object,
                fmt::format("{} has no IOMMU group, so vfio-pci's probe would fail: vfio-pci "
                            "needs an IOMMU (intel_iommu=on / amd_iommu=on on the kernel "
                            "command line, VT-d/AMD-Vi enabled in firmware); without one use "
                            "uio_pci_generic",
                            bdf),
                ENODEV);
        }
    }
    report.warnings = group_warnings(address, driver);

    // ---- changes ----
    // driver_override first: from then on only `driver` may take the device, so nothing else
    // grabs it between the unbind and the probe.
    write(dir + "/driver_override", driver + "\n");
    const auto restore_override = [&]() noexcept {
        try {
            write(dir + "/driver_override", previous_override + "\n");
        } catch (const std::exception& e) {
            log_warn("could not restore driver_override of {}: {}", bdf, e.what());
        }
    };
    if (!report.previous_driver.empty()) {
        try {
            detach(address, report.previous_driver);
        } catch (const Error&) {
            restore_override();
            throw;
        }
        report.changed = true;
        report.driver.clear();
    }
    try {
        write(env_.sysfs_root + "/bus/pci/drivers_probe", bdf);
    } catch (const Error& e) {
        // drivers_probe fails only when the device is going away; the link check says the rest.
        log_warn("{}", e.what());
    }
    report.driver = wait_for_driver(address);
    if (report.driver == driver) {
        report.changed = true;
        return report;
    }

    restore_override();
    std::string hint;
    if (driver == "vfio-pci" && !has_group) {
        hint =
            " vfio-pci needs an IOMMU (intel_iommu=on / amd_iommu=on); without one use "
            "uio_pci_generic.";
    } else if (driver == "uio_pci_generic") {
        hint =
            " uio_pci_generic takes only devices with an INTx pin whose interrupt can be "
            "masked with the PCI 2.3 Interrupt Disable bit.";
    }
    const std::string now = report.driver.empty()
                                ? std::string("It is now bound to no driver")
                                : fmt::format("It is now bound to {}", report.driver);
    const std::string back =
        report.previous_driver.empty()
            ? std::string()
            : fmt::format("; `ring3 bind {} {}` gives it back", bdf, report.previous_driver);
    throw Error::invalid("bind", object,
                         fmt::format("the probe by {} failed (writing drivers_probe succeeded, but "
                                     "the device's driver link does not point to {}); `dmesg | "
                                     "tail` shows the driver's reason.{} {}{}.",
                                     driver, driver, hint, now, back),
                         ENODEV);
}

BindReport DriverBinder::unbind(const Address& address, bool force) const {
    const std::string dir = device_dir(address);
    BindReport report;
    report.previous_driver = sysfs_.driver(address);
    report.driver = report.previous_driver;
    const std::string override_value = read_override(dir);
    if (!report.previous_driver.empty() && !force) {
        refuse_if_in_use(address, "unbind");
    }
    if (!report.previous_driver.empty()) {
        detach(address, report.previous_driver);
        report.driver.clear();
        report.changed = true;
    }
    if (!override_value.empty()) {
        // An empty string clears the override (sysfs-bus-pci, driver_override).
        write(dir + "/driver_override", "\n");
        report.changed = true;
        report.cleared_override = override_value;
    }
    return report;
}

}  // namespace ring3::pci
