// VFIO container and group handling: linux/vfio.h, Documentation/driver-api/vfio.rst.
#include <fcntl.h>
#include <fmt/core.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/resource.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/device/vfio.hpp"

namespace ring3::vfio {
namespace {

// IOVAs below 1 MiB are never handed out: address 0 is a classic "forgot to set it" value, and a
// device DMAing there should fault, not hit a buffer.
constexpr std::uint64_t kLowestIova = 1ull << 20;

bool has_iommu(const std::filesystem::path& sysfs_root) {
    std::error_code ec;
    const auto groups = sysfs_root / "kernel" / "iommu_groups";
    return std::filesystem::exists(groups, ec) &&
           std::filesystem::directory_iterator(groups, ec) != std::filesystem::directory_iterator();
}

std::string memlock_limit_text() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_MEMLOCK, &limit) != 0) {
        return "unknown";
    }
    if (limit.rlim_cur == RLIM_INFINITY) {
        return "unlimited";
    }
    return fmt::format("{} KiB", limit.rlim_cur / 1024);
}

}  // namespace

GroupLocation locate_group(const pci::Sysfs& sysfs, const std::filesystem::path& dev_root,
                           const pci::Address& address) {
    const std::string bdf = address.to_string();
    const std::string driver = sysfs.driver(address);  // throws when the device does not exist
    if (driver != "vfio-pci") {
        std::string how;
        if (!has_iommu(sysfs.root())) {
            how = fmt::format(
                "; this system has no IOMMU (no {}/kernel/iommu_groups), and vfio-pci cannot take "
                "a device without one on this kernel (no CONFIG_VFIO_NOIOMMU). Either enable the "
                "IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line, and VT-d/AMD-Vi "
                "in the firmware), or use UIO: `ring3 bind {} uio_pci_generic`, then open uio:{}",
                sysfs.root().string(), bdf, bdf);
        } else {
            how = fmt::format("; hand it over with `ring3 bind {} vfio-pci`", bdf);
        }
        throw Error::invalid(
            "open VFIO device", bdf,
            (driver.empty() ? std::string("the device is bound to no driver")
                            : fmt::format("the device is bound to '{}', not vfio-pci", driver)) +
                how,
            ENODEV);
    }
    const auto group = sysfs.iommu_group_number(address);
    if (!group) {
        throw Error::invalid("open VFIO device", bdf,
                             "bound to vfio-pci but it has no IOMMU group link", ENODEV);
    }
    GroupLocation location;
    location.number = *group;
    std::error_code ec;
    const auto plain = dev_root / "vfio" / std::to_string(*group);
    const auto noiommu = dev_root / "vfio" / fmt::format("noiommu-{}", *group);
    if (std::filesystem::exists(plain, ec)) {
        location.dev_path = plain;
    } else if (std::filesystem::exists(noiommu, ec)) {
        location.dev_path = noiommu;
        location.noiommu = true;
    } else {
        throw Error::invalid("open VFIO device", bdf,
                             fmt::format("IOMMU group {} has no node {} (or {})", *group,
                                         plain.string(), noiommu.string()),
                             ENOENT);
    }
    return location;
}

std::shared_ptr<Container> Container::create(const std::filesystem::path& dev_root) {
    const auto path = (dev_root / "vfio" / "vfio").string();
    UniqueFd fd = UniqueFd::open(path, O_RDWR);
    const int version = ::ioctl(fd.get(), VFIO_GET_API_VERSION);
    if (version != VFIO_API_VERSION) {
        throw Error::invalid("open VFIO container", path,
                             fmt::format("API version {}, expected {}", version, VFIO_API_VERSION),
                             ENOTSUP);
    }
    return std::shared_ptr<Container>(new Container(std::move(fd)));
}

std::shared_ptr<Container> Container::adopt(UniqueFd container_fd, unsigned group_number,
                                            UniqueFd group_fd, bool noiommu) {
    if (!container_fd) {
        throw Error::invalid("adopt VFIO container", "fd", "no container fd given", EBADF);
    }
    std::shared_ptr<Container> container(new Container(std::move(container_fd)));
    if (group_fd) {
        container->groups_.emplace(group_number, std::move(group_fd));
    }
    container->iommu_set_ = true;
    container->noiommu_ = noiommu;
    if (!noiommu) {
        container->read_iommu_info();
    }
    return container;
}

Container::~Container() = default;

int Container::attach_group(const GroupLocation& location, const pci::Sysfs& sysfs) {
    if (auto found = groups_.find(location.number); found != groups_.end()) {
        return found->second.get();
    }
    const std::string path = location.dev_path.string();
    UniqueFd group;
    try {
        group = UniqueFd::open(path, O_RDWR);
    } catch (const Error& e) {
        if (e.errnum() == EBUSY) {
            throw Error("open VFIO group", path, EBUSY,
                        "the group is already open (another process or container has it)");
        }
        if (e.errnum() == EACCES || e.errnum() == EPERM) {
            throw Error("open VFIO group", path, e.errnum(),
                        "permission denied; run as root or give this user the group node "
                        "(chown/udev rule), and raise RLIMIT_MEMLOCK for DMA");
        }
        throw;
    }

    vfio_group_status status{};
    status.argsz = sizeof status;
    if (::ioctl(group.get(), VFIO_GROUP_GET_STATUS, &status) != 0) {
        throw Error::from_errno("VFIO_GROUP_GET_STATUS", path);
    }
    if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0) {
        std::string members;
        for (const auto& member : sysfs.iommu_group(location.number).members_on_kernel_drivers()) {
            members += fmt::format("{}{} (driver {})", members.empty() ? "" : ", ", member.name,
                                   member.driver);
        }
        throw Error::invalid(
            "open VFIO group", path,
            fmt::format("IOMMU group {} is not viable: every device in it must be bound to "
                        "vfio-pci or to no driver, but {} {}; bind them with `ring3 bind BDF "
                        "vfio-pci` or `ring3 unbind BDF`",
                        location.number, members.empty() ? "some member" : members,
                        members.find(',') != std::string::npos ? "are not" : "is not"),
            EPERM);
    }
    int container_fd = fd_.get();
    if (::ioctl(group.get(), VFIO_GROUP_SET_CONTAINER, &container_fd) != 0) {
        throw Error::from_errno("VFIO_GROUP_SET_CONTAINER", path);
    }
    if (!iommu_set_) {
        const unsigned long type = location.noiommu ? VFIO_NOIOMMU_IOMMU : VFIO_TYPE1v2_IOMMU;
        if (!location.noiommu && ::ioctl(fd_.get(), VFIO_CHECK_EXTENSION, type) != 1) {
            throw Error::invalid("open VFIO container", path,
                                 "the kernel lacks the type 1 v2 IOMMU driver (vfio_iommu_type1)",
                                 ENOTSUP);
        }
        if (::ioctl(fd_.get(), VFIO_SET_IOMMU, type) != 0) {
            throw Error::from_errno("VFIO_SET_IOMMU", path);
        }
        iommu_set_ = true;
        noiommu_ = location.noiommu;
        if (noiommu_) {
            log_warn(
                "VFIO group {} has NO IOMMU: the device can DMA anywhere in memory and "
                "ring3 cannot map DMA through it; use it only for register access",
                location.number);
        } else {
            read_iommu_info();
        }
    }
    const int raw = group.get();
    groups_.emplace(location.number, std::move(group));
    return raw;
}

// VFIO_IOMMU_GET_INFO with its capability chain (vfio.h: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
// VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL). The chain is kernel data, but offsets are still checked.
void Container::read_iommu_info() {
    std::vector<std::uint8_t> buffer(sizeof(vfio_iommu_type1_info));
    auto* info = reinterpret_cast<vfio_iommu_type1_info*>(buffer.data());
    info->argsz = static_cast<std::uint32_t>(buffer.size());
    if (::ioctl(fd_.get(), VFIO_IOMMU_GET_INFO, info) != 0) {
        throw Error::from_errno("VFIO_IOMMU_GET_INFO", "container");
    }
    if (info->argsz > buffer.size()) {
        buffer.resize(info->argsz);
        info = reinterpret_cast<vfio_iommu_type1_info*>(buffer.data());
        info->argsz = static_cast<std::uint32_t>(buffer.size());
        if (::ioctl(fd_.get(), VFIO_IOMMU_GET_INFO, info) != 0) {
            throw Error::from_errno("VFIO_IOMMU_GET_INFO", "container");
        }
    }
    ranges_.clear();
    if ((info->flags & VFIO_IOMMU_INFO_CAPS) != 0) {
        std::uint32_t offset = info->cap_offset;
        for (int guard = 0; offset != 0 && guard < 64; ++guard) {
            if (offset < sizeof(vfio_iommu_type1_info) ||
                offset + sizeof(vfio_info_cap_header) > buffer.size()) {
                break;
            }
            const auto* header = reinterpret_cast<const vfio_info_cap_header*>(&buffer[offset]);
            if (header->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE &&
                offset + sizeof(vfio_iommu_type1_info_cap_iova_range) <= buffer.size()) {
                const auto* cap =
                    reinterpret_cast<const vfio_iommu_type1_info_cap_iova_range*>(header);
                const std::size_t room =
                    (buffer.size() - offset - sizeof(*cap)) / sizeof(vfio_iova_range);
                for (std::uint32_t i = 0; i < cap->nr_iovas && i < room; ++i) {
                    ranges_.push_back({cap->iova_ranges[i].start, cap->iova_ranges[i].end});
                }
            } else if (header->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL &&
                       offset + sizeof(vfio_iommu_type1_info_dma_avail) <= buffer.size()) {
                dma_avail_ =
                    reinterpret_cast<const vfio_iommu_type1_info_dma_avail*>(header)->avail;
            }
            offset = header->next;
        }
    }
    if (ranges_.empty()) {
        // Kernels before 5.4 do not report windows; the whole 48-bit space but the x86 MSI
        // window is the conservative guess there.
        ranges_ = {{0, 0xfedfffff}, {0xfef00000, (1ull << 48) - 1}};
        log_info("the IOMMU reports no IOVA ranges; assuming 48 bits without the MSI window");
    }
    std::sort(ranges_.begin(), ranges_.end(),
              [](const IovaRange& a, const IovaRange& b) { return a.start < b.start; });
    next_iova_ = kLowestIova;
    for (const auto& range : ranges_) {
        log_debug("IOVA window {:#x}-{:#x}", range.start, range.end);
    }
}

// IOVAs are handed out upwards from 1 MiB, each range aligned to its size (capped at 1 GiB) so
// the IOMMU can use large pages; freed ranges are reused first.
std::uint64_t Container::allocate_iova(std::uint64_t size) {
    for (auto it = freed_.begin(); it != freed_.end(); ++it) {
        if (it->end - it->start + 1 == size) {
            const std::uint64_t start = it->start;
            freed_.erase(it);
            return start;
        }
    }
    const std::uint64_t align = std::min<std::uint64_t>(std::bit_ceil(size), 1ull << 30);
    for (const auto& range : ranges_) {
        std::uint64_t start = std::max(next_iova_, range.start);
        start = (start + align - 1) & ~(align - 1);
        if (start >= range.start && start <= range.end && range.end - start >= size - 1) {
            next_iova_ = start + size;
            return start;
        }
    }
    throw Error::invalid("allocate IOVA", fmt::format("{} bytes", size),
                         "no room left in the IOMMU's IOVA windows", ENOSPC);
}

void Container::map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) {
    if (noiommu_) {
        throw Error::invalid("map DMA", "VFIO no-IOMMU container",
                             "there is no IOMMU to map through; use UIO with hugepages for DMA "
                             "at physical addresses",
                             ENOTSUP);
    }
    if (!iommu_set_) {
        throw Error::invalid("map DMA", "VFIO container", "no group attached yet", EINVAL);
    }
    if (dma_avail_ != 0 && mappings_ >= dma_avail_) {
        throw Error::invalid("map DMA", "VFIO container",
                             fmt::format("the IOMMU allows {} mappings and all are used; use "
                                         "larger arena chunks",
                                         dma_avail_),
                             ENOSPC);
    }
    const std::uint64_t iova = allocate_iova(chunk.size);
    vfio_iommu_type1_dma_map request{};
    request.argsz = sizeof request;
    request.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    request.vaddr = reinterpret_cast<std::uint64_t>(chunk.cpu);
    request.iova = iova;
    request.size = chunk.size;
    if (::ioctl(fd_.get(), VFIO_IOMMU_MAP_DMA, &request) != 0) {
        const int err = errno;
        freed_.push_back({iova, iova + chunk.size - 1});
        const std::string what = fmt::format("{} bytes at IOVA {:#x}", chunk.size, iova);
        if (err == ENOMEM) {
            throw Error("VFIO_IOMMU_MAP_DMA", what, err,
                        fmt::format("cannot pin the memory: RLIMIT_MEMLOCK is {}; raise it "
                                    "(ulimit -l, LimitMEMLOCK=) or run with CAP_IPC_LOCK",
                                    memlock_limit_text()));
        }
        throw Error("VFIO_IOMMU_MAP_DMA", what, err);
    }
    ++mappings_;
    const std::uint64_t step = chunk.size / iovas.size();
    for (std::size_t i = 0; i < iovas.size(); ++i) {
        iovas[i] = iova + i * step;
    }
}

void Container::unmap(const dma::ChunkView& chunk, std::span<const std::uint64_t> iovas) noexcept {
    if (iovas.empty() || noiommu_) {
        return;
    }
    vfio_iommu_type1_dma_unmap request{};
    request.argsz = sizeof request;
    request.iova = iovas[0];
    request.size = chunk.size;
    if (::ioctl(fd_.get(), VFIO_IOMMU_UNMAP_DMA, &request) != 0) {
        log_warn("VFIO_IOMMU_UNMAP_DMA of {} bytes at IOVA {:#x}: {}", chunk.size, iovas[0],
                 std::strerror(errno));
        return;
    }
    --mappings_;
    try {
        freed_.push_back({iovas[0], iovas[0] + chunk.size - 1});
    } catch (...) {
        // The IOVA range is lost to reuse; the mapping itself is gone.
    }
}

}  // namespace ring3::vfio
