// `ring3 irq-test DEVICE [--count N]`: raise interrupts on a device ring3 knows how to trigger and
// measure how they arrive through the device's interrupt fds.
//
// e1000e (Intel 82574, datasheet §10.2.4 "interrupt registers", declared in the driver's
// include/ring3/e1000e/registers.hpp): a cause set by software through
// ICS raises the interrupt the cause is routed to. With MSI-X (VFIO), IVAR routes the RxQ0 cause
// to vector 0; without (UIO), the cause asserts INTx. What QEMU's model needs is written down in
// shared/REFERENCE.md: bus mastering on, and the cause cleared through ICR after every interrupt,
// or no second interrupt comes.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "commands.hpp"
#include "ring3/core/error.hpp"
#include "ring3/device/device.hpp"
#include "ring3/e1000e/registers.hpp"
#include "ring3/e1000e/spec.hpp"
#include "ring3/mmio/register.hpp"
#include "ring3/nvme/controller.hpp"

namespace ring3::tool {
namespace {

struct Percentiles {
    double p50 = 0;
    double p99 = 0;
    double max = 0;
};

Percentiles percentiles(std::vector<double> samples) {
    if (samples.empty()) {
        return {};
    }
    std::sort(samples.begin(), samples.end());
    const auto at = [&](double q) {
        const auto index = static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1));
        return samples[index];
    };
    return {at(0.50), at(0.99), samples.back()};
}

// Prints the figures (last line `irq_received: N/M`) and fails unless every interrupt arrived.
void report(const std::string& device, const char* kind, unsigned count,
            std::vector<double> latencies_us, bool json) {
    const auto received = static_cast<unsigned>(latencies_us.size());
    const Percentiles p = percentiles(std::move(latencies_us));
    if (json) {
        fmt::print(
            "{{\"device\": \"{}\", \"kind\": \"{}\", \"sent\": {}, \"received\": {}, "
            "\"timeouts\": {}, \"latency_us\": {{\"p50\": {:.1f}, \"p99\": {:.1f}, \"max\": "
            "{:.1f}}}}}\n",
            device, kind, count, received, count - received, p.p50, p.p99, p.max);
    } else {
        fmt::print("{} {} vector 0: {} of {} interrupts received, {} timed out\n", device, kind,
                   received, count, count - received);
        fmt::print(
            "wake-up latency (trigger to wait() return): p50 {:.1f} us, p99 {:.1f} us, "
            "max {:.1f} us\n",
            p.p50, p.p99, p.max);
        fmt::print("irq_received: {}/{}\n", received, count);
    }
    if (received != count) {
        throw Error::invalid(
            "irq-test", device,
            fmt::format("{} of {} interrupts did not arrive", count - received, count), ETIMEDOUT);
    }
}

void run_e1000e(Device& device, unsigned count, bool json) {
    const bool msix = device.irq_count(IrqKind::msix) > 0;
    const IrqKind kind = msix ? IrqKind::msix : IrqKind::intx;
    if (!msix && device.irq_count(IrqKind::intx) == 0) {
        throw Error::invalid("irq-test", device.name(), "the device offers neither MSI-X nor INTx",
                             ENOTSUP);
    }
    namespace reg = e1000e::reg;
    auto bar = device.map_region(0);
    mmio::MappedIo regs(bar.mapping.data(), bar.mapping.size());
    if (regs.size() < reg::kRegisterSpace) {
        throw Error::invalid(
            "irq-test", device.name(),
            fmt::format("BAR0 is {} bytes, the 82574 has {}", regs.size(), reg::kRegisterSpace),
            EIO);
    }
    if (regs.read<reg::Status>().raw() == 0xffffffff) {
        throw Error::invalid("irq-test", device.name(), "BAR0 reads all ones: device gone?", EIO);
    }
    constexpr auto kRxQ0 = static_cast<std::uint32_t>(reg::Cause::RxQ0::mask);

    device.set_bus_master(true);  // an MSI-X message is a memory write by the device
    auto interrupts = device.enable_irqs(kind, 1);
    irq::Interrupt& vector = interrupts.front();

    regs.write_raw<reg::Imc>(0xffffffff);
    regs.write_raw<reg::Icr>(0xffffffff);
    (void)regs.read<reg::Icr>();
    if (msix) {
        // §10.2.4.9: the RxQ0 cause to MSI-X vector 0.
        regs.write(
            mmio::Value<reg::Ivar>().set<reg::Ivar::RxQ0Vector>(0).set<reg::Ivar::RxQ0Valid>(1));
    }
    regs.write32(reg::Eitr::offset_of(0), 0);  // no throttling: latency is what is measured
    regs.write_raw<reg::Ims>(kRxQ0);
    vector.drain();

    std::vector<double> latencies_us;
    latencies_us.reserve(count);
    for (unsigned i = 0; i < count; ++i) {
        const auto start = std::chrono::steady_clock::now();
        regs.write_raw<reg::Ics>(kRxQ0);
        const auto arrived = vector.wait(std::chrono::seconds(1));
        const auto end = std::chrono::steady_clock::now();
        if (arrived != 0) {
            latencies_us.push_back(std::chrono::duration<double, std::micro>(end - start).count());
        }
        // Clear the cause: in MSI-X mode reading ICR does not, and QEMU will not signal a cause
        // that is still pending. With INTx, clearing deasserts the line before it is re-armed.
        regs.write_raw<reg::Icr>(kRxQ0);
        if (!msix) {
            vector.rearm();
        }
    }
    regs.write_raw<reg::Imc>(0xffffffff);
    std::this_thread::sleep_for(reg::interrupt_settle_time(0));
    device.disable_irqs(kind);
    device.set_bus_master(false);

    report(device.name(), to_string(kind), count, std::move(latencies_us), json);
}

// NVMe (Base 2.0 §3.1.3, §5.27.1.5): the admin completion queue interrupts on vector 0 (MSI-X
// through VFIO, INTx through UIO). Each round submits Get Features (Number of Queues) and waits for
// the vector, then reaps the completion (which, for INTx, also lowers the line).
void run_nvme(Device& device, unsigned count, bool json) {
    const bool msix = device.irq_count(IrqKind::msix) > 0;
    const IrqKind kind = msix ? IrqKind::msix : IrqKind::intx;
    auto interrupts = device.enable_irqs(kind, 1);  // before the controller: VFIO needs all first
    irq::Interrupt& vector = interrupts.front();
    nvme::Controller controller(device);
    struct Done {
        bool done = false;
    } done;
    const auto on_done = [](void* context, const nvme::CompletionEntry&) {
        static_cast<Done*>(context)->done = true;
    };
    std::vector<double> latencies_us;
    latencies_us.reserve(count);
    // Bring-up's admin completions interrupted too: with INTx the kernel masked the line then,
    // so consume those and unmask before measuring.
    vector.drain();
    vector.rearm();
    for (unsigned i = 0; i < count; ++i) {
        nvme::SubmissionEntry command{};
        command.opcode = nvme::admin::get_features;
        command.cdw10 = nvme::feature::number_of_queues;
        done.done = false;
        const auto start = std::chrono::steady_clock::now();
        controller.submit_admin(command, on_done, &done);
        const auto arrived = vector.wait(std::chrono::seconds(1));
        const auto end = std::chrono::steady_clock::now();
        const auto deadline = end + std::chrono::seconds(1);
        while (!done.done && std::chrono::steady_clock::now() < deadline) {
            controller.poll_admin();
        }
        vector.rearm();  // INTx: the kernel's handler masked it; no-op for an eventfd
        if (!done.done) {
            throw Error::invalid("irq-test", device.name(), "the admin command did not complete",
                                 ETIMEDOUT);
        }
        if (arrived != 0) {
            latencies_us.push_back(std::chrono::duration<double, std::micro>(end - start).count());
        }
    }
    report(device.name(), to_string(kind), count, std::move(latencies_us), json);
}

}  // namespace

void add_irq_test_command(CLI::App& app) {
    auto* cmd =
        app.add_subcommand("irq-test",
                           "Raise interrupts on a device and measure their arrival (e1000e: MSI-X "
                           "through VFIO, INTx through UIO)");
    auto spec = std::make_shared<std::string>();
    auto count = std::make_shared<unsigned>(1000);
    auto json = std::make_shared<bool>(false);
    cmd->add_option("device", *spec,
                    "vfio:BDF, uio:BDF, or a BDF bound to vfio-pci/uio_pci_generic")
        ->required();
    cmd->add_option("--count", *count, "Interrupts to raise (default 1000)")
        ->check(CLI::Range(1u, 10000000u));
    cmd->add_flag("--json", *json, "Print the result as JSON");
    cmd->callback([spec, count, json] {
        auto device = open_device(*spec);
        const std::uint16_t vendor = device->vendor_id();
        const std::uint16_t id = device->device_id();
        if (vendor == e1000e::kVendorIntel && id == e1000e::kDevice82574L) {
            run_e1000e(*device, *count, *json);
            return;
        }
        if (device->class_code() == 0x010802) {  // NVM Express
            run_nvme(*device, *count, *json);
            return;
        }
        throw Error::invalid("irq-test", device->name(),
                             fmt::format("ring3 does not know how to make [{:04x}:{:04x}] raise "
                                         "an interrupt; supported: e1000e [8086:10d3], NVMe "
                                         "(class 010802)",
                                         vendor, id),
                             ENOTSUP);
    });
}

}  // namespace ring3::tool
