// A PCI device through vfio-pci: linux/vfio.h (VFIO_DEVICE_* ioctls, the PCI region and IRQ
// indexes) and Documentation/driver-api/vfio.rst.
#include <fmt/core.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ring3/broker/client.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/device/vfio.hpp"
#include "ring3/pci/bar.hpp"
#include "ring3/pci/config_space.hpp"

namespace ring3::vfio {
namespace {

struct RegionEntry {
    bool known = false;
    RegionInfo info;
    std::uint64_t file_offset = 0;  // where the region lives in the device fd
};

class VfioDevice final : public Device {
  public:
    VfioDevice(pci::Address address, std::shared_ptr<Container> container, UniqueFd fd,
               UniqueFd lease = {})
        : lease_(std::move(lease)),
          address_(address),
          container_(std::move(container)),
          fd_(std::move(fd)) {
        vfio_device_info info{};
        info.argsz = sizeof info;
        if (::ioctl(fd_.get(), VFIO_DEVICE_GET_INFO, &info) != 0) {
            throw Error::from_errno("VFIO_DEVICE_GET_INFO", name());
        }
        if ((info.flags & VFIO_DEVICE_FLAGS_PCI) == 0) {
            throw Error::invalid("open VFIO device", name(), "not a PCI device", ENODEV);
        }
        flags_ = info.flags;
        regions_.resize(info.num_regions);
        num_irqs_ = info.num_irqs;
    }

    ~VfioDevice() override {
        if (lease_) {
            fd_.reset();
            container_.reset();
            broker::release(lease_.get(), address_);
        }
    }
    VfioDevice(const VfioDevice&) = delete;
    VfioDevice& operator=(const VfioDevice&) = delete;

    std::optional<std::string> lost() override {
        if (!lost_ && lease_) {
            lost_ = broker::revoked(lease_.get());
        }
        return lost_;
    }

    std::string name() const override { return "vfio:" + address_.to_string(); }
    std::optional<pci::Address> address() const override { return address_; }

    void read_config(std::uint32_t offset, std::span<std::byte> out) override {
        transfer(kRegionConfig, offset, out.data(), out.size(), false);
    }
    void write_config(std::uint32_t offset, std::span<const std::byte> in) override {
        transfer(kRegionConfig, offset, const_cast<std::byte*>(in.data()), in.size(), true);
    }

    RegionInfo region_info(unsigned index) override { return entry(index).info; }

    RegionMapping map_region(unsigned index, MapMode mode) override {
        const RegionEntry& region = entry(index);
        const std::string what = fmt::format("{} region {}", name(), index);
        if (region.info.size == 0) {
            throw Error::invalid("map", what, "the region does not exist (unused BAR)", ENOENT);
        }
        if (!region.info.mappable) {
            throw Error::invalid("map", what,
                                 region.info.io_space
                                     ? "an I/O-port BAR cannot be mapped; use region_read/write"
                                     : "the kernel does not allow mapping this region; use "
                                       "region_read/write",
                                 ENOTSUP);
        }
        if (mode == MapMode::write_combining) {
            log_debug("{}: vfio-pci maps BARs uncached only; mapping uncached", what);
        }
        const int prot = PROT_READ | (region.info.writable ? PROT_WRITE : 0);
        if (region.info.sparse_areas.empty()) {
            return RegionMapping{Mapping::map(fd_.get(), region.info.size, prot, MAP_SHARED,
                                              region.file_offset, what),
                                 0,
                                 {}};
        }
        // Only some areas may be mapped: reserve the region's span inaccessible and map each area
        // at its place, so offsets stay region offsets and a stray access to a hole faults.
        void* raw = ::mmap(nullptr, region.info.size, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (raw == MAP_FAILED) {
            throw Error::from_errno("reserve address space for", what);
        }
        Mapping whole(raw, region.info.size);
        for (const auto& [offset, size] : region.info.sparse_areas) {
            void* at = ::mmap(whole.data() + offset, size, prot, MAP_SHARED | MAP_FIXED, fd_.get(),
                              static_cast<off_t>(region.file_offset + offset));
            if (at == MAP_FAILED) {
                throw Error::from_errno("map sparse area of", what);
            }
        }
        return RegionMapping{std::move(whole), 0, {}};
    }

    void region_read(unsigned index, std::uint64_t offset, std::span<std::byte> out) override {
        transfer(index, offset, out.data(), out.size(), false);
    }
    void region_write(unsigned index, std::uint64_t offset,
                      std::span<const std::byte> in) override {
        transfer(index, offset, const_cast<std::byte*>(in.data()), in.size(), true);
    }

    unsigned irq_count(IrqKind kind) override {
        const auto index = static_cast<unsigned>(kind);
        if (index >= num_irqs_) {
            return 0;
        }
        vfio_irq_info info{};
        info.argsz = sizeof info;
        info.index = index;
        if (::ioctl(fd_.get(), VFIO_DEVICE_GET_IRQ_INFO, &info) != 0) {
            throw Error::from_errno(fmt::format("VFIO_DEVICE_GET_IRQ_INFO {}", to_string(kind)),
                                    name());
        }
        return (info.flags & VFIO_IRQ_INFO_EVENTFD) != 0 ? info.count : 0;
    }

    std::vector<irq::Interrupt> enable_irqs(IrqKind kind, unsigned count) override {
        const unsigned available = irq_count(kind);
        if (count == 0 || count > available) {
            throw Error::invalid(fmt::format("enable {} {} vectors", count, to_string(kind)),
                                 name(), fmt::format("the device offers {}", available));
        }
        std::vector<irq::Interrupt> interrupts;
        interrupts.reserve(count);
        for (unsigned i = 0; i < count; ++i) {
            interrupts.push_back(
                irq::Interrupt::make_eventfd(fmt::format("{} {}[{}]", name(), to_string(kind), i)));
        }
        // MSI-X is NORESIZE on this kernel: vectors cannot be added to a live set, so a new set
        // replaces the old one (disable first, then enable all at once).
        disable_irqs(kind);
        std::vector<std::uint8_t> buffer(sizeof(vfio_irq_set) + count * sizeof(std::int32_t));
        auto* set = reinterpret_cast<vfio_irq_set*>(buffer.data());
        set->argsz = static_cast<std::uint32_t>(buffer.size());
        set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        set->index = static_cast<std::uint32_t>(kind);
        set->start = 0;
        set->count = count;
        for (unsigned i = 0; i < count; ++i) {
            const std::int32_t fd = interrupts[i].fd();
            std::memcpy(set->data + i * sizeof fd, &fd, sizeof fd);
        }
        if (::ioctl(fd_.get(), VFIO_DEVICE_SET_IRQS, set) != 0) {
            throw Error::from_errno(
                fmt::format("enable {} {} vectors (VFIO_DEVICE_SET_IRQS)", count, to_string(kind)),
                name());
        }
        enabled_[static_cast<unsigned>(kind)] = true;
        return interrupts;
    }

    void disable_irqs(IrqKind kind) override {
        // The kernel refuses (EINVAL) to disable an index that is not the one enabled.
        if (!enabled_[static_cast<unsigned>(kind)]) {
            return;
        }
        vfio_irq_set set{};
        set.argsz = sizeof set;
        set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
        set.index = static_cast<std::uint32_t>(kind);
        set.start = 0;
        set.count = 0;
        if (::ioctl(fd_.get(), VFIO_DEVICE_SET_IRQS, &set) != 0) {
            throw Error::from_errno(
                fmt::format("disable {} (VFIO_DEVICE_SET_IRQS)", to_string(kind)), name());
        }
        enabled_[static_cast<unsigned>(kind)] = false;
    }

    void unmask_intx() override {
        vfio_irq_set set{};
        set.argsz = sizeof set;
        set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
        set.index = VFIO_PCI_INTX_IRQ_INDEX;
        set.start = 0;
        set.count = 1;
        if (::ioctl(fd_.get(), VFIO_DEVICE_SET_IRQS, &set) != 0) {
            throw Error::from_errno("unmask INTx (VFIO_DEVICE_SET_IRQS)", name());
        }
    }

    dma::IovaSpace& iova_space() override { return *container_; }

    bool can_reset() override { return (flags_ & VFIO_DEVICE_FLAGS_RESET) != 0; }

    void reset() override {
        if (!can_reset()) {
            throw Error::invalid("reset", name(),
                                 "the device has no reset method (no FLR, PM or bus reset; "
                                 "see `ring3 show` for reset_method)",
                                 ENOTTY);
        }
        if (::ioctl(fd_.get(), VFIO_DEVICE_RESET) != 0) {
            throw Error::from_errno("VFIO_DEVICE_RESET", name());
        }
    }

  private:
    // Region info with its capability chain (VFIO_REGION_INFO_CAP_SPARSE_MMAP,
    // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE), read once per region.
    const RegionEntry& entry(unsigned index) {
        if (index >= regions_.size()) {
            throw Error::invalid(fmt::format("region {}", index), name(),
                                 fmt::format("no such region: the device has {} (0-5 BARs, 6 ROM, "
                                             "7 config)",
                                             regions_.size()),
                                 EINVAL);
        }
        RegionEntry& region = regions_[index];
        if (region.known) {
            return region;
        }
        std::vector<std::uint8_t> buffer(sizeof(vfio_region_info));
        auto* info = reinterpret_cast<vfio_region_info*>(buffer.data());
        info->argsz = static_cast<std::uint32_t>(buffer.size());
        info->index = index;
        if (::ioctl(fd_.get(), VFIO_DEVICE_GET_REGION_INFO, info) != 0) {
            throw Error::from_errno(fmt::format("VFIO_DEVICE_GET_REGION_INFO {}", index), name());
        }
        if (info->argsz > buffer.size()) {
            buffer.resize(info->argsz);
            info = reinterpret_cast<vfio_region_info*>(buffer.data());
            info->argsz = static_cast<std::uint32_t>(buffer.size());
            info->index = index;
            if (::ioctl(fd_.get(), VFIO_DEVICE_GET_REGION_INFO, info) != 0) {
                throw Error::from_errno(fmt::format("VFIO_DEVICE_GET_REGION_INFO {}", index),
                                        name());
            }
        }
        region.info.index = index;
        region.info.size = info->size;
        region.info.readable = (info->flags & VFIO_REGION_INFO_FLAG_READ) != 0;
        region.info.writable = (info->flags & VFIO_REGION_INFO_FLAG_WRITE) != 0;
        region.info.mappable = (info->flags & VFIO_REGION_INFO_FLAG_MMAP) != 0;
        region.file_offset = info->offset;
        if ((info->flags & VFIO_REGION_INFO_FLAG_CAPS) != 0) {
            std::uint32_t offset = info->cap_offset;
            for (int guard = 0; offset != 0 && guard < 64; ++guard) {
                if (offset < sizeof(vfio_region_info) ||
                    offset + sizeof(vfio_info_cap_header) > buffer.size()) {
                    break;
                }
                const auto* header = reinterpret_cast<const vfio_info_cap_header*>(&buffer[offset]);
                if (header->id == VFIO_REGION_INFO_CAP_SPARSE_MMAP &&
                    offset + sizeof(vfio_region_info_cap_sparse_mmap) <= buffer.size()) {
                    const auto* sparse =
                        reinterpret_cast<const vfio_region_info_cap_sparse_mmap*>(header);
                    const std::size_t room = (buffer.size() - offset - sizeof(*sparse)) /
                                             sizeof(vfio_region_sparse_mmap_area);
                    for (std::uint32_t i = 0; i < sparse->nr_areas && i < room; ++i) {
                        const auto& area = sparse->areas[i];
                        if (area.size != 0 && area.offset <= info->size &&
                            area.size <= info->size - area.offset) {
                            region.info.sparse_areas.emplace_back(area.offset, area.size);
                        }
                    }
                    if (region.info.sparse_areas.empty()) {
                        region.info.mappable = false;  // sparse with no area: nothing maps
                    }
                }
                offset = header->next;
            }
        }
        if (index < pci::kBarCount && region.info.size != 0) {
            // VFIO does not say whether a BAR is I/O space; the BAR register does (PCI 3.0
            // §6.2.5.1, bit 0).
            region.info.io_space = (config_read32(pci::cfg::bar0 + 4 * index) & 1u) != 0;
        }
        region.known = true;
        return region;
    }

    void transfer(unsigned index, std::uint64_t offset, std::byte* data, std::size_t size,
                  bool write) {
        const RegionEntry& region = entry(index);
        const std::string what =
            fmt::format("{} region {} offset {:#x} size {}", name(), index, offset, size);
        if (region.info.size == 0 || offset > region.info.size ||
            size > region.info.size - offset) {
            throw Error::invalid(write ? "write" : "read", what,
                                 fmt::format("outside the region ({} bytes)", region.info.size),
                                 EINVAL);
        }
        const auto at = static_cast<off_t>(region.file_offset + offset);
        const ssize_t n =
            write ? ::pwrite(fd_.get(), data, size, at) : ::pread(fd_.get(), data, size, at);
        if (n != static_cast<ssize_t>(size)) {
            if (n < 0) {
                throw Error::from_errno(write ? "write" : "read", what);
            }
            throw Error::invalid(write ? "write" : "read", what,
                                 fmt::format("short transfer: {} bytes", n), EIO);
        }
    }

    // Closed last, after the device and the container: for a device claimed from ring3d, closing
    // it gives the device back (ring3d then quiesces and resets it); the destructor first
    // releases it and waits for ring3d, so that a claim right after finds the device free.
    UniqueFd lease_;
    pci::Address address_;
    std::shared_ptr<Container> container_;
    UniqueFd fd_;
    std::uint32_t flags_ = 0;
    std::uint32_t num_irqs_ = 0;
    std::vector<RegionEntry> regions_;
    bool enabled_[5] = {};  // per IrqKind: a trigger set is installed
    std::optional<std::string> lost_;
};

}  // namespace

OpenedDevice open_fds(const pci::Address& address, const OpenOptions& options) {
    const pci::Sysfs sysfs(options.sysfs_root);
    const GroupLocation location = locate_group(sysfs, options.dev_root, address);
    auto container =
        options.vfio_container ? options.vfio_container : Container::create(options.dev_root);
    const int group_fd = container->attach_group(location, sysfs);
    const std::string bdf = address.to_string();
    const int fd = ::ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, bdf.c_str());
    if (fd < 0) {
        throw Error::from_errno("VFIO_GROUP_GET_DEVICE_FD", bdf);
    }
    return OpenedDevice{std::move(container), UniqueFd(fd)};
}

std::unique_ptr<Device> open(const pci::Address& address, const OpenOptions& options) {
    OpenedDevice opened = open_fds(address, options);
    return std::make_unique<VfioDevice>(address, std::move(opened.container),
                                        std::move(opened.device_fd));
}

std::unique_ptr<Device> adopt(const pci::Address& address, std::shared_ptr<Container> container,
                              UniqueFd device_fd, UniqueFd lease) {
    if (!container || !device_fd) {
        throw Error::invalid("adopt VFIO device", address.to_string(),
                             "a container and a device fd are both needed", EBADF);
    }
    return std::make_unique<VfioDevice>(address, std::move(container), std::move(device_fd),
                                        std::move(lease));
}

}  // namespace ring3::vfio
