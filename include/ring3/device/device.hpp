// Device: what a backend gives a driver (DESIGN.md, "The device interface"). Drivers see only this
// class, so one driver runs unchanged over VFIO, UIO and vfio-user.
//
// Regions and interrupts use VFIO's PCI numbering for every backend (linux/vfio.h): regions BAR0-5,
// ROM 6, CONFIG 7; interrupts INTx 0, MSI 1, MSI-X 2, ERR 3, REQ 4.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/core/mapping.hpp"
#include "ring3/dma/arena.hpp"
#include "ring3/irq/interrupt.hpp"
#include "ring3/pci/address.hpp"

namespace ring3 {

namespace vfio {
class Container;
}

// Region indexes (VFIO_PCI_*_REGION_INDEX).
inline constexpr unsigned kRegionRom = 6;
inline constexpr unsigned kRegionConfig = 7;

enum class IrqKind : unsigned { intx = 0, msi = 1, msix = 2, err = 3, req = 4 };
const char* to_string(IrqKind kind) noexcept;

enum class MapMode { uncached, write_combining };

struct RegionInfo {
    unsigned index = 0;
    std::uint64_t size = 0;  // 0: the region does not exist (unused BAR)
    bool readable = false;
    bool writable = false;
    bool mappable = false;
    bool io_space = false;         // an I/O-port BAR: read/write only
    bool write_combining = false;  // can be mapped write-combining
    // Areas that may be mapped when only parts of the region can be (offset, size); empty with
    // `mappable` means the whole region maps.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> sparse_areas;
};

// A mapped region: the Mapping plus where in the region it starts. `backend_token` lets a backend
// tell whether the mapping is still held (vfio-user replaces a held mapping's pages in place after
// reconnecting to a restarted server); keep it with the mapping.
struct RegionMapping {
    Mapping mapping;
    std::uint64_t region_offset = 0;
    std::shared_ptr<void> backend_token;
};

class Device {
  public:
    virtual ~Device() = default;
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    // "vfio:0000:00:02.0", "uio:0000:00:03.0", "vfio-user:/run/ring3/nvme0.sock".
    virtual std::string name() const = 0;
    virtual std::optional<pci::Address> address() const = 0;
    std::uint16_t vendor_id();
    std::uint16_t device_id();
    std::uint32_t class_code();

    // Config space. Offsets and sizes are checked; a short read or write throws ring3::Error.
    virtual void read_config(std::uint32_t offset, std::span<std::byte> out) = 0;
    virtual void write_config(std::uint32_t offset, std::span<const std::byte> in) = 0;
    std::uint8_t config_read8(std::uint32_t offset);
    std::uint16_t config_read16(std::uint32_t offset);
    std::uint32_t config_read32(std::uint32_t offset);
    void config_write8(std::uint32_t offset, std::uint8_t value);
    void config_write16(std::uint32_t offset, std::uint16_t value);
    void config_write32(std::uint32_t offset, std::uint32_t value);

    // Regions. map_region maps the whole region (or the sparse area containing `offset`).
    virtual RegionInfo region_info(unsigned index) = 0;
    virtual RegionMapping map_region(unsigned index, MapMode mode = MapMode::uncached) = 0;
    // Accesses of 1, 2, 4 or 8 bytes (8 split in two for I/O space) through the backend's file
    // interface: for I/O BARs, sparse-mmap holes, and registers that must be trapped.
    virtual void region_read(unsigned index, std::uint64_t offset, std::span<std::byte> out) = 0;
    virtual void region_write(unsigned index, std::uint64_t offset,
                              std::span<const std::byte> in) = 0;
    std::uint32_t region_read32(unsigned index, std::uint64_t offset);
    void region_write32(unsigned index, std::uint64_t offset, std::uint32_t value);

    // Interrupts. enable_irqs enables vectors 0..count-1 of `kind` at once, each an eventfd (a
    // /dev/uioN fd for UIO INTx), replacing what was enabled before. VFIO cannot add MSI-X vectors
    // to a live set, so enable all a device will use in one call.
    virtual unsigned irq_count(IrqKind kind) = 0;
    virtual std::vector<irq::Interrupt> enable_irqs(IrqKind kind, unsigned count) = 0;
    virtual void disable_irqs(IrqKind kind) = 0;
    virtual void unmask_intx() = 0;  // after handling a level-triggered INTx

    // DMA: the address space the device sees. Attach it to a DmaArena (arena.attach(...)).
    virtual dma::IovaSpace& iova_space() = 0;

    // Control. Bus mastering gates the device's DMA and its MSI/MSI-X (they are memory writes).
    void set_bus_master(bool enable);
    bool bus_master();
    // Why the device is gone, when it is: taken back by its owner (ring3d revoked the claim
    // because the kernel wants the device: hot-unplug, unbind). Drivers ask when a request is
    // late, before trying to recover, and fail everything with that reason. Makes a system call;
    // not for the hot path.
    virtual std::optional<std::string> lost() { return std::nullopt; }
    // Changes when the device behind this object was replaced by a fresh one in its power-on
    // state (a vfio-user server restarted and re-attached by lost()): what the driver had set up
    // is gone, and it must bring the device up again. Not for the hot path.
    virtual std::uint64_t incarnation() { return 0; }
    virtual bool can_reset() = 0;
    virtual void reset() = 0;

  protected:
    Device() = default;
};

// Opens a device by spec string: "vfio:BDF", "uio:BDF", "ring3d:BDF" (claimed from the I/O server,
// include/ring3/broker/client.hpp), "vfio-user:/path/to.sock" (a device served by another process,
// include/ring3/device/vfio_user.hpp), or a bare BDF ("VFIO if bound to vfio-pci,
// UIO if bound to uio_pci_generic, else an error that says how to bind it").
struct OpenOptions {
    std::string sysfs_root = "/sys";
    std::string dev_root = "/dev";
    // Several VFIO devices opened with the same container share one IOVA space.
    std::shared_ptr<vfio::Container> vfio_container;
    // vfio-user: re-attach to a server restarted at the same path instead of failing
    // (the environment variable RING3_VFIO_USER_RECONNECT=1 turns it on as well).
    bool vfio_user_reconnect = false;
};
std::unique_ptr<Device> open_device(std::string_view spec, const OpenOptions& options = {});

}  // namespace ring3
