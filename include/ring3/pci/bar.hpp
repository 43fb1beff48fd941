// Access to a device's register windows (BARs, and later VFIO and vfio-user regions).
//
// RegionAccess is the one interface register code reads and writes through: bounds- and
// alignment-checked 8/16/32/64-bit accesses at a byte offset, plus the mapped pointer when the
// region is mapped into this process. Two implementations live here:
//   - MappedRegion: loads and stores through a pointer (an mmap of sysfs `resourceN`, later a VFIO
//     region mmap, or a plain buffer in tests);
//   - FileRegion: pread/pwrite on a file at a base offset (sysfs `resourceN` of an I/O BAR, later a
//     VFIO region that cannot be mapped).
// open_sysfs_bar() picks one from the BAR's kind, as the kernel's sysfs ABI offers them
// (Documentation/ABI/testing/sysfs-bus-pci, /sys/bus/pci/devices/.../resourceN and resourceN_wc;
// the BAR's kind and size come from `resource`, read by pci::Sysfs):
// memory BARs are mmap-able, I/O BARs only read/write with 1-, 2- or 4-byte accesses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/core/mapping.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/pci/address.hpp"

namespace ring3::pci {

inline constexpr unsigned kBarCount = 6;  // BAR0-5 of a type 0 header

class RegionAccess {
  public:
    RegionAccess() = default;
    RegionAccess(const RegionAccess&) = delete;
    RegionAccess& operator=(const RegionAccess&) = delete;
    virtual ~RegionAccess() = default;

    // Size in bytes; every access must lie in [0, size()).
    virtual std::uint64_t size() const noexcept = 0;
    // What errors name: "0000:01:00.0 BAR0".
    virtual const std::string& name() const noexcept = 0;
    // Start of the region in this process when it is mapped; nullptr when only read/write work.
    virtual std::byte* mapped() const noexcept { return nullptr; }
    virtual bool writable() const noexcept = 0;

    // Accesses are naturally aligned and inside the region, else ring3::Error (EINVAL, naming the
    // region, offset and size); a failed pread/pwrite throws with its errno.
    std::uint8_t read8(std::uint64_t offset) const;
    std::uint16_t read16(std::uint64_t offset) const;
    std::uint32_t read32(std::uint64_t offset) const;
    std::uint64_t read64(std::uint64_t offset) const;
    void write8(std::uint64_t offset, std::uint8_t value);
    void write16(std::uint64_t offset, std::uint16_t value);
    void write32(std::uint64_t offset, std::uint32_t value);
    void write64(std::uint64_t offset, std::uint64_t value);

    // A read of `width_bytes` (1, 2, 4 or 8) with the same checks, for code that picks the width
    // at run time (the dump command).
    std::uint64_t read(std::uint64_t offset, unsigned width_bytes) const;

    // Throws unless [offset, offset + length) is inside the region and both are multiples of
    // `width_bytes`; `what` names the access in the message ("read", "dump").
    void check_range(std::uint64_t offset, std::uint64_t length, unsigned width_bytes,
                     std::string_view what) const;

  protected:
    // Called with a checked offset and width (1, 2, 4, 8).
    virtual std::uint64_t load(std::uint64_t offset, unsigned width_bytes) const = 0;
    virtual void store(std::uint64_t offset, unsigned width_bytes, std::uint64_t value) = 0;

  private:
    void check_write(std::uint64_t offset, unsigned width_bytes) const;
};

// Loads and stores through a pointer, each access one volatile load/store of its width (a 64-bit
// access is a single 64-bit load, which devices such as NVMe's CAP register allow).
class MappedRegion final : public RegionAccess {
  public:
    // Owns `mapping`; the region starts `start_offset` bytes into it (a BAR smaller than a page
    // need not start on a page boundary) and is `size` bytes long.
    MappedRegion(std::string name, Mapping mapping, std::size_t start_offset, std::uint64_t size,
                 bool writable);
    // Borrows memory the caller keeps alive (fakes in tests, a region of a bigger mapping).
    MappedRegion(std::string name, std::byte* base, std::uint64_t size, bool writable) noexcept;

    std::uint64_t size() const noexcept override { return size_; }
    const std::string& name() const noexcept override { return name_; }
    std::byte* mapped() const noexcept override { return base_; }
    bool writable() const noexcept override { return writable_; }

  protected:
    std::uint64_t load(std::uint64_t offset, unsigned width_bytes) const override;
    void store(std::uint64_t offset, unsigned width_bytes, std::uint64_t value) override;

  private:
    std::string name_;
    Mapping mapping_;
    std::byte* base_ = nullptr;
    std::uint64_t size_ = 0;
    bool writable_ = false;
};

// pread/pwrite of exactly the access width at `file_offset + offset`. `max_width_bytes` is the
// widest access the file takes (4 for sysfs I/O resources); a wider access is split into 32-bit
// halves, low half first.
class FileRegion final : public RegionAccess {
  public:
    FileRegion(std::string name, UniqueFd fd, std::uint64_t file_offset, std::uint64_t size,
               unsigned max_width_bytes, bool writable);

    std::uint64_t size() const noexcept override { return size_; }
    const std::string& name() const noexcept override { return name_; }
    bool writable() const noexcept override { return writable_; }

  protected:
    std::uint64_t load(std::uint64_t offset, unsigned width_bytes) const override;
    void store(std::uint64_t offset, unsigned width_bytes, std::uint64_t value) override;

  private:
    std::string name_;
    UniqueFd fd_;
    std::uint64_t file_offset_ = 0;
    std::uint64_t size_ = 0;
    unsigned max_width_ = 4;
    bool writable_ = false;
};

// Drivers that hand a device to user space and leave its BARs to the user: vfio-pci and its
// variants, uio_pci_generic, igb_uio, pci-stub. Any other is a kernel driver using the registers.
bool is_user_space_driver(std::string_view driver) noexcept;

enum class Caching {
    uncached,         // resourceN
    write_combining,  // resourceN_wc: only prefetchable memory BARs have it
};

struct SysfsBarOptions {
    std::string sysfs_root = "/sys";
    Caching caching = Caching::uncached;
    bool writable = false;
    // A kernel driver (not is_user_space_driver) owns the device: its
    // registers are in use, and reading some of them has side effects (read-to-clear status).
    // Kernels with CONFIG_IO_STRICT_DEVMEM refuse the mmap anyway; elsewhere open_sysfs_bar refuses
    // unless this is set.
    bool allow_kernel_driver = false;
    // The mmap(2) call, a seam for tests; default Mapping::map.
    std::function<Mapping(int fd, std::size_t size, int prot, const std::string& path)> map;
};

// Opens BAR `index` (0-5) of the device at `address` through sysfs. Memory BARs are mapped
// (MAP_SHARED; mapped() is non-null), I/O BARs use pread/pwrite. Errors name the device and BAR:
// no such device, index out of range, unused BAR, no resourceN_wc, a kernel driver owning the
// device (naming it and how to free it), a refused mmap.
std::unique_ptr<RegionAccess> open_sysfs_bar(const Address& address, unsigned index,
                                             const SysfsBarOptions& options = {});

// ---- Dumping, for `ring3 bar dump` -----------------------------------------------------------

// "OFFSET[:LENGTH]", each hex with 0x or decimal. Malformed text throws ring3::Error quoting it.
struct ByteRange {
    std::uint64_t offset = 0;
    std::optional<std::uint64_t> length;
};
ByteRange parse_byte_range(std::string_view text);

inline constexpr std::uint64_t kDefaultDumpLength = 256;

// One line per 16 bytes, "oooooooo: word word ...", offsets as (at least) 8 hex digits and words
// zero-padded to their width. `width_bits` is 8, 16, 32 or 64. Range and alignment are checked
// first (ring3::Error, nothing read).
std::string format_dump(const RegionAccess& region, std::uint64_t offset, std::uint64_t length,
                        unsigned width_bits);

}  // namespace ring3::pci
