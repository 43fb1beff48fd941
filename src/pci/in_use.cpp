// In-use detection for DriverBinder::find_uses (bind.hpp): block devices in the device's sysfs
// subtree that are mounted, swapped on or held by another block device, and network interfaces
// that are up.
#include "in_use.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>
#include <string_view>

#include "ring3/core/error.hpp"
#include "ring3/core/file.hpp"
#include "text.hpp"

namespace ring3::pci {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kIffUp = 0x1;  // IFF_UP, include/uapi/linux/if.h

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

}  // namespace

std::vector<DeviceUse> find_device_uses(const std::string& dir, const std::string& bdf,
                                        const BindEnvironment& env) {
    // Mounts as this process sees them, and as init sees them (a tool run in its own mount
    // namespace would otherwise miss the host's mounts). self is required: without it we cannot
    // tell, and guessing "not in use" is the dangerous answer.
    std::vector<Mount> mounts;
    const std::string self_mountinfo = env.proc_root + "/self/mountinfo";
    const auto self_text = read_optional_file(self_mountinfo);
    if (!self_text) {
        throw Error::invalid("check whether in use", bdf,
                             fmt::format("cannot read {}", self_mountinfo), ENOENT);
    }
    mounts = parse_mountinfo(*self_text);
    try {
        if (const auto init_text = read_optional_file(env.proc_root + "/1/mountinfo")) {
            auto more = parse_mountinfo(*init_text);
            mounts.insert(mounts.end(), more.begin(), more.end());
        }
    } catch (const Error&) {
        // Not allowed to look at init's namespace (e.g. in a container): ours has to do.
    }
    std::vector<std::string> swaps;
    if (const auto swaps_text = read_optional_file(env.proc_root + "/swaps")) {
        const auto lines = split_lines(*swaps_text);
        for (std::size_t i = 1; i < lines.size(); ++i) {  // first line is the header
            const auto fields = split_fields(lines[i]);
            if (!fields.empty()) {
                swaps.push_back(unescape_octal(fields[0]));
            }
        }
    }

    UseFinder finder(env, std::move(mounts), std::move(swaps));
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

}  // namespace ring3::pci
