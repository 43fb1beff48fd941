#include "ring3/pci/bar.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "ring3/core/error.hpp"
#include "ring3/pci/sysfs.hpp"

namespace ring3::pci {
namespace {

bool valid_width(unsigned width_bytes) noexcept {
    return width_bytes == 1 || width_bytes == 2 || width_bytes == 4 || width_bytes == 8;
}

bool path_exists(const std::string& path) noexcept {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

// "0x1f" (hex) or "31" (decimal); nullopt on anything else, including overflow.
std::optional<std::uint64_t> parse_number(std::string_view text) {
    unsigned base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    }
    if (text.empty()) {
        return std::nullopt;
    }
    std::uint64_t value = 0;
    for (const char c : text) {
        unsigned digit = 0;
        if (c >= '0' && c <= '9') {
            digit = static_cast<unsigned>(c - '0');
        } else if (base == 16 && c >= 'a' && c <= 'f') {
            digit = static_cast<unsigned>(c - 'a' + 10);
        } else if (base == 16 && c >= 'A' && c <= 'F') {
            digit = static_cast<unsigned>(c - 'A' + 10);
        } else {
            return std::nullopt;
        }
        if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / base) {
            return std::nullopt;
        }
        value = value * base + digit;
    }
    return value;
}

// Why the kernel refused to map a sysfs resource, in terms a user can act on.
std::string explain_map_failure(int errnum, const std::string& bdf, const std::string& driver,
                                const Resource& resource) {
    if (errnum == EPERM) {
        return "the kernel is locked down (LOCKDOWN_PCI_ACCESS forbids user-space BAR access)";
    }
    if (errnum != EINVAL) {
        return std::strerror(errnum);
    }
    // With CONFIG_IO_STRICT_DEVMEM, pci_mmap_resource() refuses a range that a driver has
    // requested (iomem_is_exclusive), which every kernel driver does with pci_request_regions().
    if (driver == "vfio-pci") {
        return fmt::format(
            "vfio-pci has claimed the BAR because a program has {} open through VFIO "
            "(CONFIG_IO_STRICT_DEVMEM); use the VFIO backend, or end that program",
            bdf);
    }
    if (!driver.empty() && !is_user_space_driver(driver)) {
        return fmt::format(
            "the kernel refuses to map a BAR while kernel driver '{}' owns {} "
            "(CONFIG_IO_STRICT_DEVMEM); free it with `ring3 unbind {}` or "
            "`ring3 bind {} vfio-pci`",
            driver, bdf, bdf, bdf);
    }
    return fmt::format(
        "the kernel refuses (EINVAL): the range {:#x}-{:#x} is claimed exclusively by another "
        "kernel component; /proc/iomem shows by which",
        resource.start, resource.end);
}

}  // namespace

// ---- RegionAccess ------------------------------------------------------------------------------

void RegionAccess::check_range(std::uint64_t offset, std::uint64_t length, unsigned width_bytes,
                               std::string_view what) const {
    if (!valid_width(width_bytes)) {
        throw Error::invalid(std::string(what), name(),
                             fmt::format("access width {} bytes is not 1, 2, 4 or 8", width_bytes));
    }
    const std::uint64_t region_size = size();
    if (offset >= region_size || length > region_size - offset) {
        throw Error::invalid(
            std::string(what), name(),
            fmt::format("{} bytes at offset {:#x} do not fit in the region ({:#x} bytes, "
                        "offsets 0x0-{:#x})",
                        length, offset, region_size, region_size == 0 ? 0 : region_size - 1));
    }
    if (offset % width_bytes != 0 || length % width_bytes != 0) {
        throw Error::invalid(
            std::string(what), name(),
            fmt::format("offset {:#x} and length {} must be multiples of the access width ({} "
                        "bytes)",
                        offset, length, width_bytes));
    }
}

std::uint64_t RegionAccess::read(std::uint64_t offset, unsigned width_bytes) const {
    check_range(offset, width_bytes, width_bytes, "read");
    return load(offset, width_bytes);
}

std::uint8_t RegionAccess::read8(std::uint64_t offset) const {
    return static_cast<std::uint8_t>(read(offset, 1));
}
std::uint16_t RegionAccess::read16(std::uint64_t offset) const {
    return static_cast<std::uint16_t>(read(offset, 2));
}
std::uint32_t RegionAccess::read32(std::uint64_t offset) const {
    return static_cast<std::uint32_t>(read(offset, 4));
}
std::uint64_t RegionAccess::read64(std::uint64_t offset) const {
    return read(offset, 8);
}

void RegionAccess::check_write(std::uint64_t offset, unsigned width_bytes) const {
    if (!writable()) {
        throw Error::invalid("write", name(), "the region was opened read-only", EBADF);
    }
    check_range(offset, width_bytes, width_bytes, "write");
}

void RegionAccess::write8(std::uint64_t offset, std::uint8_t value) {
    check_write(offset, 1);
    store(offset, 1, value);
}
void RegionAccess::write16(std::uint64_t offset, std::uint16_t value) {
    check_write(offset, 2);
    store(offset, 2, value);
}
void RegionAccess::write32(std::uint64_t offset, std::uint32_t value) {
    check_write(offset, 4);
    store(offset, 4, value);
}
void RegionAccess::write64(std::uint64_t offset, std::uint64_t value) {
    check_write(offset, 8);
    store(offset, 8, value);
}

// ---- MappedRegion ------------------------------------------------------------------------------

MappedRegion::MappedRegion(std::string name, Mapping mapping, std::size_t start_offset,
                           std::uint64_t size, bool writable)
    : name_(std::move(name)), mapping_(std::move(mapping)), size_(size), writable_(writable) {
    if (start_offset > mapping_.size() || size > mapping_.size() - start_offset) {
        throw Error::invalid("map", name_,
                             fmt::format("{} bytes at {:#x} do not fit in a {}-byte mapping", size,
                                         start_offset, mapping_.size()));
    }
    base_ = mapping_.data() + start_offset;
}

MappedRegion::MappedRegion(std::string name, std::byte* base, std::uint64_t size,
                           bool writable) noexcept
    : name_(std::move(name)), base_(base), size_(size), writable_(writable) {}

// Device registers need exactly one access of exactly the given width: volatile, never memcpy.
// The casts go through void* because the offset was checked to be naturally aligned.
template <typename T>
T load_volatile(const std::byte* address) noexcept {
    return *static_cast<const volatile T*>(static_cast<const volatile void*>(address));
}
template <typename T>
void store_volatile(std::byte* address, T value) noexcept {
    *static_cast<volatile T*>(static_cast<volatile void*>(address)) = value;
}

std::uint64_t MappedRegion::load(std::uint64_t offset, unsigned width_bytes) const {
    const std::byte* address = base_ + offset;
    switch (width_bytes) {
        case 1:
            return load_volatile<std::uint8_t>(address);
        case 2:
            return load_volatile<std::uint16_t>(address);
        case 4:
            return load_volatile<std::uint32_t>(address);
        default:
            return load_volatile<std::uint64_t>(address);
    }
}

void MappedRegion::store(std::uint64_t offset, unsigned width_bytes, std::uint64_t value) {
    std::byte* address = base_ + offset;
    switch (width_bytes) {
        case 1:
            store_volatile(address, static_cast<std::uint8_t>(value));
            break;
        case 2:
            store_volatile(address, static_cast<std::uint16_t>(value));
            break;
        case 4:
            store_volatile(address, static_cast<std::uint32_t>(value));
            break;
        default:
            store_volatile(address, value);
            break;
    }
}

// ---- FileRegion --------------------------------------------------------------------------------

FileRegion::FileRegion(std::string name, UniqueFd fd, std::uint64_t file_offset, std::uint64_t size,
                       unsigned max_width_bytes, bool writable)
    : name_(std::move(name)),
      fd_(std::move(fd)),
      file_offset_(file_offset),
      size_(size),
      max_width_(max_width_bytes),
      writable_(writable) {
    if (max_width_ != 4 && max_width_ != 8) {
        throw Error::invalid("open", name_, "widest file access must be 4 or 8 bytes");
    }
}

std::uint64_t FileRegion::load(std::uint64_t offset, unsigned width_bytes) const {
    if (width_bytes > max_width_) {
        // Two 32-bit reads, low half first (sysfs I/O resources take at most 4 bytes at a time).
        const std::uint64_t low = load(offset, 4);
        const std::uint64_t high = load(offset + 4, 4);
        return low | (high << 32);
    }
    unsigned char bytes[8] = {};
    const auto position = static_cast<off_t>(file_offset_ + offset);
    ssize_t n = 0;
    do {
        n = ::pread(fd_.get(), bytes, width_bytes, position);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        throw Error::from_errno(
            fmt::format("read {} bytes at offset {:#x} of", width_bytes, offset), name_);
    }
    if (static_cast<std::size_t>(n) != width_bytes) {
        throw Error::invalid(fmt::format("read {} bytes at offset {:#x} of", width_bytes, offset),
                             name_, fmt::format("short read ({} bytes)", n), EIO);
    }
    std::uint64_t value = 0;
    for (unsigned i = 0; i < width_bytes; ++i) {  // PCI is little-endian
        value |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
    }
    return value;
}

void FileRegion::store(std::uint64_t offset, unsigned width_bytes, std::uint64_t value) {
    if (width_bytes > max_width_) {
        store(offset, 4, value & 0xffff'ffffu);
        store(offset + 4, 4, value >> 32);
        return;
    }
    unsigned char bytes[8] = {};
    for (unsigned i = 0; i < width_bytes; ++i) {
        bytes[i] = static_cast<unsigned char>(value >> (8 * i));
    }
    const auto position = static_cast<off_t>(file_offset_ + offset);
    ssize_t n = 0;
    do {
        n = ::pwrite(fd_.get(), bytes, width_bytes, position);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        throw Error::from_errno(
            fmt::format("write {} bytes at offset {:#x} of", width_bytes, offset), name_);
    }
    if (static_cast<std::size_t>(n) != width_bytes) {
        throw Error::invalid(fmt::format("write {} bytes at offset {:#x} of", width_bytes, offset),
                             name_, fmt::format("short write ({} bytes)", n), EIO);
    }
}

// ---- sysfs -------------------------------------------------------------------------------------

bool is_user_space_driver(std::string_view driver) noexcept {
    return driver.find("vfio") != std::string_view::npos || driver == "uio_pci_generic" ||
           driver == "igb_uio" || driver == "pci-stub";
}

std::unique_ptr<RegionAccess> open_sysfs_bar(const Address& address, unsigned index,
                                             const SysfsBarOptions& options) {
    const std::string bdf = address.to_string();
    const std::string name = fmt::format("{} BAR{}", bdf, index);
    if (index >= kBarCount) {
        throw Error::invalid("open", name, "a BAR index is 0 to 5");
    }
    const Sysfs sysfs(options.sysfs_root);
    const std::string device_dir = sysfs.device_path(address).string();  // throws when absent
    const auto resources = sysfs.resources(address);
    if (index >= resources.size() || !resources[index].used()) {
        throw Error::invalid("open", name, "the device does not implement this BAR", ENXIO);
    }
    const Resource& resource = resources[index];
    if (!resource.assigned()) {
        throw Error::invalid("open", name,
                             "the BAR has no address assigned (dmesg shows why, in lines about "
                             "'BAR')",
                             ENXIO);
    }
    if (!resource.is_io() && !resource.is_memory()) {
        throw Error::invalid("open", name,
                             fmt::format("unknown resource flags {:#x}", resource.flags), ENXIO);
    }

    const std::string driver = sysfs.driver(address);
    if (!driver.empty() && !is_user_space_driver(driver) && !options.allow_kernel_driver) {
        throw Error::invalid(
            "open", name,
            fmt::format("{} is bound to kernel driver '{}', which is using its registers (and "
                        "kernels with CONFIG_IO_STRICT_DEVMEM refuse to map them); free it with "
                        "`ring3 unbind {}` or `ring3 bind {} vfio-pci`",
                        bdf, driver, bdf, bdf),
            EBUSY);
    }

    const int open_flags = options.writable ? O_RDWR : O_RDONLY;
    if (resource.is_io()) {
        if (options.caching == Caching::write_combining) {
            throw Error::invalid("open", name,
                                 "an I/O BAR cannot be mapped, let alone write-combining");
        }
        // pci_resource_io(): 1-, 2- or 4-byte reads/writes at an offset into the I/O range.
        const std::string path = fmt::format("{}/resource{}", device_dir, index);
        return std::make_unique<FileRegion>(name, UniqueFd::open(path, open_flags), 0,
                                            resource.size(), 4, options.writable);
    }

    std::string path = fmt::format("{}/resource{}", device_dir, index);
    if (options.caching == Caching::write_combining) {
        path += "_wc";
        if (!path_exists(path)) {
            throw Error::invalid("open", name,
                                 fmt::format("no {}: the kernel offers write-combining only for "
                                             "prefetchable memory BARs",
                                             path),
                                 ENOENT);
        }
    }
    const UniqueFd fd = UniqueFd::open(path, open_flags);
    // pci_mmap_resource_range() maps whole pages starting at the page that holds the BAR's
    // start; a BAR smaller than a page may start inside it.
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t in_page = resource.start % page;
    const std::uint64_t map_size = (in_page + resource.size() + page - 1) / page * page;
    if (map_size > std::numeric_limits<std::size_t>::max()) {
        throw Error::invalid("map", name, "the BAR is larger than the address space");
    }
    const int prot = PROT_READ | (options.writable ? PROT_WRITE : 0);
    try {
        Mapping mapping =
            options.map ? options.map(fd.get(), static_cast<std::size_t>(map_size), prot, path)
                        : Mapping::map(fd.get(), static_cast<std::size_t>(map_size), prot,
                                       MAP_SHARED, 0, path);
        return std::make_unique<MappedRegion>(name, std::move(mapping),
                                              static_cast<std::size_t>(in_page), resource.size(),
                                              options.writable);
    } catch (const Error& e) {
        throw Error("map", fmt::format("{} ({})", name, path), e.errnum(),
                    explain_map_failure(e.errnum(), bdf, driver, resource));
    }
}

// ---- dump --------------------------------------------------------------------------------------

ByteRange parse_byte_range(std::string_view text) {
    const auto fail = [&](std::string_view why) {
        return Error::invalid(
            "parse byte range", fmt::format("'{}'", text),
            fmt::format("{}; expected OFFSET[:LENGTH] in bytes, each hex with 0x or decimal, "
                        "e.g. 0x8:4",
                        why));
    };
    const auto colon = text.find(':');
    ByteRange range;
    const auto offset = parse_number(text.substr(0, colon));
    if (!offset) {
        throw fail(fmt::format("bad offset '{}'", text.substr(0, colon)));
    }
    range.offset = *offset;
    if (colon != std::string_view::npos) {
        const std::string_view length_text = text.substr(colon + 1);
        const auto length = parse_number(length_text);
        if (!length) {
            throw fail(fmt::format("bad length '{}'", length_text));
        }
        if (*length == 0) {
            throw fail("length 0");
        }
        range.length = *length;
    }
    return range;
}

std::string format_dump(const RegionAccess& region, std::uint64_t offset, std::uint64_t length,
                        unsigned width_bits) {
    if (width_bits != 8 && width_bits != 16 && width_bits != 32 && width_bits != 64) {
        throw Error::invalid("dump", region.name(),
                             fmt::format("width {} is not 8, 16, 32 or 64 bits", width_bits));
    }
    const unsigned width = width_bits / 8;
    if (length == 0) {
        throw Error::invalid("dump", region.name(), "length 0");
    }
    region.check_range(offset, length, width, "dump");
    constexpr std::uint64_t line_bytes = 16;
    std::string out;
    for (std::uint64_t line = offset; line < offset + length; line += line_bytes) {
        out += fmt::format("{:08x}:", line);
        const std::uint64_t line_end = std::min(line + line_bytes, offset + length);
        for (std::uint64_t at = line; at < line_end; at += width) {
            out += fmt::format(" {:0{}x}", region.read(at, width), width * 2);
        }
        out += '\n';
    }
    return out;
}

}  // namespace ring3::pci
