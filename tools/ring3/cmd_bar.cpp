// `ring3 bar dump BDF BAR [OFFSET[:LENGTH]] [--width 8|16|32|64]`: read a BAR through sysfs and
// print it in hex, one line per 16 bytes.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>

#include "commands.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/device/device.hpp"
#include "ring3/device/region_access.hpp"
#include "ring3/pci/address.hpp"
#include "ring3/pci/bar.hpp"
#include "ring3/pci/config_space.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3::tool {
namespace {

struct BarDumpArgs {
    std::string bdf;
    unsigned bar = 0;
    std::string range;
    unsigned width = 32;
    bool force = false;
    std::string sysfs_root = "/sys";
};

// Reads the COMMAND register from the (unprivileged) first 64 bytes of `config`; nullopt when
// it cannot be read.
std::optional<std::uint16_t> read_command(const std::string& device_dir) {
    try {
        const UniqueFd fd = UniqueFd::open(device_dir + "/config", O_RDONLY);
        unsigned char bytes[2] = {};
        if (::pread(fd.get(), bytes, sizeof bytes, pci::cfg::command) != 2) {
            return std::nullopt;
        }
        return static_cast<std::uint16_t>(bytes[0] | bytes[1] << 8);
    } catch (const Error&) {
        return std::nullopt;
    }
}

void run_bar_dump(const BarDumpArgs& args) {
    const auto address = pci::Address::parse(args.bdf);
    const auto range = args.range.empty() ? pci::ByteRange{} : pci::parse_byte_range(args.range);

    pci::SysfsBarOptions options;
    options.sysfs_root = args.sysfs_root;
    options.allow_kernel_driver = args.force;
    std::unique_ptr<pci::RegionAccess> bar;
    std::unique_ptr<Device> vfio_device;  // keeps the device open while `bar` uses it
    try {
        if (args.sysfs_root == "/sys" && args.bar < pci::kBarCount &&
            pci::Sysfs(args.sysfs_root).driver(address) == "vfio-pci") {
            // A device handed to VFIO: its regions through VFIO, which also works for a user who
            // owns the group but may not open sysfs resource files.
            vfio_device = open_device("vfio:" + address.to_string());
            bar = open_region_access(*vfio_device, args.bar);
        } else {
            bar = pci::open_sysfs_bar(address, args.bar, options);
        }
    } catch (const Error& e) {
        if (e.errnum() != EBUSY) {
            throw;
        }
        throw Error(e.operation(), e.object(), e.errnum(),
                    e.reason() +
                        "; --force reads it anyway, at the risk of registers whose "
                        "reads have side effects");
    }

    const std::string device_dir = args.sysfs_root + "/bus/pci/devices/" + address.to_string();
    if (const auto command = read_command(device_dir)) {
        const bool io = bar->mapped() == nullptr;
        const auto decode = io ? pci::cfg::command_io_space : pci::cfg::command_memory_space;
        if ((*command & decode) == 0) {
            log_warn(
                "{} has {} decoding off in its COMMAND register ({:#06x}): reads return all "
                "ones",
                address.to_string(), io ? "I/O" : "memory", *command);
        }
    }

    std::uint64_t length = 0;
    if (range.length) {
        length = *range.length;
    } else if (range.offset < bar->size()) {
        length = std::min(pci::kDefaultDumpLength, bar->size() - range.offset);
    } else {
        length = args.width / 8;  // out of range: let the range check say so
    }
    fmt::print("{}", pci::format_dump(*bar, range.offset, length, args.width));
}

}  // namespace

void add_bar_command(CLI::App& app) {
    auto* bar = app.add_subcommand(
        "bar", "Read a device's BARs (through VFIO when it is on vfio-pci, else sysfs)");
    bar->require_subcommand(1);

    auto args = std::make_shared<BarDumpArgs>();
    auto* dump = bar->add_subcommand(
        "dump",
        "Print BAR registers in hex, one line per 16 bytes: 'offset: word word ...'.\n"
        "Memory BARs are mapped (VFIO region, or sysfs resourceN), I/O BARs read with pread.\n"
        "A device on a kernel driver is refused (and CONFIG_IO_STRICT_DEVMEM kernels refuse to\n"
        "map it anyway): free it first with `ring3 unbind BDF` or `ring3 bind BDF vfio-pci`.");
    dump->add_option("BDF", args->bdf, "PCI address, e.g. 0000:01:00.0")->required();
    dump->add_option("BAR", args->bar, "BAR index, 0-5")->required();
    dump->add_option("RANGE", args->range,
                     "OFFSET[:LENGTH] in bytes, each hex with 0x or decimal (default: offset 0, "
                     "length the whole BAR from OFFSET but at most 256 bytes)");
    dump->add_option("--width", args->width, "access width in bits (default 32)")
        ->check(CLI::IsMember({8, 16, 32, 64}));
    dump->add_flag("--force", args->force,
                   "read even while a kernel driver owns the device (reads can have side "
                   "effects; strict-devmem kernels still refuse)");
    dump->add_option("--sysfs-root", args->sysfs_root, "sysfs mount point (tests: a fake tree)")
        ->capture_default_str();
    dump->callback([args] { run_bar_dump(*args); });
}

}  // namespace ring3::tool
