// The UIO backend (uio_pci_generic): for machines without an IOMMU. Registers through sysfs
// `resourceN`, config space through sysfs `config`, INTx through /dev/uioN, and DMA at physical
// addresses read from /proc/self/pagemap — which is only safe with pinned hugepages and a device
// whose DMA the IOMMU does not translate. Needs root.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "ring3/device/device.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3::uio {

// Physical addresses as the device's IOVA space (Documentation/admin-guide/mm/pagemap.rst).
// The granule is a 2 MiB hugepage: consecutive hugepages are not physically contiguous, and
// 4 KiB pages could move, so the arena must be hugetlb-backed.
class PhysicalSpace final : public dma::IovaSpace {
  public:
    // `device` names the device in errors; `iommu_group_type` is its group's `type` file
    // ("identity", "DMA", "DMA-FQ", or empty without an IOMMU). A translating domain refuses.
    PhysicalSpace(std::string device, std::string iommu_group_type,
                  std::filesystem::path pagemap = "/proc/self/pagemap");

    static constexpr std::size_t kHugePage = std::size_t{2} << 20;
    std::size_t granule() const noexcept override { return kHugePage; }
    void map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) override;
    void unmap(const dma::ChunkView&, std::span<const std::uint64_t>) noexcept override {}
    std::string name() const override { return "UIO physical addresses"; }

  private:
    std::string device_;
    std::string group_type_;
    std::filesystem::path pagemap_;
};

// Opens `address` (bound to uio_pci_generic).
std::unique_ptr<Device> open(const pci::Address& address, const OpenOptions& options);

}  // namespace ring3::uio
