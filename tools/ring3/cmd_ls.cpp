// `ring3 ls [--json]`: every PCI function, in address order, one line each:
//   0000:00:02.0 Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller
//   [1b36:0010] (rev 02)  driver=nvme  iommu_group=3
// (one line on screen). Class and names are lspci's text (`lspci -D` for the class, `lspci -Dnn`
// for the device part, so unknown ids read the same); "(rev xx)" appears when the revision is not
// 0, as lspci does. --json prints an array of objects instead (see json_of below).
#include <fmt/core.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "ring3/core/log.hpp"
#include "ring3/pci/ids.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3::tool {
namespace {

struct LsOptions {
    bool json = false;
    std::string sysfs_root = "/sys";
};

std::string hex4(std::uint16_t value) {
    return fmt::format("{:04x}", value);
}

// One device as JSON. Ids are lowercase hex strings without 0x, as lspci -n prints them;
// `class`, `name`, `vendor_name`, `device_name` and `subsystem` are lspci's text:
//   class        lspci -D's class ("Ethernet controller", "Network controller [0277]", "Class
//   ab00") name         lspci -D's text after the class ("Intel Corporation Device 0d57")
//   vendor_name  lspci -vmm's Vendor field ("Red Hat, Inc.", "Vendor 1234" when unknown)
//   device_name  lspci -vmm's Device field ("QEMU NVM Express Controller", "Device 11e8")
//   subsystem    lspci -v's Subsystem text, null when lspci shows none
// driver, iommu_group and numa_node are null when there is none.
nlohmann::ordered_json json_of(const pci::DeviceInfo& device, const pci::PciIds& ids) {
    nlohmann::ordered_json object;
    object["address"] = device.address.to_string();
    object["vendor_id"] = hex4(device.vendor_id);
    object["device_id"] = hex4(device.device_id);
    object["subsystem_vendor_id"] = hex4(device.subsystem_vendor_id);
    object["subsystem_device_id"] = hex4(device.subsystem_device_id);
    object["class_code"] = fmt::format("{:06x}", device.class_code);
    object["revision"] = fmt::format("{:02x}", device.revision);
    object["class"] = ids.class_text(device.class_code, pci::IdStyle::names);
    object["name"] = ids.device_text(device.vendor_id, device.device_id, pci::IdStyle::names);
    object["vendor_name"] = ids.vendor_field(device.vendor_id, pci::IdStyle::names);
    object["device_name"] =
        ids.device_field(device.vendor_id, device.device_id, pci::IdStyle::names);
    if (pci::PciIds::has_subsystem(device.subsystem_vendor_id)) {
        object["subsystem"] =
            ids.subsystem_text(device.vendor_id, device.device_id, device.subsystem_vendor_id,
                               device.subsystem_device_id, pci::IdStyle::names);
    } else {
        object["subsystem"] = nullptr;
    }
    object["driver"] = device.driver.empty() ? nlohmann::ordered_json(nullptr)
                                             : nlohmann::ordered_json(device.driver);
    object["iommu_group"] = device.iommu_group ? nlohmann::ordered_json(*device.iommu_group)
                                               : nlohmann::ordered_json(nullptr);
    object["numa_node"] = device.numa_node ? nlohmann::ordered_json(*device.numa_node)
                                           : nlohmann::ordered_json(nullptr);
    return object;
}

std::string line_of(const pci::DeviceInfo& device, const pci::PciIds& ids) {
    std::string line = fmt::format(
        "{} {}: {}", device.address.to_string(),
        ids.class_text(device.class_code, pci::IdStyle::names),
        ids.device_text(device.vendor_id, device.device_id, pci::IdStyle::names_and_numbers));
    if (device.revision != 0) {
        line += fmt::format(" (rev {:02x})", device.revision);
    }
    line +=
        fmt::format("  driver={}  iommu_group={}", device.driver.empty() ? "none" : device.driver,
                    device.iommu_group ? std::to_string(*device.iommu_group) : "none");
    return line;
}

void run_ls(const LsOptions& options) {
    const pci::Sysfs sysfs(options.sysfs_root);
    const auto devices = sysfs.devices();
    const auto ids = pci::PciIds::load_default();
    if (!ids.problem().empty()) {
        log_warn("{}; device and class names are shown as numbers", ids.problem());
    }
    if (options.json) {
        auto array = nlohmann::ordered_json::array();
        for (const auto& device : devices) {
            array.push_back(json_of(device, ids));
        }
        fmt::print("{}\n", array.dump(2));
        return;
    }
    for (const auto& device : devices) {
        fmt::print("{}\n", line_of(device, ids));
    }
}

}  // namespace

void add_ls_command(CLI::App& app) {
    auto options = std::make_shared<LsOptions>();
    auto* command = app.add_subcommand(
        "ls",
        "List PCI devices in address order, as lspci -D names them, with driver and IOMMU group");
    command->add_flag("--json", options->json,
                      "Print a JSON array: ids, lspci's names, driver, iommu_group, numa_node");
    command->add_option("--sysfs", options->sysfs_root, "Read this sysfs tree instead of /sys")
        ->capture_default_str();
    command->callback([options] { run_ls(*options); });
}

}  // namespace ring3::tool
