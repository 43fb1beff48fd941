// pci::Sysfs: what the kernel tells about PCI functions under /sys, read-only.
//
// The kernel's ABI (Documentation/ABI/testing/sysfs-bus-pci, sysfs-kernel-iommu_groups):
//   /sys/bus/pci/devices/DDDD:BB:DD.F -> the device directory, holding
//     vendor, device, subsystem_vendor, subsystem_device   "0x1b36\n"
//     class                                                "0x010802\n" (24 bits)
//     revision                                             "0x02\n"
//     numa_node                                            "-1\n" when there is no NUMA
//     resource     one "0x<start> 0x<end> 0x<flags>" line per resource (see Resource)
//     config       config space: 64 bytes to an unprivileged reader, 256 or 4096 to root
//     reset_method (5.15+) the reset methods in the order the kernel tries them; absent when the
//                  device has none
//     power_state  (5.16+) "D0", "D3hot", ...
//     driver       -> ../../../bus/pci/drivers/<name>, absent when no driver is bound
//     iommu_group  -> ../../../kernel/iommu_groups/<N>, absent without an IOMMU
//   /sys/kernel/iommu_groups/N/devices/<name> -> every device in group N; .../N/type: the default
//     domain type ("identity", "DMA", "DMA-FQ", ...).
// The root is a constructor argument, so tests run on fake trees built in a temporary directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/pci/address.hpp"

namespace ring3::pci {

// One line of sysfs `resource`. The flags are the kernel's IORESOURCE_* bits
// (include/linux/ioport.h).
struct Resource {
    // What a line of `resource` stands for: the kernel prints 0-5 BARs and 6 the expansion ROM,
    // then (kernels with CONFIG_PCI_IOV) 6 SR-IOV VF BARs, then (bridges only) 4 bridge windows.
    // Which layout applies follows from the number of lines: 7, 11, 13 or 17.
    enum class Role { bar, rom, vf_bar, bridge_window, other };

    unsigned index = 0;  // line number in the file
    Role role = Role::other;
    unsigned role_index = 0;  // BARn, VF BARn, bridge window n
    std::uint64_t start = 0;
    std::uint64_t end = 0;
    std::uint64_t flags = 0;

    static constexpr std::uint64_t flag_io = 0x100;             // IORESOURCE_IO
    static constexpr std::uint64_t flag_memory = 0x200;         // IORESOURCE_MEM
    static constexpr std::uint64_t flag_prefetch = 0x2000;      // IORESOURCE_PREFETCH
    static constexpr std::uint64_t flag_mem_64 = 0x100000;      // IORESOURCE_MEM_64
    static constexpr std::uint64_t flag_disabled = 0x10000000;  // IORESOURCE_DISABLED
    static constexpr std::uint64_t flag_unset = 0x20000000;     // IORESOURCE_UNSET

    bool is_io() const noexcept { return (flags & flag_io) != 0 && (flags & flag_memory) == 0; }
    bool is_memory() const noexcept { return (flags & flag_memory) != 0 && (flags & flag_io) == 0; }
    bool prefetchable() const noexcept { return (flags & flag_prefetch) != 0; }
    bool is_64bit() const noexcept { return (flags & flag_mem_64) != 0; }
    // end - start + 1 when either is non-zero (the kernel prints an unused resource as zeros).
    std::uint64_t size() const noexcept {
        return (start != 0 || end != 0) && end >= start ? end - start + 1 : 0;
    }
    bool used() const noexcept { return size() != 0; }
    // False when the kernel has given the resource no address: IORESOURCE_UNSET (the
    // assignment failed, e.g. no room in the bridge's window; dmesg says why) or _DISABLED.
    bool assigned() const noexcept { return (flags & (flag_disabled | flag_unset)) == 0; }
};

// Parses the text of a `resource` file. `what` (the file's path) names it in errors:
// "parse /sys/.../resource: line 3: expected three hex numbers 0x<start> 0x<end> 0x<flags>, got
// '0x1000 zz'". Blank lines are skipped; an end below its start is kept and has size 0.
std::vector<Resource> parse_resources(std::string_view text, const std::string& what);

// What `reset_method` says. The kernel hides the file when the device has no reset method, so
// "absent" means "none" on 5.15+ (older kernels have no such file at all).
struct ResetMethods {
    enum class State {
        listed,      // the file exists; `methods` may be empty (an empty file)
        absent,      // no reset_method file
        unreadable,  // it exists but reading failed: `problem` says why
    };
    State state = State::absent;
    std::vector<std::string> methods;  // in the kernel's order: "flr", "pm", "bus", ...
    std::string problem;
};

struct DeviceInfo {
    Address address;
    std::filesystem::path path;  // the device directory, <root>/bus/pci/devices/<address>
    std::uint16_t vendor_id = 0;
    std::uint16_t device_id = 0;
    std::uint16_t subsystem_vendor_id = 0;
    std::uint16_t subsystem_device_id = 0;
    std::uint32_t class_code = 0;  // 24 bits: base class << 16 | subclass << 8 | prog-if
    std::uint8_t revision = 0;
    std::string driver;                   // empty when no driver is bound
    std::optional<unsigned> iommu_group;  // none without an IOMMU (no iommu_group link)
    std::optional<unsigned> numa_node;    // none when the kernel says -1 or has no file
    std::vector<Resource> resources;      // every line of `resource`
    ResetMethods reset_methods;
    std::optional<std::string> power_state;  // none when the kernel has no power_state file

    // The resource line of BARn (0-5), or null when the file has no such line.
    const Resource* bar(unsigned n) const noexcept;
};

// One device of an IOMMU group. Groups can hold non-PCI devices (platform devices on ARM):
// those have no address and no class.
struct IommuGroupMember {
    std::string name;  // the entry under devices/: "0000:00:02.0"
    std::optional<Address> address;
    std::string driver;                       // empty when none is bound
    std::optional<std::uint32_t> class_code;  // PCI devices only
};

// Whether a driver leaves a group usable by VFIO. Linux 5.19 and later
// (iommu_group_claim_dma_owner, called when a VFIO group is attached to a container) refuses a
// group while any member is bound to a driver that uses the kernel's DMA API, i.e. one without the
// driver_managed_dma flag. The PCI drivers with that flag are vfio-pci and its variant drivers
// (every name has "vfio" in it), pci-stub and pcieport (PCIe root and switch ports, which do no
// DMA). A member with no driver is fine. Before 5.19, vfio itself checked: no driver, a vfio
// driver, pci-stub, or any device with a type 1 (bridge) header whatever its driver. Ports of class
// 0x0604 bound to pcieport are fine under both rules; a bridge on another driver is fine only under
// the old one, and this function follows the current kernel.
bool driver_allows_vfio(std::string_view driver) noexcept;

struct IommuGroup {
    unsigned number = 0;
    std::string type;  // the group's `type` file; empty when the kernel has none
    std::vector<IommuGroupMember> members;  // sorted: PCI devices by address, then others by name

    // True when every member has no driver or one driver_allows_vfio() accepts.
    bool viable_for_vfio() const;
    // The members bound to other kernel drivers: what makes the group not viable.
    std::vector<IommuGroupMember> members_on_kernel_drivers() const;
};

class Sysfs {
  public:
    explicit Sysfs(std::filesystem::path root = "/sys");

    const std::filesystem::path& root() const noexcept { return root_; }
    std::filesystem::path devices_dir() const;  // <root>/bus/pci/devices

    // Every PCI function, sorted by address (directory order is not sorted). Entries whose names
    // are not PCI addresses are skipped. Throws when the directory cannot be read.
    std::vector<Address> addresses() const;
    // DeviceInfo of every function, in address order.
    std::vector<DeviceInfo> devices() const;

    bool exists(const Address& address) const;
    // The device directory; throws "no PCI device 0000:00:09.0: not in /sys/bus/pci/devices"
    // (ENODEV) when there is none.
    std::filesystem::path device_path(const Address& address) const;
    // Everything the kernel says about one function. Required files (vendor, device,
    // subsystem_*, class, revision, resource) missing or malformed throw an error naming the
    // file; optional ones (numa_node, reset_method, power_state, the links) are left empty.
    DeviceInfo device(const Address& address) const;

    // The bound driver's name, empty when none.
    std::string driver(const Address& address) const;
    std::vector<Resource> resources(const Address& address) const;
    std::optional<unsigned> iommu_group_number(const Address& address) const;
    // Group N with its members and their drivers; throws when the group does not exist.
    IommuGroup iommu_group(unsigned number) const;

    // The bytes `config` returns to this process: 64 unprivileged, 256 or 4096 as root.
    std::vector<std::uint8_t> read_config(const Address& address) const;
    // The size of config space the kernel reports (the file's size): 256 for conventional PCI,
    // 4096 for PCI Express, whoever reads it.
    std::size_t config_size(const Address& address) const;

  private:
    std::filesystem::path root_;
};

}  // namespace ring3::pci
