#include "ring3/pci/ids.hpp"

#include <unistd.h>

#include <fmt/core.h>

#include <array>
#include <cstdlib>
#include <utility>

#include "ring3/core/error.hpp"
#include "ring3/core/file.hpp"

namespace ring3::pci {
namespace {

std::optional<std::uint32_t> parse_hex_exact(std::string_view digits, std::size_t length) {
    if (digits.size() != length) {
        return std::nullopt;
    }
    std::uint32_t value = 0;
    for (const char c : digits) {
        std::uint32_t digit = 0;
        if (c >= '0' && c <= '9') {
            digit = static_cast<std::uint32_t>(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            digit = static_cast<std::uint32_t>(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            digit = static_cast<std::uint32_t>(c - 'A' + 10);
        } else {
            return std::nullopt;
        }
        value = value << 4 | digit;
    }
    return value;
}

bool is_blank(char c) {
    return c == ' ' || c == '\t';
}

std::string_view trim_trailing(std::string_view text) {
    while (!text.empty() && (is_blank(text.back()) || text.back() == '\r')) {
        text.remove_suffix(1);
    }
    return text;
}

// One entry of a line once its indentation is gone: `count` hex ids of `digits` digits each,
// separated by one space, then blanks, then a non-empty name.
struct Entry {
    std::array<std::uint32_t, 2> ids{};
    std::string_view name;
};

std::optional<Entry> parse_entry(std::string_view text, std::size_t digits, std::size_t count) {
    Entry entry;
    for (std::size_t i = 0; i < count; ++i) {
        if (i > 0) {
            if (text.empty() || text.front() != ' ') {
                return std::nullopt;
            }
            text.remove_prefix(1);
        }
        const auto id = parse_hex_exact(text.substr(0, digits), digits);
        if (!id) {
            return std::nullopt;
        }
        entry.ids[i] = *id;
        text.remove_prefix(digits);
    }
    if (text.empty() || !is_blank(text.front())) {
        return std::nullopt;
    }
    while (!text.empty() && is_blank(text.front())) {
        text.remove_prefix(1);
    }
    if (text.empty()) {
        return std::nullopt;
    }
    entry.name = text;
    return entry;
}

template <typename Map, typename Key>
std::optional<std::string_view> find_name(const Map& map, Key key) {
    const auto it = map.find(key);
    if (it == map.end()) {
        return std::nullopt;
    }
    return std::string_view(it->second.name);
}

}  // namespace

PciIds PciIds::parse(std::string_view text, const std::string& source) {
    PciIds ids;
    ids.source_ = source;

    enum class Section { none, vendors, classes, skipped };
    Section section = Section::none;
    Vendor* vendor = nullptr;
    Device* device = nullptr;
    Class* klass = nullptr;
    Subclass* subclass = nullptr;

    std::size_t line_number = 0;
    while (!text.empty()) {
        const auto newline = text.find('\n');
        const std::string_view raw = text.substr(0, newline);
        text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
        ++line_number;

        const std::string_view line = trim_trailing(raw);
        if (line.empty() || line.front() == '#') {
            continue;
        }
        const auto fail = [&](std::string_view why) {
            return Error::invalid("parse", source,
                                  fmt::format("line {}: {}: '{}'", line_number, why, line));
        };

        std::size_t depth = 0;
        while (depth < line.size() && line[depth] == '\t') {
            ++depth;
        }
        const std::string_view body = line.substr(depth);

        if (depth == 0) {
            vendor = nullptr;
            device = nullptr;
            klass = nullptr;
            subclass = nullptr;
            if (body.size() >= 2 && body[0] >= 'A' && body[0] <= 'Z' && body[1] == ' ') {
                if (body[0] != 'C') {
                    section = Section::skipped;  // a section this reader does not use
                    continue;
                }
                const auto entry = parse_entry(body.substr(2), 2, 1);
                if (!entry) {
                    throw fail("expected 'C cc  class name'");
                }
                section = Section::classes;
                klass = &ids.classes_
                             .try_emplace(static_cast<std::uint8_t>(entry->ids[0]),
                                          Class{std::string(entry->name), {}})
                             .first->second;
                continue;
            }
            const auto entry = parse_entry(body, 4, 1);
            if (!entry) {
                throw fail("expected 'vvvv  vendor name' or 'C cc  class name'");
            }
            section = Section::vendors;
            vendor = &ids.vendors_
                          .try_emplace(static_cast<std::uint16_t>(entry->ids[0]),
                                       Vendor{std::string(entry->name), {}})
                          .first->second;
            continue;
        }

        if (section == Section::skipped) {
            continue;
        }
        if (depth == 1) {
            if (section == Section::vendors && vendor != nullptr) {
                const auto entry = parse_entry(body, 4, 1);
                if (!entry) {
                    throw fail("expected '<TAB>dddd  device name'");
                }
                device = &vendor->devices
                              .try_emplace(static_cast<std::uint16_t>(entry->ids[0]),
                                           Device{std::string(entry->name), {}})
                              .first->second;
                continue;
            }
            if (section == Section::classes && klass != nullptr) {
                const auto entry = parse_entry(body, 2, 1);
                if (!entry) {
                    throw fail("expected '<TAB>ss  subclass name'");
                }
                subclass = &klass->subclasses
                                .try_emplace(static_cast<std::uint8_t>(entry->ids[0]),
                                             Subclass{std::string(entry->name), {}})
                                .first->second;
                continue;
            }
            throw fail("indented line outside a vendor or class");
        }
        if (depth == 2) {
            if (section == Section::vendors && device != nullptr) {
                const auto entry = parse_entry(body, 4, 2);
                if (!entry) {
                    throw fail("expected '<TAB><TAB>ssvv ssdd  subsystem name'");
                }
                device->subsystems.try_emplace(entry->ids[0] << 16 | entry->ids[1],
                                               std::string(entry->name));
                continue;
            }
            if (section == Section::classes && subclass != nullptr) {
                const auto entry = parse_entry(body, 2, 1);
                if (!entry) {
                    throw fail("expected '<TAB><TAB>pp  programming interface name'");
                }
                subclass->prog_ifs.try_emplace(static_cast<std::uint8_t>(entry->ids[0]),
                                               std::string(entry->name));
                continue;
            }
            throw fail("doubly indented line outside a device or subclass");
        }
        throw fail("more than two tabs of indentation");
    }
    return ids;
}

PciIds PciIds::load_file(const std::string& path) {
    return parse(read_file(path), path);
}

PciIds PciIds::load_default() {
    const auto fallback = [](std::string source, std::string problem) {
        PciIds ids;
        ids.source_ = std::move(source);
        ids.problem_ = std::move(problem);
        return ids;
    };
    const auto try_load = [&](const std::string& path) {
        try {
            return load_file(path);
        } catch (const Error& e) {
            return fallback(path, e.what());
        }
    };

    if (const char* override_path = std::getenv("RING3_PCI_IDS");
        override_path != nullptr && *override_path != '\0') {
        return try_load(override_path);
    }
    static constexpr std::array<const char*, 3> kPaths = {
        "/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"};
    for (const char* path : kPaths) {
        if (::access(path, F_OK) == 0) {
            return try_load(path);
        }
    }
    return fallback({}, fmt::format("no pci.ids database ({}, {}, {} are missing; install the "
                                    "pci.ids package or set RING3_PCI_IDS)",
                                    kPaths[0], kPaths[1], kPaths[2]));
}

std::optional<std::string_view> PciIds::vendor_name(std::uint16_t vendor) const {
    return find_name(vendors_, vendor);
}

std::optional<std::string_view> PciIds::device_name(std::uint16_t vendor,
                                                    std::uint16_t device) const {
    const auto it = vendors_.find(vendor);
    if (it == vendors_.end()) {
        return std::nullopt;
    }
    return find_name(it->second.devices, device);
}

std::optional<std::string_view> PciIds::subsystem_name(std::uint16_t vendor, std::uint16_t device,
                                                       std::uint16_t subsystem_vendor,
                                                       std::uint16_t subsystem_device) const {
    const auto v = vendors_.find(vendor);
    if (v == vendors_.end()) {
        return std::nullopt;
    }
    const auto d = v->second.devices.find(device);
    if (d == v->second.devices.end()) {
        return std::nullopt;
    }
    const auto s = d->second.subsystems.find(static_cast<std::uint32_t>(subsystem_vendor) << 16 |
                                             subsystem_device);
    if (s == d->second.subsystems.end()) {
        return std::nullopt;
    }
    return std::string_view(s->second);
}

std::optional<std::string_view> PciIds::class_name(std::uint8_t base_class) const {
    return find_name(classes_, base_class);
}

std::optional<std::string_view> PciIds::subclass_name(std::uint8_t base_class,
                                                      std::uint8_t subclass) const {
    const auto it = classes_.find(base_class);
    if (it == classes_.end()) {
        return std::nullopt;
    }
    return find_name(it->second.subclasses, subclass);
}

std::optional<std::string_view> PciIds::prog_if_name(std::uint8_t base_class, std::uint8_t subclass,
                                                     std::uint8_t prog_if) const {
    const auto c = classes_.find(base_class);
    if (c == classes_.end()) {
        return std::nullopt;
    }
    const auto s = c->second.subclasses.find(subclass);
    if (s == c->second.subclasses.end()) {
        return std::nullopt;
    }
    const auto p = s->second.prog_ifs.find(prog_if);
    if (p == s->second.prog_ifs.end()) {
        return std::nullopt;
    }
    return std::string_view(p->second);
}

std::optional<std::string_view> PciIds::subsystem_device_name(
    std::uint16_t vendor, std::uint16_t device, std::uint16_t subsystem_vendor,
    std::uint16_t subsystem_device) const {
    if (auto name = subsystem_name(vendor, device, subsystem_vendor, subsystem_device)) {
        return name;
    }
    // A device that is its own subsystem goes by its own name.
    if (subsystem_vendor == vendor && subsystem_device == device) {
        return device_name(vendor, device);
    }
    return std::nullopt;
}

std::string PciIds::class_text(std::uint32_t class_code, IdStyle style) const {
    const auto base = static_cast<std::uint8_t>(class_code >> 16);
    const auto sub = static_cast<std::uint8_t>(class_code >> 8);
    if (const auto name = subclass_name(base, sub)) {
        return style == IdStyle::names ? std::string(*name)
                                       : fmt::format("{} [{:02x}{:02x}]", *name, base, sub);
    }
    if (const auto name = class_name(base)) {
        return fmt::format("{} [{:02x}{:02x}]", *name, base, sub);
    }
    return style == IdStyle::names ? fmt::format("Class {:02x}{:02x}", base, sub)
                                   : fmt::format("Class [{:02x}{:02x}]", base, sub);
}

std::string PciIds::device_text(std::uint16_t vendor, std::uint16_t device, IdStyle style) const {
    const bool numbers = style == IdStyle::names_and_numbers;
    const auto vendor_text = vendor_name(vendor);
    if (!vendor_text) {
        return numbers ? fmt::format("Device [{:04x}:{:04x}]", vendor, device)
                       : fmt::format("Device {:04x}:{:04x}", vendor, device);
    }
    if (const auto name = device_name(vendor, device)) {
        return numbers ? fmt::format("{} {} [{:04x}:{:04x}]", *vendor_text, *name, vendor, device)
                       : fmt::format("{} {}", *vendor_text, *name);
    }
    return numbers ? fmt::format("{} Device [{:04x}:{:04x}]", *vendor_text, vendor, device)
                   : fmt::format("{} Device {:04x}", *vendor_text, device);
}

std::string PciIds::subsystem_text(std::uint16_t vendor, std::uint16_t device,
                                   std::uint16_t subsystem_vendor, std::uint16_t subsystem_device,
                                   IdStyle style) const {
    const bool numbers = style == IdStyle::names_and_numbers;
    const auto vendor_text = vendor_name(subsystem_vendor);
    if (!vendor_text) {
        return numbers ? fmt::format("Device [{:04x}:{:04x}]", subsystem_vendor, subsystem_device)
                       : fmt::format("Device {:04x}:{:04x}", subsystem_vendor, subsystem_device);
    }
    if (const auto name =
            subsystem_device_name(vendor, device, subsystem_vendor, subsystem_device)) {
        return numbers ? fmt::format("{} {} [{:04x}:{:04x}]", *vendor_text, *name, subsystem_vendor,
                                     subsystem_device)
                       : fmt::format("{} {}", *vendor_text, *name);
    }
    return numbers ? fmt::format("{} Device [{:04x}:{:04x}]", *vendor_text, subsystem_vendor,
                                 subsystem_device)
                   : fmt::format("{} Device {:04x}", *vendor_text, subsystem_device);
}

std::string PciIds::prog_if_text(std::uint32_t class_code) const {
    const auto prog_if = static_cast<std::uint8_t>(class_code);
    if (const auto name = prog_if_name(static_cast<std::uint8_t>(class_code >> 16),
                                       static_cast<std::uint8_t>(class_code >> 8), prog_if)) {
        return fmt::format("(prog-if {:02x} [{}])", prog_if, *name);
    }
    if (prog_if != 0) {
        return fmt::format("(prog-if {:02x})", prog_if);
    }
    return {};
}

std::string PciIds::vendor_field(std::uint16_t vendor, IdStyle style) const {
    const bool numbers = style == IdStyle::names_and_numbers;
    if (const auto name = vendor_name(vendor)) {
        return numbers ? fmt::format("{} [{:04x}]", *name, vendor) : std::string(*name);
    }
    return numbers ? fmt::format("Vendor [{:04x}]", vendor) : fmt::format("Vendor {:04x}", vendor);
}

std::string PciIds::device_field(std::uint16_t vendor, std::uint16_t device, IdStyle style) const {
    const bool numbers = style == IdStyle::names_and_numbers;
    if (const auto name = device_name(vendor, device)) {
        return numbers ? fmt::format("{} [{:04x}]", *name, device) : std::string(*name);
    }
    return numbers ? fmt::format("Device [{:04x}]", device) : fmt::format("Device {:04x}", device);
}

std::string PciIds::subsystem_vendor_field(std::uint16_t subsystem_vendor, IdStyle style) const {
    const bool numbers = style == IdStyle::names_and_numbers;
    if (const auto name = vendor_name(subsystem_vendor)) {
        return numbers ? fmt::format("{} [{:04x}]", *name, subsystem_vendor) : std::string(*name);
    }
    return numbers ? fmt::format("Unknown vendor [{:04x}]", subsystem_vendor)
                   : fmt::format("Unknown vendor {:04x}", subsystem_vendor);
}

std::string PciIds::subsystem_device_field(std::uint16_t vendor, std::uint16_t device,
                                           std::uint16_t subsystem_vendor,
                                           std::uint16_t subsystem_device, IdStyle style) const {
    const bool numbers = style == IdStyle::names_and_numbers;
    if (const auto name =
            subsystem_device_name(vendor, device, subsystem_vendor, subsystem_device)) {
        return numbers ? fmt::format("{} [{:04x}]", *name, subsystem_device) : std::string(*name);
    }
    return numbers ? fmt::format("Device [{:04x}]", subsystem_device)
                   : fmt::format("Device {:04x}", subsystem_device);
}

}  // namespace ring3::pci
