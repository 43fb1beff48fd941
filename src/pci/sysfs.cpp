#include "ring3/pci/sysfs.hpp"

#include <sys/stat.h>

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <system_error>

#include "ring3/core/error.hpp"
#include "ring3/core/file.hpp"

namespace ring3::pci {
namespace fs = std::filesystem;
namespace {

// A required attribute: missing is an error naming the file ("read PATH: No such file...").
std::string read_required(const fs::path& path) {
    auto text = read_optional_file(path.string());
    if (!text) {
        throw Error("read", path.string(), ENOENT);
    }
    return std::move(*text);
}

std::string_view trim(std::string_view text) {
    const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (!text.empty() && blank(text.front())) {
        text.remove_prefix(1);
    }
    while (!text.empty() && blank(text.back())) {
        text.remove_suffix(1);
    }
    return text;
}

// "0x" followed by 1-16 hex digits, the whole of `text`.
std::optional<std::uint64_t> parse_0x_hex(std::string_view text) {
    if (text.size() < 3 || text.size() > 18 || text[0] != '0' ||
        (text[1] != 'x' && text[1] != 'X')) {
        return std::nullopt;
    }
    std::uint64_t value = 0;
    const auto* first = text.data() + 2;
    const auto* last = text.data() + text.size();
    const auto [end, ec] = std::from_chars(first, last, value, 16);
    if (ec != std::errc() || end != last) {
        return std::nullopt;
    }
    return value;
}

// A hex attribute such as `vendor` ("0x1af4\n") that must fit in `bits` bits.
std::uint32_t read_hex_attribute(const fs::path& path, unsigned bits) {
    const std::string text = read_required(path);
    const auto value = parse_0x_hex(trim(text));
    if (!value || *value >> bits != 0) {
        throw Error::invalid("parse", path.string(),
                             fmt::format("expected a {}-bit hex number (0x and up to {} digits), "
                                         "got '{}'",
                                         bits, bits / 4, trim(text)));
    }
    return static_cast<std::uint32_t>(*value);
}

// The last component of a symlink's target; empty when the link does not exist.
std::string link_basename(const fs::path& link) {
    std::error_code error;
    const fs::path target = fs::read_symlink(link, error);
    if (error) {
        if (error == std::errc::no_such_file_or_directory) {
            return {};
        }
        throw Error("read link", link.string(), error.value());
    }
    return target.filename().string();
}

std::optional<unsigned> parse_unsigned(std::string_view text) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
        return std::nullopt;
    }
    return value;
}

std::optional<Address> parse_address(const std::string& name) {
    try {
        auto address = Address::parse(name);
        // Only the canonical long form is a PCI device's sysfs name.
        if (address.to_string() != name) {
            return std::nullopt;
        }
        return address;
    } catch (const Error&) {
        return std::nullopt;
    }
}

void assign_roles(std::vector<Resource>& resources) {
    const std::size_t count = resources.size();
    const bool has_vf_bars = count == 13 || count == 17;
    const bool has_windows = count == 11 || count == 17;
    const unsigned windows_start = has_vf_bars ? 13 : 7;
    for (auto& resource : resources) {
        const unsigned i = resource.index;
        if (i < 6) {
            resource.role = Resource::Role::bar;
            resource.role_index = i;
        } else if (i == 6) {
            resource.role = Resource::Role::rom;
        } else if (has_vf_bars && i < 13) {
            resource.role = Resource::Role::vf_bar;
            resource.role_index = i - 7;
        } else if (has_windows && i >= windows_start && i < windows_start + 4) {
            resource.role = Resource::Role::bridge_window;
            resource.role_index = i - windows_start;
        } else {
            resource.role = Resource::Role::other;
            resource.role_index = i;
        }
    }
}

}  // namespace

std::vector<Resource> parse_resources(std::string_view text, const std::string& what) {
    std::vector<Resource> resources;
    unsigned line_number = 0;
    while (!text.empty()) {
        const auto newline = text.find('\n');
        const std::string_view line = trim(text.substr(0, newline));
        text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
        ++line_number;
        if (line.empty()) {
            continue;
        }
        std::array<std::uint64_t, 3> fields{};
        std::size_t count = 0;
        bool ok = true;
        std::string_view rest = line;
        while (!rest.empty() && ok) {
            const auto space = rest.find_first_of(" \t");
            const auto token = rest.substr(0, space);
            rest = trim(rest.substr(space == std::string_view::npos ? rest.size() : space));
            const auto value = parse_0x_hex(token);
            if (!value || count == fields.size()) {
                ok = false;
                break;
            }
            fields[count++] = *value;
        }
        if (!ok || count != fields.size()) {
            throw Error::invalid(
                "parse", what,
                fmt::format("line {}: expected three hex numbers 0x<start> 0x<end> 0x<flags>, got "
                            "'{}'",
                            line_number, line));
        }
        Resource resource;
        resource.index = static_cast<unsigned>(resources.size());
        resource.start = fields[0];
        resource.end = fields[1];
        resource.flags = fields[2];
        resources.push_back(resource);
    }
    assign_roles(resources);
    return resources;
}

const Resource* DeviceInfo::bar(unsigned n) const noexcept {
    for (const auto& resource : resources) {
        if (resource.role == Resource::Role::bar && resource.role_index == n) {
            return &resource;
        }
    }
    return nullptr;
}

bool driver_allows_vfio(std::string_view driver) noexcept {
    return driver.empty() || driver == "pci-stub" || driver == "pcieport" ||
           driver.find("vfio") != std::string_view::npos;
}

bool IommuGroup::viable_for_vfio() const {
    return std::all_of(members.begin(), members.end(),
                       [](const IommuGroupMember& m) { return driver_allows_vfio(m.driver); });
}

std::vector<IommuGroupMember> IommuGroup::members_on_kernel_drivers() const {
    std::vector<IommuGroupMember> blocking;
    for (const auto& member : members) {
        if (!driver_allows_vfio(member.driver)) {
            blocking.push_back(member);
        }
    }
    return blocking;
}

Sysfs::Sysfs(fs::path root) : root_(std::move(root)) {}

fs::path Sysfs::devices_dir() const {
    return root_ / "bus" / "pci" / "devices";
}

std::vector<Address> Sysfs::addresses() const {
    const fs::path dir = devices_dir();
    std::error_code error;
    fs::directory_iterator it(dir, error);
    if (error) {
        throw Error("list PCI devices in", dir.string(), error.value());
    }
    std::vector<Address> result;
    for (const auto& entry : it) {
        if (const auto address = parse_address(entry.path().filename().string())) {
            result.push_back(*address);
        }
    }
    std::sort(result.begin(), result.end());
    return result;
}

std::vector<DeviceInfo> Sysfs::devices() const {
    std::vector<DeviceInfo> result;
    for (const auto& address : addresses()) {
        result.push_back(device(address));
    }
    return result;
}

bool Sysfs::exists(const Address& address) const {
    std::error_code error;
    return fs::is_directory(devices_dir() / address.to_string(), error);
}

fs::path Sysfs::device_path(const Address& address) const {
    if (!exists(address)) {
        throw Error("no PCI device", address.to_string(), ENODEV,
                    fmt::format("not in {}", devices_dir().string()));
    }
    return devices_dir() / address.to_string();
}

std::string Sysfs::driver(const Address& address) const {
    return link_basename(device_path(address) / "driver");
}

std::vector<Resource> Sysfs::resources(const Address& address) const {
    const fs::path path = device_path(address) / "resource";
    return parse_resources(read_required(path), path.string());
}

std::optional<unsigned> Sysfs::iommu_group_number(const Address& address) const {
    const fs::path link = device_path(address) / "iommu_group";
    const std::string name = link_basename(link);
    if (name.empty()) {
        return std::nullopt;
    }
    const auto number = parse_unsigned(name);
    if (!number) {
        throw Error::invalid("read link", link.string(),
                             fmt::format("target '{}' is not an IOMMU group number", name));
    }
    return number;
}

DeviceInfo Sysfs::device(const Address& address) const {
    DeviceInfo info;
    info.address = address;
    info.path = device_path(address);
    const fs::path& dir = info.path;
    info.vendor_id = static_cast<std::uint16_t>(read_hex_attribute(dir / "vendor", 16));
    info.device_id = static_cast<std::uint16_t>(read_hex_attribute(dir / "device", 16));
    info.subsystem_vendor_id =
        static_cast<std::uint16_t>(read_hex_attribute(dir / "subsystem_vendor", 16));
    info.subsystem_device_id =
        static_cast<std::uint16_t>(read_hex_attribute(dir / "subsystem_device", 16));
    info.class_code = read_hex_attribute(dir / "class", 24);
    info.revision = static_cast<std::uint8_t>(read_hex_attribute(dir / "revision", 8));
    info.driver = link_basename(dir / "driver");
    info.iommu_group = iommu_group_number(address);
    info.resources = resources(address);

    if (const auto text = read_optional_file((dir / "numa_node").string())) {
        const auto value = trim(*text);
        if (value != "-1") {
            info.numa_node = parse_unsigned(value);
            if (!info.numa_node) {
                throw Error::invalid("parse", (dir / "numa_node").string(),
                                     fmt::format("expected a node number or -1, got '{}'", value));
            }
        }
    }

    try {
        if (const auto text = read_optional_file((dir / "reset_method").string())) {
            info.reset_methods.state = ResetMethods::State::listed;
            std::string_view rest = trim(*text);
            while (!rest.empty()) {
                const auto space = rest.find_first_of(" \t\n");
                info.reset_methods.methods.emplace_back(rest.substr(0, space));
                rest = trim(rest.substr(space == std::string_view::npos ? rest.size() : space));
            }
        }
    } catch (const Error& e) {
        info.reset_methods.state = ResetMethods::State::unreadable;
        info.reset_methods.problem = e.what();
    }

    if (const auto text = read_optional_file((dir / "power_state").string())) {
        info.power_state = std::string(trim(*text));
    }
    return info;
}

IommuGroup Sysfs::iommu_group(unsigned number) const {
    const fs::path dir = root_ / "kernel" / "iommu_groups" / std::to_string(number);
    std::error_code error;
    fs::directory_iterator it(dir / "devices", error);
    if (error) {
        throw Error("read IOMMU group", (dir / "devices").string(), error.value());
    }
    IommuGroup group;
    group.number = number;
    if (const auto type = read_optional_file((dir / "type").string())) {
        group.type = std::string(trim(*type));
    }
    for (const auto& entry : it) {
        IommuGroupMember member;
        member.name = entry.path().filename().string();
        member.address = parse_address(member.name);
        member.driver = link_basename(entry.path() / "driver");
        if (member.address) {
            member.class_code = read_hex_attribute(entry.path() / "class", 24);
        }
        group.members.push_back(std::move(member));
    }
    std::sort(group.members.begin(), group.members.end(),
              [](const IommuGroupMember& a, const IommuGroupMember& b) {
                  if (a.address.has_value() != b.address.has_value()) {
                      return a.address.has_value();
                  }
                  if (a.address && *a.address != *b.address) {
                      return *a.address < *b.address;
                  }
                  return a.name < b.name;
              });
    return group;
}

std::vector<std::uint8_t> Sysfs::read_config(const Address& address) const {
    const std::string bytes = read_file((device_path(address) / "config").string());
    return std::vector<std::uint8_t>(bytes.begin(), bytes.end());
}

std::size_t Sysfs::config_size(const Address& address) const {
    const fs::path path = device_path(address) / "config";
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0) {
        throw Error::from_errno("stat", path.string());
    }
    return static_cast<std::size_t>(status.st_size);
}

}  // namespace ring3::pci
