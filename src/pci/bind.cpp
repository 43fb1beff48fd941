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
#include <filesystem>
#include <optional>
#include <set>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/core/unique_fd.hpp"

extern char** environ;

namespace ring3::pci {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kIffUp = 0x1;  // IFF_UP, include/uapi/linux/if.h

bool path_exists(const std::string& path) noexcept {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

// The whole file, or nullopt when it does not exist; other failures throw.
std::optional<std::string> read_optional_file(const std::string& path) {
    const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (raw < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return std::nullopt;
        }
        throw Error::from_errno("open", path);
    }
    const UniqueFd fd(raw);
    std::string text;
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw Error::from_errno("read", path);
        }
        if (n == 0) {
            return text;
        }
        text.append(buffer, static_cast<std::size_t>(n));
    }
}

std::string trim(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.remove_suffix(1);
    }
    while (!text.empty() && text.front() == ' ') {
        text.remove_prefix(1);
    }
    return std::string(text);
}

// Basename of a symlink's target, or nullopt when `path` is not a symlink.
std::optional<std::string> link_basename(const std::string& path) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(path, ec);
    if (ec) {
        return std::nullopt;
    }
    return target.filename().string();
}

std::vector<std::string> split_lines(std::string_view text) {
    std::vector<std::string> lines;
    while (!text.empty()) {
        const auto newline = text.find('\n');
        lines.emplace_back(text.substr(0, newline));
        text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    }
    return lines;
}

std::vector<std::string_view> split_fields(std::string_view line) {
    std::vector<std::string_view> fields;
    while (!line.empty()) {
        const auto start = line.find_first_not_of(" \t");
        if (start == std::string_view::npos) {
            break;
        }
        line.remove_prefix(start);
        const auto end = line.find_first_of(" \t");
        fields.push_back(line.substr(0, end));
        line.remove_prefix(end == std::string_view::npos ? line.size() : end);
    }
    return fields;
}

// mountinfo and swaps escape space, tab, newline and backslash as \ooo (octal).
std::string unescape_octal(std::string_view text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 3 < text.size()) {
            const auto is_octal = [](char c) { return c >= '0' && c <= '7'; };
            if (is_octal(text[i + 1]) && is_octal(text[i + 2]) && is_octal(text[i + 3])) {
                out += static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 +
                                         (text[i + 3] - '0'));
                i += 3;
                continue;
            }
        }
        out += text[i];
    }
    return out;
}

struct Mount {
    std::string device_number;  // "254:0"
    std::string mount_point;
    std::string source;  // "/dev/vda1"
};

// proc(5), /proc/pid/mountinfo: "id parent major:minor root mount-point options [optional...]
// - fstype source super-options".
std::vector<Mount> parse_mountinfo(std::string_view text) {
    std::vector<Mount> mounts;
    for (const auto& line : split_lines(text)) {
        const auto fields = split_fields(line);
        if (fields.size() < 5) {
            continue;
        }
        Mount mount{std::string(fields[2]), unescape_octal(fields[4]), {}};
        for (std::size_t i = 5; i + 2 < fields.size(); ++i) {
            if (fields[i] == "-") {
                mount.source = unescape_octal(fields[i + 2]);
                break;
            }
        }
        mounts.push_back(std::move(mount));
    }
    return mounts;
}

// One block device in the device's subtree, or a holder reached from one.
struct BlockDevice {
    std::string name;           // "vda1", "dm-0"
    std::string device_number;  // "254:1"
    std::string dir;            // its sysfs directory
    std::string mapper_name;    // dm/name for device-mapper devices
};

BlockDevice read_block_device(const std::string& dir) {
    BlockDevice block;
    block.dir = dir;
    block.name = fs::path(dir).filename().string();
    block.device_number = trim(read_optional_file(dir + "/dev").value_or(""));
    block.mapper_name = trim(read_optional_file(dir + "/dm/name").value_or(""));
    return block;
}

std::string describe_block(const BlockDevice& block) {
    std::string details = block.mapper_name;
    if (!block.device_number.empty()) {
        details += fmt::format("{}{}", details.empty() ? "" : ", ", block.device_number);
    }
    return details.empty() ? fmt::format("block device {}", block.name)
                           : fmt::format("block device {} ({})", block.name, details);
}

bool names_block(std::string_view path, const BlockDevice& block) {
    if (path == "/dev/" + block.name) {
        return true;
    }
    return !block.mapper_name.empty() && path == "/dev/mapper/" + block.mapper_name;
}

class UseFinder {
  public:
    UseFinder(const BindEnvironment& env, std::vector<Mount> mounts, std::vector<std::string> swaps)
        : env_(env), mounts_(std::move(mounts)), swaps_(std::move(swaps)) {}

    // Checks a block device and, recursively, what holds it. `via` says how we got here.
    void check_block(const BlockDevice& block, const std::string& via, int depth) {
        if (depth > 16 || !visited_.insert(block.name).second) {
            return;
        }
        const std::string who = describe_block(block) + via;
        std::set<std::string> mount_points;
        for (const auto& mount : mounts_) {
            const bool same_number =
                !block.device_number.empty() && mount.device_number == block.device_number;
            if ((same_number || names_block(mount.source, block)) &&
                mount_points.insert(mount.mount_point).second) {
                uses_.push_back({DeviceUse::Kind::mount,
                                 fmt::format("{} is mounted on {}", who, mount.mount_point)});
            }
        }
        for (const auto& swap : swaps_) {
            if (names_block(swap, block)) {
                uses_.push_back({DeviceUse::Kind::swap, fmt::format("{} is swap space", who)});
            }
        }
        std::error_code ec;
        std::vector<std::string> holders;
        for (const auto& entry : fs::directory_iterator(block.dir + "/holders", ec)) {
            holders.push_back(entry.path().filename().string());
        }
        std::sort(holders.begin(), holders.end());
        for (const auto& holder_name : holders) {
            const BlockDevice holder =
                read_block_device(env_.sysfs_root + "/class/block/" + holder_name);
            uses_.push_back({DeviceUse::Kind::holder,
                             fmt::format("{} is held by {}", who, describe_block(holder))});
            check_block(holder, fmt::format(", which holds {},", block.name), depth + 1);
        }
    }

    void check_interface(const std::string& dir) {
        const std::string name = fs::path(dir).filename().string();
        const auto flags_text = read_optional_file(dir + "/flags");
        if (!flags_text) {
            return;
        }
        const std::string flags = trim(*flags_text);
        std::uint64_t value = 0;
        try {
            value = std::stoull(flags, nullptr, 16);
        } catch (const std::exception&) {
            throw Error::invalid("parse", dir + "/flags", fmt::format("'{}' is not hex", flags));
        }
        if ((value & kIffUp) != 0) {
            uses_.push_back({DeviceUse::Kind::interface_up,
                             fmt::format("network interface {} is up (flags {})", name, flags)});
        }
    }

    std::vector<DeviceUse> take() { return std::move(uses_); }

  private:
    const BindEnvironment& env_;
    std::vector<Mount> mounts_;
    std::vector<std::string> swaps_;
    std::set<std::string> visited_;
    std::vector<DeviceUse> uses_;
};

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
    const std::string bdf = bdf_of(address);
    const std::string dir = device_dir(address);

    // Mounts as this process sees them, and as init sees them (a tool run in its own mount
    // namespace would otherwise miss the host's mounts). self is required: without it we cannot
    // tell, and guessing "not in use" is the dangerous answer.
    std::vector<Mount> mounts;
    const std::string self_mountinfo = env_.proc_root + "/self/mountinfo";
    const auto self_text = read_optional_file(self_mountinfo);
    if (!self_text) {
        throw Error::invalid("check whether in use", bdf,
                             fmt::format("cannot read {}", self_mountinfo), ENOENT);
    }
    mounts = parse_mountinfo(*self_text);
    try {
        if (const auto init_text = read_optional_file(env_.proc_root + "/1/mountinfo")) {
            auto more = parse_mountinfo(*init_text);
            mounts.insert(mounts.end(), more.begin(), more.end());
        }
    } catch (const Error&) {
        // Not allowed to look at init's namespace (e.g. in a container): ours has to do.
    }
    std::vector<std::string> swaps;
    if (const auto swaps_text = read_optional_file(env_.proc_root + "/swaps")) {
        const auto lines = split_lines(*swaps_text);
        for (std::size_t i = 1; i < lines.size(); ++i) {  // first line is the header
            const auto fields = split_fields(lines[i]);
            if (!fields.empty()) {
                swaps.push_back(unescape_octal(fields[0]));
            }
        }
    }

    UseFinder finder(env_, std::move(mounts), std::move(swaps));
    // Walk the device's own directory tree without following symlinks (driver, subsystem,
    // iommu_group... lead elsewhere); class devices below it say what they are through their
    // `subsystem` link: block disks and partitions, net interfaces. A bridge's subtree holds the
    // devices behind it, which is right: they go away with it.
    std::vector<std::string> blocks;
    std::vector<std::string> interfaces;
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
    if (ec) {
        throw Error("walk", dir, ec.value());
    }
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) {
            throw Error("walk", dir, ec.value());
        }
        const auto status = it->symlink_status(ec);
        if (ec || !fs::is_directory(status)) {
            continue;
        }
        const auto subsystem = link_basename(it->path().string() + "/subsystem");
        if (subsystem == "block") {
            blocks.push_back(it->path().string());
        } else if (subsystem == "net") {
            interfaces.push_back(it->path().string());
        }
    }
    std::sort(blocks.begin(), blocks.end());
    std::sort(interfaces.begin(), interfaces.end());
    for (const auto& block_dir : blocks) {
        finder.check_block(read_block_device(block_dir), "", 0);
    }
    for (const auto& interface_dir : interfaces) {
        finder.check_interface(interface_dir);
    }
    return finder.take();
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
