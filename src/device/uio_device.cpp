// A PCI device through uio_pci_generic (Documentation/driver-api/uio-howto.rst, "Generic PCI UIO
// driver"): the kernel only forwards INTx, masking it with the PCI 2.3 Interrupt Disable bit.
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/device/uio.hpp"
#include "ring3/pci/bar.hpp"
#include "ring3/pci/config_space.hpp"

namespace ring3::uio {

PhysicalSpace::PhysicalSpace(std::string device, std::string iommu_group_type,
                             std::filesystem::path pagemap)
    : device_(std::move(device)),
      group_type_(std::move(iommu_group_type)),
      pagemap_(std::move(pagemap)) {
    if (!group_type_.empty() && group_type_ != "identity") {
        throw Error::invalid(
            "use physical addresses for DMA of", device_,
            fmt::format("its IOMMU group has a translating '{}' domain, so physical addresses "
                        "are not what the device sees; use VFIO (`ring3 bind BDF vfio-pci`), or "
                        "boot with iommu=pt",
                        group_type_),
            EPERM);
    }
}

// pagemap: one 64-bit entry per 4 KiB virtual page; bit 63 present, bits 0-54 the page frame
// number (zero unless the reader has CAP_SYS_ADMIN).
void PhysicalSpace::map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) {
    if (chunk.page_size < kHugePage) {
        throw Error::invalid("map DMA at physical addresses for", device_,
                             "UIO DMA needs hugepages (an arena of 2 MiB pages): small pages are "
                             "not physically contiguous and may move; reserve some with `echo N "
                             "> /proc/sys/vm/nr_hugepages`",
                             ENOMEM);
    }
    UniqueFd fd = UniqueFd::open(pagemap_.string(), O_RDONLY);
    const std::uint64_t step = chunk.size / iovas.size();
    for (std::size_t i = 0; i < iovas.size(); ++i) {
        const auto vaddr = reinterpret_cast<std::uintptr_t>(chunk.cpu) + i * step;
        std::uint64_t entry = 0;
        const auto at = static_cast<off_t>((vaddr / 4096) * sizeof entry);
        if (::pread(fd.get(), &entry, sizeof entry, at) != sizeof entry) {
            throw Error::from_errno("read", pagemap_.string());
        }
        const std::uint64_t pfn = entry & ((1ull << 55) - 1);
        if ((entry >> 63) == 0) {
            throw Error::invalid("translate DMA address for", device_,
                                 fmt::format("page at {:#x} is not present", vaddr), EFAULT);
        }
        if (pfn == 0) {
            throw Error::invalid("translate DMA address for", device_,
                                 "/proc/self/pagemap gives no physical addresses to this process: "
                                 "UIO DMA needs root (CAP_SYS_ADMIN)",
                                 EPERM);
        }
        iovas[i] = pfn * 4096 + (vaddr % 4096);
    }
}

namespace {

std::string read_link_name(const std::filesystem::path& dir) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        return entry.path().filename().string();
    }
    return {};
}

class UioDevice final : public Device {
  public:
    UioDevice(pci::Address address, pci::DeviceInfo info, std::filesystem::path dev_root,
              std::string uio_name, std::string group_type)
        : address_(address),
          info_(std::move(info)),
          uio_path_((dev_root / uio_name).string()),
          physical_("uio:" + address.to_string(), std::move(group_type)) {
        const auto config = (info_.path / "config").string();
        const int fd = ::open(config.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            const int err = errno;
            if (err == EACCES || err == EPERM) {
                throw Error("open UIO device", name(), err,
                            "UIO needs root: writing config space (bus mastering, interrupts) "
                            "and reading physical addresses from /proc/self/pagemap require it; "
                            "without root use VFIO with a user-owned group");
            }
            throw Error("open", config, err);
        }
        config_fd_.reset(fd);
        mappings_.resize(pci::kBarCount);
    }

    std::string name() const override { return "uio:" + address_.to_string(); }
    std::optional<pci::Address> address() const override { return address_; }

    void read_config(std::uint32_t offset, std::span<std::byte> out) override {
        config_transfer(offset, out.data(), out.size(), false);
    }
    void write_config(std::uint32_t offset, std::span<const std::byte> in) override {
        config_transfer(offset, const_cast<std::byte*>(in.data()), in.size(), true);
    }

    RegionInfo region_info(unsigned index) override {
        check_bar(index);
        RegionInfo info;
        info.index = index;
        const pci::Resource* resource = info_.bar(index);
        if (resource == nullptr || !resource->used()) {
            return info;
        }
        info.size = resource->size();
        info.readable = true;
        info.writable = true;
        info.io_space = resource->is_io();
        info.mappable = resource->is_memory();
        std::error_code ec;
        info.write_combining =
            info.mappable &&
            std::filesystem::exists(info_.path / fmt::format("resource{}_wc", index), ec);
        return info;
    }

    RegionMapping map_region(unsigned index, MapMode mode) override {
        const RegionInfo info = region_info(index);
        const std::string what = fmt::format("{} BAR{}", name(), index);
        if (info.size == 0) {
            throw Error::invalid("map", what, "the BAR is unused", ENOENT);
        }
        if (!info.mappable) {
            throw Error::invalid(
                "map", what, "an I/O-port BAR cannot be mapped; use region_read/write", ENOTSUP);
        }
        const bool wc = mode == MapMode::write_combining && info.write_combining;
        const auto path =
            (info_.path / (fmt::format("resource{}", index) + (wc ? "_wc" : ""))).string();
        UniqueFd fd = UniqueFd::open(path, O_RDWR);
        return RegionMapping{
            Mapping::map(fd.get(), info.size, PROT_READ | PROT_WRITE, MAP_SHARED, 0, path), 0, {}};
    }

    void region_read(unsigned index, std::uint64_t offset, std::span<std::byte> out) override {
        bar_transfer(index, offset, out.data(), out.size(), false);
    }
    void region_write(unsigned index, std::uint64_t offset,
                      std::span<const std::byte> in) override {
        bar_transfer(index, offset, const_cast<std::byte*>(in.data()), in.size(), true);
    }

    // uio_pci_generic forwards INTx only (it does not set up MSI or MSI-X).
    unsigned irq_count(IrqKind kind) override {
        if (kind != IrqKind::intx) {
            return 0;
        }
        return config_read8(pci::cfg::interrupt_pin) != 0 ? 1 : 0;
    }

    std::vector<irq::Interrupt> enable_irqs(IrqKind kind, unsigned count) override {
        if (kind != IrqKind::intx || count != 1 || irq_count(kind) != 1) {
            throw Error::invalid(fmt::format("enable {} {} vectors", count, to_string(kind)),
                                 name(),
                                 "uio_pci_generic delivers one INTx vector only (and only when "
                                 "the device has an interrupt pin)",
                                 ENOTSUP);
        }
        UniqueFd fd = UniqueFd::open(uio_path_, O_RDWR | O_NONBLOCK);
        UniqueFd config(::fcntl(config_fd_.get(), F_DUPFD_CLOEXEC, 0));
        if (!config) {
            throw Error::from_errno("duplicate config fd of", name());
        }
        irq::Interrupt interrupt =
            irq::Interrupt::uio_intx(std::move(fd), std::move(config), name() + " INTx");
        interrupt.rearm();
        intx_enabled_ = true;
        std::vector<irq::Interrupt> interrupts;
        interrupts.push_back(std::move(interrupt));
        return interrupts;
    }

    // uio_pci_generic has no irqcontrol: INTx is masked and unmasked with the Interrupt Disable
    // bit of the command register (PCI 3.0 §6.2.2).
    void disable_irqs(IrqKind kind) override {
        if (kind == IrqKind::intx && intx_enabled_) {
            set_interrupt_disable(true);
            intx_enabled_ = false;
        }
    }

    void unmask_intx() override { set_interrupt_disable(false); }

    dma::IovaSpace& iova_space() override { return physical_; }

    bool can_reset() override {
        std::error_code ec;
        return std::filesystem::exists(info_.path / "reset", ec) &&
               !info_.reset_methods.methods.empty();
    }

    void reset() override {
        if (!can_reset()) {
            throw Error::invalid("reset", name(), "the device has no reset method", ENOTTY);
        }
        const auto path = (info_.path / "reset").string();
        UniqueFd fd = UniqueFd::open(path, O_WRONLY);
        if (::write(fd.get(), "1", 1) != 1) {
            throw Error::from_errno("write", path);
        }
    }

  private:
    void check_bar(unsigned index) const {
        if (index >= pci::kBarCount) {
            throw Error::invalid(fmt::format("BAR {}", index), name(),
                                 "no such BAR: UIO gives BARs 0-5 only", EINVAL);
        }
    }

    void set_interrupt_disable(bool disable) {
        const std::uint16_t command = config_read16(pci::cfg::command);
        const auto updated =
            static_cast<std::uint16_t>(disable ? command | pci::cfg::command_interrupt_disable
                                               : command & ~pci::cfg::command_interrupt_disable);
        if (updated != command) {
            config_write16(pci::cfg::command, updated);
        }
    }

    void config_transfer(std::uint32_t offset, std::byte* data, std::size_t size, bool write) {
        const auto at = static_cast<off_t>(offset);
        const ssize_t n = write ? ::pwrite(config_fd_.get(), data, size, at)
                                : ::pread(config_fd_.get(), data, size, at);
        if (n != static_cast<ssize_t>(size)) {
            throw Error(write ? "write config space of" : "read config space of",
                        fmt::format("{} at {:#x} ({} bytes)", name(), offset, size),
                        n < 0 ? errno : EIO, n < 0 ? "" : "short transfer");
        }
    }

    // Memory BARs through a mapping made on first use; I/O BARs through pread/pwrite of
    // `resourceN`, which takes 1-, 2- and 4-byte accesses.
    void bar_transfer(unsigned index, std::uint64_t offset, std::byte* data, std::size_t size,
                      bool write) {
        const RegionInfo info = region_info(index);
        const std::string what =
            fmt::format("{} BAR{} offset {:#x} size {}", name(), index, offset, size);
        if (info.size == 0 || offset > info.size || size > info.size - offset) {
            throw Error::invalid(write ? "write" : "read", what,
                                 fmt::format("outside the BAR ({} bytes)", info.size), EINVAL);
        }
        if (size != 1 && size != 2 && size != 4 && size != 8) {
            throw Error::invalid(write ? "write" : "read", what, "accesses are 1, 2, 4 or 8 bytes");
        }
        if (info.mappable) {
            if (!mappings_[index]) {
                mappings_[index] = map_region(index, MapMode::uncached).mapping;
            }
            std::byte* at = mappings_[index].data() + offset;
            copy_mmio(at, data, size, write);
            return;
        }
        const auto path = (info_.path / fmt::format("resource{}", index)).string();
        UniqueFd fd = UniqueFd::open(path, O_RDWR);
        for (std::size_t done = 0; done < size; done += 4) {
            const std::size_t part = std::min<std::size_t>(size - done, 4);
            const auto at = static_cast<off_t>(offset + done);
            const ssize_t n = write ? ::pwrite(fd.get(), data + done, part, at)
                                    : ::pread(fd.get(), data + done, part, at);
            if (n != static_cast<ssize_t>(part)) {
                throw Error::from_errno(write ? "write" : "read", what);
            }
        }
    }

    // One access of the exact width: devices decode register accesses by size.
    static void copy_mmio(std::byte* mmio, std::byte* data, std::size_t size, bool write) {
        switch (size) {
            case 1:
                copy_one<std::uint8_t>(mmio, data, write);
                break;
            case 2:
                copy_one<std::uint16_t>(mmio, data, write);
                break;
            case 4:
                copy_one<std::uint32_t>(mmio, data, write);
                break;
            default:
                copy_one<std::uint64_t>(mmio, data, write);
                break;
        }
    }
    template <typename T>
    static void copy_one(std::byte* mmio, std::byte* data, bool write) {
        auto* reg = reinterpret_cast<volatile T*>(mmio);
        T value{};
        if (write) {
            std::memcpy(&value, data, sizeof value);
            *reg = value;
        } else {
            value = *reg;
            std::memcpy(data, &value, sizeof value);
        }
    }

    pci::Address address_;
    pci::DeviceInfo info_;
    std::string uio_path_;
    PhysicalSpace physical_;
    UniqueFd config_fd_;
    bool intx_enabled_ = false;
    std::vector<Mapping> mappings_;
};

}  // namespace

std::unique_ptr<Device> open(const pci::Address& address, const OpenOptions& options) {
    const pci::Sysfs sysfs(options.sysfs_root);
    pci::DeviceInfo info = sysfs.device(address);
    const std::string bdf = address.to_string();
    if (info.driver != "uio_pci_generic") {
        throw Error::invalid(
            "open UIO device", bdf,
            fmt::format("{}; hand it over with `ring3 bind {} uio_pci_generic`",
                        info.driver.empty() ? std::string("the device is bound to no driver")
                                            : fmt::format("the device is bound to '{}', not "
                                                          "uio_pci_generic",
                                                          info.driver),
                        bdf),
            ENODEV);
    }
    const std::string uio_name = read_link_name(info.path / "uio");
    if (uio_name.empty()) {
        throw Error::invalid("open UIO device", bdf,
                             fmt::format("bound to uio_pci_generic but {} lists no uioN",
                                         (info.path / "uio").string()),
                             ENOENT);
    }
    std::string group_type;
    if (info.iommu_group) {
        group_type = sysfs.iommu_group(*info.iommu_group).type;
    }
    return std::make_unique<UioDevice>(address, std::move(info), options.dev_root, uio_name,
                                       std::move(group_type));
}

}  // namespace ring3::uio
