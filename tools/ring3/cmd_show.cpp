// `ring3 show BDF`: one device in full, from sysfs and its config space (read-only).
//
// Sections: the lspci -vnn-like title line; the decoded header; driver, NUMA node, power state,
// reset methods; the IOMMU group with its members and whether VFIO can use it; the BARs (sysfs
// `resource` joined with the BAR registers); every capability. Capability lines have a fixed form
// that scripts parse and compare with `lspci -vv` ("Capabilities: [a0] ..."):
//   "  [a0] cap 0x11 <describe>"                standard list, offset in hex without leading zeros
//   "  [100 v1] ext-cap 0x0001 <describe>"      extended list, with the capability's version
// A list that cannot be walked (an unprivileged reader sees 64 bytes of config space) prints the
// decoder's reason instead of lines.
#include <fmt/core.h>

#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/device/device.hpp"
#include "ring3/pci/address.hpp"
#include "ring3/pci/config_space.hpp"
#include "ring3/pci/ids.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3::tool {
namespace {

struct ShowOptions {
    std::string device;
    std::string sysfs_root = "/sys";
};

struct Flag {
    unsigned bit;
    const char* name;  // lspci's abbreviation
};

// Command register, PCI Local Bus 3.0 §6.2.2.
constexpr std::array<Flag, 7> kCommandFlags = {{{0, "I/O"},
                                                {1, "Mem"},
                                                {2, "BusMaster"},
                                                {6, "ParErr"},
                                                {8, "SERR"},
                                                {9, "FastB2B"},
                                                {10, "DisINTx"}}};
// Status register, PCI Local Bus 3.0 §6.2.3.
constexpr std::array<Flag, 10> kStatusFlags = {{{4, "Cap"},
                                                {3, "INTx"},
                                                {5, "66MHz"},
                                                {7, "FastB2B"},
                                                {8, "ParErr"},
                                                {11, ">TAbort"},
                                                {12, "<TAbort"},
                                                {13, "<MAbort"},
                                                {14, ">SERR"},
                                                {15, "<PERR"}}};

// Expansion ROM Base Address registers and their enable bit, PCI Local Bus 3.0 §6.2.5.2.
constexpr std::uint16_t kRomBaseType0 = 0x30;
constexpr std::uint16_t kRomBaseType1 = 0x38;
constexpr std::uint32_t kRomEnable = 1u << 0;

template <std::size_t N>
std::string flags_text(std::uint16_t value, const std::array<Flag, N>& flags) {
    std::string text = fmt::format("0x{:04x}", value);
    for (const auto& flag : flags) {
        text += fmt::format(" {}{}", flag.name, (value >> flag.bit & 1u) != 0 ? '+' : '-');
    }
    return text;
}

// lspci's size form: the largest of G, M, K that divides the size exactly.
std::string size_text(std::uint64_t size) {
    constexpr std::array<std::pair<std::uint64_t, char>, 3> kUnits = {
        {{1ull << 30, 'G'}, {1ull << 20, 'M'}, {1ull << 10, 'K'}}};
    for (const auto& [unit, suffix] : kUnits) {
        if (size >= unit && size % unit == 0) {
            return fmt::format("{}{}", size / unit, suffix);
        }
    }
    return std::to_string(size);
}

std::string memory_kind(bool is_64bit, bool prefetchable) {
    return fmt::format("({}, {})", is_64bit ? "64-bit" : "32-bit",
                       prefetchable ? "prefetchable" : "non-prefetchable");
}

std::string resource_text(const pci::Resource& resource) {
    if (resource.is_io()) {
        return fmt::format("I/O ports at {:x} [size={}]", resource.start,
                           size_text(resource.size()));
    }
    return fmt::format("Memory at {:x} {} [size={}]", resource.start,
                       memory_kind(resource.is_64bit(), resource.prefetchable()),
                       size_text(resource.size()));
}

const pci::BarRegister* find_bar_register(const std::optional<pci::Header>& header,
                                          unsigned index) {
    if (!header) {
        return nullptr;
    }
    for (const auto& bar : header->bars) {
        if (bar.index == index) {
            return &bar;
        }
    }
    return nullptr;
}

// BAR0-5 from `resource` (address, size, flags) and the BAR registers (what the device decodes).
void print_bars(const pci::DeviceInfo& info, const std::optional<pci::Header>& header,
                const pci::ConfigView& config) {
    fmt::print("BARs:\n");
    bool any = false;
    for (unsigned index = 0; index < 6; ++index) {
        const pci::Resource* resource = info.bar(index);
        const pci::BarRegister* reg = find_bar_register(header, index);
        const bool in_use = resource != nullptr && resource->used();
        const bool decoded = reg != nullptr && reg->kind != pci::BarKind::unused;
        if (!in_use && !decoded) {
            continue;
        }
        any = true;
        std::string line;
        if (in_use) {
            line = resource_text(*resource);
            if (header) {
                const std::uint16_t enable =
                    resource->is_io() ? pci::cfg::command_io_space : pci::cfg::command_memory_space;
                if ((header->command & enable) == 0) {
                    line += " [disabled]";
                }
                if (!decoded) {
                    line += " [virtual]";  // the kernel has a resource, the register reads 0
                } else if (reg->address != resource->start) {
                    line += fmt::format(" [bus address {:x}]", reg->address);
                }
            }
        } else if (reg->kind == pci::BarKind::io) {
            line = fmt::format("I/O ports at {:x} [no sysfs resource: size unknown]", reg->address);
        } else {
            line = fmt::format("Memory at {:x} {} [no sysfs resource: size unknown]", reg->address,
                               memory_kind(reg->kind == pci::BarKind::memory64, reg->prefetchable));
        }
        fmt::print("  BAR{}: {}\n", index, line);
    }
    if (header && !header->bar_error.empty()) {
        fmt::print("  BAR registers: {}\n", header->bar_error);
    }
    for (const auto& resource : info.resources) {
        if (!resource.used()) {
            continue;
        }
        switch (resource.role) {
            case pci::Resource::Role::rom: {
                std::string state;
                if (header) {
                    const auto offset = header->header_layout == 1 ? kRomBaseType1 : kRomBaseType0;
                    state =
                        (config.read32(offset) & kRomEnable) != 0 ? " [enabled]" : " [disabled]";
                }
                fmt::print("  ROM: Memory at {:x}{} [size={}]\n", resource.start, state,
                           size_text(resource.size()));
                any = true;
                break;
            }
            case pci::Resource::Role::vf_bar:
                fmt::print("  VF BAR{}: {}\n", resource.role_index, resource_text(resource));
                any = true;
                break;
            case pci::Resource::Role::bridge_window:
                fmt::print("  Bridge window {}: {} {:x}-{:x} [size={}]{}\n", resource.role_index,
                           resource.is_io() ? "I/O" : "Memory", resource.start, resource.end,
                           size_text(resource.size()),
                           resource.prefetchable() ? " (prefetchable)" : "");
                any = true;
                break;
            case pci::Resource::Role::other:
                fmt::print("  resource line {}: {:x}-{:x} flags 0x{:x}\n", resource.index,
                           resource.start, resource.end, resource.flags);
                any = true;
                break;
            case pci::Resource::Role::bar:
                break;
        }
    }
    if (!any) {
        fmt::print("  none\n");
    }
}

void print_capabilities(const std::optional<pci::Header>& header, const std::string& header_error,
                        const pci::ConfigView& config, std::size_t config_size) {
    fmt::print("Capabilities:\n");
    if (!header) {
        fmt::print("  not decoded: {}\n", header_error);
        return;
    }
    const auto walk = pci::walk_capabilities(config);
    for (const auto& capability : walk.capabilities) {
        fmt::print("  [{:x}] cap 0x{:02x} {}\n", capability.offset, capability.id,
                   pci::describe(capability));
    }
    if (!walk.error.empty()) {
        fmt::print("  error: {}\n", walk.error);
    } else if (walk.capabilities.empty()) {
        fmt::print("  none{}\n", (header->status & pci::cfg::status_capabilities_list) == 0
                                     ? " (status register: no capability list)"
                                     : "");
    }

    fmt::print("Extended capabilities:\n");
    if (config_size <= pci::kConfigConventionalSize) {
        fmt::print("  none (conventional PCI: {}-byte config space)\n", config_size);
        return;
    }
    if (config.size() <= pci::kConfigConventionalSize) {
        fmt::print(
            "  not read: {} of {} bytes of config space are readable; the extended space "
            "needs root\n",
            config.size(), config_size);
        return;
    }
    const auto extended = pci::walk_extended_capabilities(config);
    for (const auto& capability : extended.capabilities) {
        fmt::print("  [{:x} v{}] ext-cap 0x{:04x} {}\n", capability.offset, capability.version,
                   capability.id, pci::describe(capability));
    }
    if (!extended.error.empty()) {
        fmt::print("  error: {}\n", extended.error);
    } else if (extended.capabilities.empty()) {
        fmt::print("  none\n");
    }
}

std::string reset_text(const pci::ResetMethods& reset) {
    switch (reset.state) {
        case pci::ResetMethods::State::listed: {
            if (reset.methods.empty()) {
                return "none (reset_method is empty)";
            }
            std::string text;
            for (const auto& method : reset.methods) {
                text += text.empty() ? method : " " + method;
            }
            return text;
        }
        case pci::ResetMethods::State::absent:
            return "none (no reset_method file: the kernel knows no way to reset it)";
        case pci::ResetMethods::State::unreadable:
            return fmt::format("unknown ({})", reset.problem);
    }
    return {};
}

void print_iommu(const pci::Sysfs& sysfs, const pci::DeviceInfo& info, const pci::PciIds& ids) {
    if (!info.iommu_group) {
        fmt::print("IOMMU group: none (no iommu_group link: no IOMMU, or it is off)\n");
        fmt::print(
            "VFIO: not usable without an IOMMU group; uio_pci_generic can take the device\n");
        return;
    }
    pci::IommuGroup group;
    try {
        group = sysfs.iommu_group(*info.iommu_group);
    } catch (const Error& e) {
        fmt::print("IOMMU group: {} (members unreadable: {})\n", *info.iommu_group, e.what());
        return;
    }
    fmt::print("IOMMU group: {}{}\n", group.number,
               group.type.empty() ? "" : fmt::format(" (type {})", group.type));
    for (const auto& member : group.members) {
        std::string what;
        if (member.class_code) {
            what = ids.class_text(*member.class_code, pci::IdStyle::names);
        }
        const bool self = member.address && *member.address == info.address;
        fmt::print("  {}{}  driver={}{}\n", member.name, what.empty() ? "" : " " + what,
                   member.driver.empty() ? "none" : member.driver, self ? "  (this device)" : "");
    }
    if (group.viable_for_vfio()) {
        fmt::print(
            "VFIO: group viable (every member is on vfio-pci, pci-stub, pcieport or no "
            "driver)\n");
        return;
    }
    std::string blockers;
    for (const auto& member : group.members_on_kernel_drivers()) {
        blockers +=
            fmt::format("{}{} on {}", blockers.empty() ? "" : ", ", member.name, member.driver);
    }
    fmt::print("VFIO: group not viable until these leave their kernel drivers: {}\n", blockers);
}

void run_show(const ShowOptions& options) {
    const auto address = pci::Address::parse(options.device);
    const pci::Sysfs sysfs(options.sysfs_root);
    const auto info = sysfs.device(address);
    const auto ids = pci::PciIds::load_default();
    if (!ids.problem().empty()) {
        log_warn("{}; device and class names are shown as numbers", ids.problem());
    }
    auto bytes = sysfs.read_config(address);
    const auto config_size = sysfs.config_size(address);
    bool through_vfio = false;
    if (bytes.size() < config_size && info.driver == "vfio-pci" && options.sysfs_root == "/sys") {
        // sysfs gives an unprivileged reader 64 bytes; a user who owns the device's VFIO group
        // can read all of it through VFIO's config region.
        try {
            auto device = open_device("vfio:" + address.to_string());
            std::vector<std::uint8_t> full(config_size);
            device->read_config(0, std::as_writable_bytes(std::span(full)));
            bytes = std::move(full);
            through_vfio = true;
        } catch (const Error& e) {
            log_info("reading config space through VFIO failed: {}", e.what());
        }
    }
    const pci::ConfigView config(bytes);
    std::optional<pci::Header> header;
    std::string header_error;
    try {
        header = pci::decode_header(config);
    } catch (const Error& e) {
        header_error = e.what();
    }

    std::string title = fmt::format(
        "{} {}: {}", address.to_string(),
        ids.class_text(info.class_code, pci::IdStyle::names_and_numbers),
        ids.device_text(info.vendor_id, info.device_id, pci::IdStyle::names_and_numbers));
    if (info.revision != 0) {
        title += fmt::format(" (rev {:02x})", info.revision);
    }
    if (const auto prog_if = ids.prog_if_text(info.class_code); !prog_if.empty()) {
        title += " " + prog_if;
    }
    fmt::print("{}\n", title);
    if (pci::PciIds::has_subsystem(info.subsystem_vendor_id)) {
        fmt::print("Subsystem: {}\n",
                   ids.subsystem_text(info.vendor_id, info.device_id, info.subsystem_vendor_id,
                                      info.subsystem_device_id, pci::IdStyle::names_and_numbers));
    }
    fmt::print("Class code: {:06x}\n", info.class_code);
    fmt::print("Config space: {} bytes, {} readable{}\n", config_size, bytes.size(),
               through_vfio                 ? " (through VFIO)"
               : bytes.size() < config_size ? " (the rest needs root)"
                                            : "");
    if (header) {
        fmt::print("Header type: {} ({}), {}\n", header->header_layout,
                   header->header_layout == 0 ? "endpoint" : "PCI-to-PCI bridge",
                   header->multifunction ? "multi-function" : "single-function");
        if (header->header_layout == 1) {
            fmt::print("Buses: primary={:02x} secondary={:02x} subordinate={:02x}\n",
                       header->primary_bus, header->secondary_bus, header->subordinate_bus);
        }
        fmt::print("Command: {}\n", flags_text(header->command, kCommandFlags));
        fmt::print("Status: {}\n", flags_text(header->status, kStatusFlags));
        if (header->interrupt_pin == 0) {
            fmt::print("Interrupt: none\n");
        } else {
            fmt::print("Interrupt: pin {} line {}\n",
                       header->interrupt_pin <= 4
                           ? std::string(1, static_cast<char>('A' + header->interrupt_pin - 1))
                           : fmt::format("?{}", header->interrupt_pin),
                       header->interrupt_line);
        }
    } else {
        fmt::print("Header: not decoded: {}\n", header_error);
    }
    fmt::print("Driver: {}\n", info.driver.empty() ? "none" : info.driver);
    fmt::print("NUMA node: {}\n", info.numa_node ? std::to_string(*info.numa_node) : "none");
    fmt::print("Power state: {}\n",
               info.power_state ? *info.power_state : "unknown (no power_state file)");
    fmt::print("Reset methods: {}\n", reset_text(info.reset_methods));
    print_iommu(sysfs, info, ids);
    print_bars(info, header, config);
    print_capabilities(header, header_error, config, config_size);
}

}  // namespace

void add_show_command(CLI::App& app) {
    auto options = std::make_shared<ShowOptions>();
    auto* command = app.add_subcommand(
        "show", "Show one device: header, driver, IOMMU group, BARs and capabilities");
    command->add_option("device", options->device, "PCI address, DDDD:BB:DD.F or BB:DD.F")
        ->required();
    command->add_option("--sysfs", options->sysfs_root, "Read this sysfs tree instead of /sys")
        ->capture_default_str();
    command->callback([options] { run_show(*options); });
}

}  // namespace ring3::tool
