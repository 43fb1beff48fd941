// `ring3 nvme identify DEVICE` and `ring3 nvme smart DEVICE`: the controller and its namespaces,
// and the SMART / health log, through ring3's own NVMe driver.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "commands.hpp"
#include "ring3/core/error.hpp"
#include "ring3/nvme/block_device.hpp"
#include "ring3/nvme/controller.hpp"
#include "ring3/nvme/spec.hpp"

namespace ring3::tool {
namespace {

std::string version_text(std::uint32_t version) {
    return fmt::format("{}.{}.{}", version >> 16, (version >> 8) & 0xff, version & 0xff);
}

std::string bytes_text(std::uint64_t bytes) {
    static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double value = static_cast<double>(bytes);
    unsigned unit = 0;
    while (value >= 1024 && unit + 1 < std::size(kUnits)) {
        value /= 1024;
        ++unit;
    }
    return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

void print_identify(nvme::Controller& controller) {
    const auto& info = controller.info();
    fmt::print("{}\n", controller.device().name());
    fmt::print("  vendor id            {:04x} (subsystem vendor {:04x})\n", info.vendor_id,
               info.subsystem_vendor_id);
    fmt::print("  serial number        {}\n", info.serial);
    fmt::print("  model number         {}\n", info.model);
    fmt::print("  firmware revision    {}\n", info.firmware);
    fmt::print("  NVMe version         {}\n", version_text(info.version));
    fmt::print("  controller id        {}\n", info.controller_id);
    fmt::print("  max data transfer    {} (MDTS {})\n", bytes_text(controller.max_transfer_bytes()),
               info.mdts);
    fmt::print("  max queue entries    {} (CAP.MQES + 1)\n", controller.max_queue_entries());
    fmt::print("  doorbell stride      {} bytes\n", controller.doorbell_stride());
    fmt::print("  ready timeout        {} ms (CAP.TO)\n", controller.ready_timeout().count());
    fmt::print("  namespaces           {} (NN), {} active\n", info.namespace_count,
               controller.namespaces().size());
    fmt::print("  volatile write cache {}\n", info.volatile_write_cache ? "yes" : "no");
    fmt::print("  write zeroes         {}\n", info.supports_write_zeroes() ? "yes" : "no");
    fmt::print("  dataset management   {}\n", info.supports_deallocate() ? "yes" : "no");
    fmt::print("  SGLs                 {}\n", info.supports_sgl() ? "yes" : "no");
    fmt::print("  async event limit    {}\n", info.async_event_limit + 1);
    fmt::print("  subsystem NQN        {}\n", info.subsystem_nqn);
    for (const auto& ns : controller.namespaces()) {
        fmt::print("namespace {}\n", ns.id);
        fmt::print("  size                 {} blocks ({})\n", ns.size,
                   bytes_text(ns.size * ns.block_size()));
        fmt::print("  capacity             {} blocks, {} in use\n", ns.capacity, ns.utilization);
        fmt::print("  block size           {} bytes (LBA format {})\n", ns.block_size(),
                   ns.format_index);
        fmt::print("  command set          {} (CSI {:02x}h)\n",
                   nvme::command_set_name(ns.command_set), ns.command_set);
        fmt::print("  metadata             {}\n",
                   ns.metadata_size() == 0
                       ? std::string("none")
                       : fmt::format("{} bytes per block, {}", ns.metadata_size(),
                                     ns.metadata_extended ? "extended LBA" : "separate buffer"));
        fmt::print("  protection           {}\n", ns.protection == 0
                                                      ? std::string("none")
                                                      : fmt::format("type {}", ns.protection));
        const std::string refusal = nvme::block_face_refusal(ns);
        fmt::print("  block device         {}\n",
                   refusal.empty() ? std::string("yes") : "no: " + refusal);
        for (std::size_t i = 0; i < ns.formats.size(); ++i) {
            const auto& f = ns.formats[i];
            fmt::print("  LBA format {:2}        {} bytes data, {} metadata{}\n", i, f.data_size,
                       f.metadata_size, i == ns.format_index ? " (in use)" : "");
        }
    }
}

void print_smart(nvme::Controller& controller) {
    const nvme::SmartLog log = controller.smart_log();
    fmt::print("{} SMART / health information\n", controller.device().name());
    fmt::print("  critical warning     {:#04x}{}\n", log.critical_warning,
               log.critical_warning == 0 ? " (none)" : "");
    fmt::print("  temperature          {} K ({} C)\n", log.temperature_kelvin,
               static_cast<int>(log.temperature_kelvin) - 273);
    fmt::print("  available spare      {}% (threshold {}%)\n", log.available_spare,
               log.available_spare_threshold);
    fmt::print("  percentage used      {}%\n", log.percentage_used);
    fmt::print("  data units read      {:.0f}\n", log.data_units_read);
    fmt::print("  data units written   {:.0f}\n", log.data_units_written);
    fmt::print("  host read commands   {:.0f}\n", log.host_read_commands);
    fmt::print("  host write commands  {:.0f}\n", log.host_write_commands);
    fmt::print("  power cycles         {:.0f}\n", log.power_cycles);
    fmt::print("  power on hours       {:.0f}\n", log.power_on_hours);
    fmt::print("  unsafe shutdowns     {:.0f}\n", log.unsafe_shutdowns);
    fmt::print("  media errors         {:.0f}\n", log.media_errors);
    fmt::print("  error log entries    {:.0f}\n", log.error_log_entries);
}

}  // namespace

void add_nvme_command(CLI::App& app) {
    auto* nvme = app.add_subcommand("nvme", "NVMe controllers through ring3's user-space driver");
    nvme->require_subcommand(1);
    auto spec = std::make_shared<std::string>();
    auto* identify = nvme->add_subcommand(
        "identify", "Identify the controller and its namespaces (like nvme id-ctrl / id-ns)");
    identify->add_option("device", *spec, "vfio:BDF, uio:BDF, or a BDF on vfio-pci/uio_pci_generic")
        ->required();
    identify->callback([spec] {
        auto device = open_device(*spec);
        nvme::Controller controller(*device);
        print_identify(controller);
    });
    auto* events = nvme->add_subcommand(
        "events", "Wait for asynchronous events (SMART warnings, notices) and print them");
    auto count = std::make_shared<unsigned>(1);
    auto seconds = std::make_shared<unsigned>(30);
    events->add_option("device", *spec, "vfio:BDF, uio:BDF, or a BDF on vfio-pci/uio_pci_generic")
        ->required();
    events->add_option("--count", *count, "stop after this many events (default 1)")
        ->check(CLI::Range(1u, 1000000u));
    events->add_option("--timeout", *seconds, "give up after this many seconds (default 30)")
        ->check(CLI::Range(1u, 86400u));
    events->callback([spec, count, seconds] {
        auto device = open_device(*spec);
        nvme::Controller controller(*device);
        unsigned seen = 0;
        controller.enable_async_events([&](const nvme::AsyncEvent& event) {
            ++seen;
            fmt::print("{}\n", event.describe());
            std::fflush(stdout);
        });
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*seconds);
        while (seen < *count && std::chrono::steady_clock::now() < deadline) {
            controller.poll_admin();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (seen < *count) {
            throw Error::invalid("wait for asynchronous events", device->name(),
                                 fmt::format("{} of {} within {} s", seen, *count, *seconds),
                                 ETIMEDOUT);
        }
    });
    auto* smart = nvme->add_subcommand("smart", "Print the SMART / health log");
    smart->add_option("device", *spec, "vfio:BDF, uio:BDF, or a BDF on vfio-pci/uio_pci_generic")
        ->required();
    smart->callback([spec] {
        auto device = open_device(*spec);
        nvme::Controller controller(*device);
        print_smart(controller);
    });
}

}  // namespace ring3::tool
