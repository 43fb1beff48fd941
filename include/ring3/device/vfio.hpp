// The VFIO backend (linux/vfio.h, type 1 IOMMU): a device isolated by the IOMMU, its DMA mapped
// at I/O virtual addresses we choose inside the windows the IOMMU reports.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ring3/core/unique_fd.hpp"
#include "ring3/device/device.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3::vfio {

struct IovaRange {
    std::uint64_t start = 0;
    std::uint64_t end = 0;  // inclusive
};

// How a device reaches VFIO: its group and the group's character device.
struct GroupLocation {
    unsigned number = 0;
    std::filesystem::path dev_path;  // /dev/vfio/N, or /dev/vfio/noiommu-N
    bool noiommu = false;            // a group without an IOMMU: no isolation, no IOVA
};

// Finds the VFIO group of a device bound to vfio-pci, or throws an error that says what is wrong
// and how to fix it: not bound to vfio-pci, no IOMMU, no group node.
GroupLocation locate_group(const pci::Sysfs& sysfs, const std::filesystem::path& dev_root,
                           const pci::Address& address);

// A VFIO container: one IOVA space shared by the groups attached to it. Several devices opened
// with the same container (OpenOptions::vfio_container) see the same DMA mappings.
class Container final : public dma::IovaSpace {
  public:
    static std::shared_ptr<Container> create(const std::filesystem::path& dev_root = "/dev");
    // A container set up elsewhere (an I/O server that passed its fds over a socket): its IOMMU is
    // already selected. `group_fd` (optional) is kept open with it.
    static std::shared_ptr<Container> adopt(UniqueFd container_fd, unsigned group_number,
                                            UniqueFd group_fd, bool noiommu = false);
    ~Container() override;

    // Attaches group `location` (once; later calls return the open group fd) and, on the first
    // group, selects the type 1 IOMMU and reads its IOVA windows and mapping limit.
    int attach_group(const GroupLocation& location, const pci::Sysfs& sysfs);

    // IovaSpace: each arena chunk gets one contiguous IOVA range, aligned to its size.
    std::size_t granule() const noexcept override { return kAnyGranule; }
    void map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) override;
    void unmap(const dma::ChunkView& chunk, std::span<const std::uint64_t> iovas) noexcept override;
    std::string name() const override { return "VFIO container"; }

    const std::vector<IovaRange>& iova_ranges() const noexcept { return ranges_; }
    std::uint32_t dma_mappings_available() const noexcept { return dma_avail_; }
    bool noiommu() const noexcept { return noiommu_; }
    int fd() const noexcept { return fd_.get(); }

  private:
    explicit Container(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    void read_iommu_info();
    std::uint64_t allocate_iova(std::uint64_t size);

    UniqueFd fd_;
    std::map<unsigned, UniqueFd> groups_;
    bool iommu_set_ = false;
    bool noiommu_ = false;
    std::vector<IovaRange> ranges_;
    std::uint32_t dma_avail_ = 0;  // 0: the kernel does not say
    std::uint32_t mappings_ = 0;
    std::uint64_t next_iova_ = 0;
    std::vector<IovaRange> freed_;  // unmapped ranges, reused first-fit
};

// The open fds of a VFIO device: what `open` builds a Device from, and what a process that hands
// devices to others (an I/O server, `ring3 hold`) keeps and passes on.
struct OpenedDevice {
    std::shared_ptr<Container> container;
    UniqueFd device_fd;
};
// Attaches the group of `address` (bound to vfio-pci) to `container` (a new one when null) and
// opens the device. vfio-pci resets the function when a device is first opened (an FLR takes
// 100 ms or more); a device handed over open skips that.
OpenedDevice open_fds(const pci::Address& address, const OpenOptions& options);

// Opens `address` (bound to vfio-pci) in `container` (a new one when null).
std::unique_ptr<Device> open(const pci::Address& address, const OpenOptions& options);

// A device from an fd VFIO_GROUP_GET_DEVICE_FD gave, in `container`. `lease`, when given, is
// kept open as long as the device and closed after it (a ring3d claim's connection).
std::unique_ptr<Device> adopt(const pci::Address& address, std::shared_ptr<Container> container,
                              UniqueFd device_fd, UniqueFd lease = {});

}  // namespace ring3::vfio
