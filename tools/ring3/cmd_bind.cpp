// `ring3 bind BDF DRIVER` and `ring3 unbind BDF`: move a device between drivers through sysfs,
// refusing a device in use. The policy is spelled out in include/ring3/pci/bind.hpp.
#include <fmt/core.h>

#include <memory>
#include <string>

#include "commands.hpp"
#include "ring3/core/log.hpp"
#include "ring3/pci/address.hpp"
#include "ring3/pci/bind.hpp"

namespace ring3::tool {
namespace {

struct BindArgs {
    std::string bdf;
    std::string driver;
    bool force = false;
    std::string sysfs_root = "/sys";
    std::string proc_root = "/proc";
};

pci::DriverBinder make_binder(const BindArgs& args) {
    pci::BindEnvironment env;
    env.sysfs_root = args.sysfs_root;
    env.proc_root = args.proc_root;
    return pci::DriverBinder(std::move(env));
}

void add_common_options(CLI::App* command, BindArgs& args) {
    command->add_flag("--force", args.force,
                      "take the device even if in use (mounted, swap, held by dm/md, interface "
                      "up)");
    command->add_option("--sysfs-root", args.sysfs_root, "sysfs mount point (tests: a fake tree)")
        ->capture_default_str();
    command->add_option("--proc-root", args.proc_root, "procfs mount point (tests: a fake tree)")
        ->capture_default_str();
}

void print_warnings(const pci::BindReport& report) {
    for (const auto& warning : report.warnings) {
        log_warn("{}", warning);
    }
}

void run_bind(const BindArgs& args) {
    const auto address = pci::Address::parse(args.bdf);
    const auto report = make_binder(args).bind(address, args.driver, args.force);
    print_warnings(report);
    const std::string bdf = address.to_string();
    if (!report.changed) {
        fmt::print("{}: already bound to {}\n", bdf, args.driver);
    } else {
        fmt::print("{}: {} -> {}\n", bdf,
                   report.previous_driver.empty() ? "(no driver)" : report.previous_driver,
                   args.driver);
    }
}

void run_unbind(const BindArgs& args) {
    const auto address = pci::Address::parse(args.bdf);
    const auto report = make_binder(args).unbind(address, args.force);
    print_warnings(report);
    const std::string bdf = address.to_string();
    if (!report.previous_driver.empty()) {
        fmt::print("{}: unbound from {}\n", bdf, report.previous_driver);
    } else {
        fmt::print("{}: was not bound to a driver\n", bdf);
    }
    if (!report.cleared_override.empty()) {
        fmt::print("{}: cleared driver_override ({})\n", bdf, report.cleared_override);
    }
}

}  // namespace

void add_bind_commands(CLI::App& app) {
    auto bind_args = std::make_shared<BindArgs>();
    auto* bind = app.add_subcommand(
        "bind",
        "Bind a device to a driver (vfio-pci, uio_pci_generic, or a kernel driver such as nvme)\n"
        "through driver_override, then check that the driver really took it. The override stays\n"
        "set until `ring3 unbind`. Refuses a device in use unless --force.");
    bind->add_option("BDF", bind_args->bdf, "PCI address, e.g. 0000:01:00.0")->required();
    bind->add_option("DRIVER", bind_args->driver, "driver name as in /sys/bus/pci/drivers")
        ->required();
    add_common_options(bind, *bind_args);
    bind->callback([bind_args] { run_bind(*bind_args); });

    auto unbind_args = std::make_shared<BindArgs>();
    auto* unbind = app.add_subcommand(
        "unbind",
        "Detach a device from its driver and clear driver_override. It stays without a driver\n"
        "until `ring3 bind BDF DRIVER` (or a write of BDF to /sys/bus/pci/drivers_probe, which\n"
        "gives it to its matching kernel driver). Refuses a device in use unless --force.");
    unbind->add_option("BDF", unbind_args->bdf, "PCI address, e.g. 0000:01:00.0")->required();
    add_common_options(unbind, *unbind_args);
    unbind->callback([unbind_args] { run_unbind(*unbind_args); });
}

}  // namespace ring3::tool
