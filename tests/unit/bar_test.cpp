#include "ring3/pci/bar.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "ring3/core/error.hpp"
#include "test_support.hpp"

namespace ring3::pci {
namespace {

namespace fs = std::filesystem;

using testing::error_of;
using testing::TempDir;
using testing::write_file;

// A register file the size of a small BAR, little-endian as PCI is.
struct FakeRegisters {
    alignas(8) std::array<std::byte, 64> bytes{};

    void put32(std::size_t offset, std::uint32_t value) {
        for (std::size_t i = 0; i < 4; ++i) {
            bytes[offset + i] = static_cast<std::byte>(value >> (8 * i));
        }
    }
};

TEST(MappedRegion, ReadsEveryWidthLittleEndian) {
    FakeRegisters regs;
    for (std::size_t i = 0; i < regs.bytes.size(); ++i) {
        regs.bytes[i] = static_cast<std::byte>(i);
    }
    MappedRegion region("fake BAR0", regs.bytes.data(), regs.bytes.size(), false);
    EXPECT_EQ(region.size(), 64u);
    EXPECT_EQ(region.mapped(), regs.bytes.data());
    EXPECT_EQ(region.read8(5), 0x05);
    EXPECT_EQ(region.read16(6), 0x0706);
    EXPECT_EQ(region.read32(8), 0x0b0a0908u);
    EXPECT_EQ(region.read64(16), 0x1716151413121110ull);
    EXPECT_EQ(region.read(60, 4), 0x3f3e3d3cu);
}

TEST(MappedRegion, WritesWhenWritable) {
    FakeRegisters regs;
    MappedRegion region("fake BAR0", regs.bytes.data(), regs.bytes.size(), true);
    region.write32(0x14, 0x00460001u);  // NVMe CC: EN with IOSQES/IOCQES
    region.write64(0x28, 0x1122334455667788ull);
    region.write16(2, 0xbeef);
    region.write8(1, 0x7f);
    EXPECT_EQ(region.read32(0x14), 0x00460001u);
    EXPECT_EQ(region.read32(0x28), 0x55667788u);
    EXPECT_EQ(region.read32(0x2c), 0x11223344u);
    EXPECT_EQ(region.read16(2), 0xbeef);
    EXPECT_EQ(region.read8(1), 0x7f);
}

TEST(MappedRegion, RefusesOutOfRangeMisalignedAndReadOnlyAccesses) {
    FakeRegisters regs;
    MappedRegion region("0000:01:00.0 BAR0", regs.bytes.data(), regs.bytes.size(), false);
    const auto past_end = error_of([&] { region.read32(64); }, EINVAL);
    EXPECT_NE(past_end.find("0000:01:00.0 BAR0"), std::string::npos) << past_end;
    EXPECT_NE(past_end.find("0x40"), std::string::npos) << past_end;
    error_of([&] { region.read64(60); }, EINVAL);  // straddles the end
    error_of([&] { region.read8(~std::uint64_t{0}); }, EINVAL);
    const auto misaligned = error_of([&] { region.read32(2); }, EINVAL);
    EXPECT_NE(misaligned.find("multiples"), std::string::npos) << misaligned;
    error_of([&] { region.read(0, 3); }, EINVAL);
    const auto read_only = error_of([&] { region.write32(0, 1); }, EBADF);
    EXPECT_NE(read_only.find("read-only"), std::string::npos) << read_only;
}

// ---- files in a temporary directory, and fake sysfs trees -------------------------------------

void write_bytes(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
}

TEST(FileRegion, ReadsAndWritesThroughPreadPwrite) {
    TempDir dir;
    std::vector<std::uint8_t> bytes(32);
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        bytes[i] = static_cast<std::uint8_t>(0xa0 + i);
    }
    write_bytes(dir.path() / "io", bytes);
    FileRegion region("io BAR", UniqueFd::open((dir.path() / "io").string(), O_RDWR), 8, 16, 4,
                      true);
    EXPECT_EQ(region.mapped(), nullptr);
    EXPECT_EQ(region.size(), 16u);
    EXPECT_EQ(region.read8(0), 0xa8);  // file offset 8
    EXPECT_EQ(region.read16(2), 0xabaa);
    EXPECT_EQ(region.read32(4), 0xafaeadacu);
    // 64 bits through a 4-byte-wide file: two reads, low half first, assembled little-endian.
    EXPECT_EQ(region.read64(8), 0xb7b6b5b4b3b2b1b0ull);
    region.write64(8, 0x0102030405060708ull);
    region.write16(0, 0xcafe);
    EXPECT_EQ(region.read32(8), 0x05060708u);
    EXPECT_EQ(region.read32(12), 0x01020304u);
    EXPECT_EQ(region.read16(0), 0xcafe);
    error_of([&] { region.read32(16); }, EINVAL);
}

TEST(FileRegion, ReportsShortReads) {
    TempDir dir;
    write_bytes(dir.path() / "short", {1, 2});
    FileRegion region("short BAR", UniqueFd::open((dir.path() / "short").string(), O_RDONLY), 0, 16,
                      4, false);
    const auto message = error_of([&] { region.read32(0); }, EIO);
    EXPECT_NE(message.find("short read"), std::string::npos) << message;
}

// ---- OFFSET[:LENGTH]
// -----------------------------------------------------------------------------

TEST(ByteRange, ParsesHexAndDecimal) {
    auto range = parse_byte_range("0x8:4");
    EXPECT_EQ(range.offset, 8u);
    ASSERT_TRUE(range.length.has_value());
    EXPECT_EQ(*range.length, 4u);
    range = parse_byte_range("16");
    EXPECT_EQ(range.offset, 16u);
    EXPECT_FALSE(range.length.has_value());
    range = parse_byte_range("0X1000:0x200");
    EXPECT_EQ(range.offset, 0x1000u);
    EXPECT_EQ(*range.length, 0x200u);
    range = parse_byte_range("0:0xffffffffffffffff");
    EXPECT_EQ(*range.length, ~std::uint64_t{0});
}

TEST(ByteRange, RejectsMalformedTextQuotingIt) {
    for (const char* bad : {"", ":4", "0x", "0x:4", "8:", "8:0", "8:4:2", "-1", "1e3", "0x1g",
                            "12a", " 8", "8 :4", "0x10000000000000000", "99999999999999999999"}) {
        const auto message = error_of([&] { parse_byte_range(bad); }, EINVAL);
        EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
        EXPECT_NE(message.find("OFFSET[:LENGTH]"), std::string::npos) << message;
    }
    EXPECT_NE(error_of([] { parse_byte_range("8:0"); }).find("length 0"), std::string::npos);
    EXPECT_NE(error_of([] { parse_byte_range("zz:4"); }).find("bad offset 'zz'"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_byte_range("8:4k"); }).find("bad length '4k'"),
              std::string::npos);
}

// ---- dump formatting
// -----------------------------------------------------------------------------

// The start of QEMU's NVMe BAR0 (REFERENCE.md): CAP = 0x0000_0020_0F01_07FF... low half as
// documented, VS = 0x00010400 (NVMe 1.4).
FakeRegisters nvme_like() {
    FakeRegisters regs;
    regs.put32(0x00, 0x0f0107ffu);
    regs.put32(0x04, 0x00000020u);
    regs.put32(0x08, 0x00010400u);
    for (std::size_t i = 0x10; i < regs.bytes.size(); ++i) {
        regs.bytes[i] = static_cast<std::byte>(i);
    }
    return regs;
}

TEST(Dump, OneWordAtAnOffset) {
    auto regs = nvme_like();
    MappedRegion region("fake", regs.bytes.data(), regs.bytes.size(), false);
    EXPECT_EQ(format_dump(region, 8, 4, 32), "00000008: 00010400\n");
}

TEST(Dump, SixteenBytesPerLineInEveryWidth) {
    auto regs = nvme_like();
    MappedRegion region("fake", regs.bytes.data(), regs.bytes.size(), false);
    EXPECT_EQ(format_dump(region, 0, 32, 32),
              "00000000: 0f0107ff 00000020 00010400 00000000\n"
              "00000010: 13121110 17161514 1b1a1918 1f1e1d1c\n");
    EXPECT_EQ(format_dump(region, 0, 16, 64), "00000000: 000000200f0107ff 0000000000010400\n");
    EXPECT_EQ(format_dump(region, 0x10, 8, 16), "00000010: 1110 1312 1514 1716\n");
    EXPECT_EQ(format_dump(region, 0x10, 20, 8),
              "00000010: 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f\n"
              "00000020: 20 21 22 23\n");
    // Lines start at the requested offset, not at a 16-byte boundary.
    EXPECT_EQ(format_dump(region, 0x38, 8, 32), "00000038: 3b3a3938 3f3e3d3c\n");
    EXPECT_EQ(format_dump(region, 0x2c, 20, 32),
              "0000002c: 2f2e2d2c 33323130 37363534 3b3a3938\n"
              "0000003c: 3f3e3d3c\n");
}

TEST(Dump, RefusesBadRangesBeforeReading) {
    auto regs = nvme_like();
    MappedRegion region("0000:01:00.0 BAR0", regs.bytes.data(), regs.bytes.size(), false);
    const auto outside = error_of([&] { format_dump(region, 0x40, 4, 32); }, EINVAL);
    EXPECT_NE(outside.find("0000:01:00.0 BAR0"), std::string::npos) << outside;
    EXPECT_NE(outside.find("do not fit"), std::string::npos) << outside;
    error_of([&] { format_dump(region, 0x30, 0x20, 32); }, EINVAL);  // runs past the end
    const auto misaligned = error_of([&] { format_dump(region, 2, 4, 32); }, EINVAL);
    EXPECT_NE(misaligned.find("multiples"), std::string::npos) << misaligned;
    error_of([&] { format_dump(region, 0, 6, 32); }, EINVAL);  // length not a multiple
    error_of([&] { format_dump(region, 0, 0, 32); }, EINVAL);
    error_of([&] { format_dump(region, 0, 4, 24); }, EINVAL);
}

// ---- open_sysfs_bar on a fake sysfs tree
// -----------------------------------------------------------

constexpr const char* kBdf = "0000:01:00.0";

// A device with BAR0 memory (16 KiB), BAR1 unused, BAR2 I/O (32 ports), BAR3 a sub-page memory
// BAR not at a page boundary, BAR4 prefetchable 64-bit memory with resourceN_wc, BAR5 unused.
class FakeSysfsBar : public ::testing::Test {
  protected:
    void SetUp() override {
        root_ = dir_.path() / "sys";
        device_ = root_ / "bus/pci/devices" / kBdf;
        write_file(device_ / "resource",
                   "0x00000000febf0000 0x00000000febf3fff 0x0000000000040200\n"
                   "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
                   "0x000000000000c000 0x000000000000c01f 0x0000000000040101\n"
                   "0x00000000febf4010 0x00000000febf401f 0x0000000000040200\n"
                   "0x0000000800000000 0x0000000800003fff 0x000000000014220c\n"
                   "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
                   "0x0000000000000000 0x0000000000000000 0x0000000000000000\n");
        std::vector<std::uint8_t> bar0(0x4000);
        const std::uint8_t vs[] = {0x00, 0x04, 0x01, 0x00};  // VS at 0x8 = 0x00010400
        std::copy(std::begin(vs), std::end(vs), bar0.begin() + 8);
        write_bytes(device_ / "resource0", bar0);
        std::vector<std::uint8_t> io(32);
        io[4] = 0x34;
        io[5] = 0x12;
        write_bytes(device_ / "resource2", io);
        std::vector<std::uint8_t> page(0x1000);
        page[0x10] = 0x78;
        page[0x11] = 0x56;
        write_bytes(device_ / "resource3", page);
        write_bytes(device_ / "resource4", std::vector<std::uint8_t>(0x4000));
        write_bytes(device_ / "resource4_wc", std::vector<std::uint8_t>(0x4000, 0xee));
    }

    void bind_driver(const std::string& driver) {
        fs::create_directories(root_ / "bus/pci/drivers" / driver);
        fs::create_symlink("../../../bus/pci/drivers/" + driver, device_ / "driver");
    }

    SysfsBarOptions options() const {
        SysfsBarOptions o;
        o.sysfs_root = root_.string();
        return o;
    }

    TempDir dir_{"ring3-bar"};
    fs::path root_;
    fs::path device_;
};

TEST_F(FakeSysfsBar, MapsMemoryBarAndReadsRegisters) {
    const auto bar = open_sysfs_bar(Address::parse(kBdf), 0, options());
    EXPECT_EQ(bar->size(), 0x4000u);
    EXPECT_EQ(bar->name(), "0000:01:00.0 BAR0");
    EXPECT_NE(bar->mapped(), nullptr);
    EXPECT_FALSE(bar->writable());
    EXPECT_EQ(bar->read32(8), 0x00010400u);
    EXPECT_EQ(format_dump(*bar, 8, 4, 32), "00000008: 00010400\n");
    error_of([&] { bar->write32(0x14, 1); }, EBADF);
}

TEST_F(FakeSysfsBar, ReadsIoBarWithPread) {
    const auto bar = open_sysfs_bar(Address::parse(kBdf), 2, options());
    EXPECT_EQ(bar->mapped(), nullptr);
    EXPECT_EQ(bar->size(), 32u);
    EXPECT_EQ(bar->read16(4), 0x1234);
    EXPECT_EQ(bar->read64(0), 0x0000123400000000ull);
}

TEST_F(FakeSysfsBar, FindsSubPageBarInsideItsPage) {
    const auto bar = open_sysfs_bar(Address::parse(kBdf), 3, options());
    EXPECT_EQ(bar->size(), 16u);
    EXPECT_EQ(bar->read16(0), 0x5678);  // byte 0x10 of the page: the BAR starts at ...4010
    error_of([&] { bar->read32(16); }, EINVAL);
}

TEST_F(FakeSysfsBar, WriteCombiningOnlyForPrefetchableBars) {
    auto o = options();
    o.caching = Caching::write_combining;
    const auto wc = open_sysfs_bar(Address::parse(kBdf), 4, o);
    EXPECT_EQ(wc->read8(0), 0xee);  // came from resource4_wc
    const auto message = error_of([&] { open_sysfs_bar(Address::parse(kBdf), 0, o); }, ENOENT);
    EXPECT_NE(message.find("resource0_wc"), std::string::npos) << message;
    EXPECT_NE(message.find("prefetchable"), std::string::npos) << message;
    error_of([&] { open_sysfs_bar(Address::parse(kBdf), 2, o); }, EINVAL);
}

TEST_F(FakeSysfsBar, RefusesUnusedAndOutOfRangeBars) {
    const auto unused =
        error_of([&] { open_sysfs_bar(Address::parse(kBdf), 1, options()); }, ENXIO);
    EXPECT_NE(unused.find("0000:01:00.0 BAR1"), std::string::npos) << unused;
    EXPECT_NE(unused.find("does not implement"), std::string::npos) << unused;
    error_of([&] { open_sysfs_bar(Address::parse(kBdf), 5, options()); }, ENXIO);
    const auto index = error_of([&] { open_sysfs_bar(Address::parse(kBdf), 6, options()); });
    EXPECT_NE(index.find("0 to 5"), std::string::npos) << index;
    const auto missing =
        error_of([&] { open_sysfs_bar(Address::parse("0000:02:00.0"), 0, options()); }, ENODEV);
    EXPECT_NE(missing.find("0000:02:00.0"), std::string::npos) << missing;
}

TEST_F(FakeSysfsBar, RefusesBarWithoutAnAddress) {
    // BAR0 as the kernel lists one it could not place: the size kept, IORESOURCE_UNSET set.
    write_file(device_ / "resource", "0x0000000000000000 0x0000000000003fff 0x0000000020040200\n");
    const auto message =
        error_of([&] { open_sysfs_bar(Address::parse(kBdf), 0, options()); }, ENXIO);
    EXPECT_NE(message.find("0000:01:00.0 BAR0"), std::string::npos) << message;
    EXPECT_NE(message.find("no address assigned"), std::string::npos) << message;
}

TEST_F(FakeSysfsBar, RefusesDeviceOnKernelDriverNamingHowToFreeIt) {
    bind_driver("nvme");
    const auto message =
        error_of([&] { open_sysfs_bar(Address::parse(kBdf), 0, options()); }, EBUSY);
    EXPECT_NE(message.find("kernel driver 'nvme'"), std::string::npos) << message;
    EXPECT_NE(message.find("`ring3 unbind 0000:01:00.0`"), std::string::npos) << message;
    EXPECT_NE(message.find("`ring3 bind 0000:01:00.0 vfio-pci`"), std::string::npos) << message;
    // I/O BARs too: the kernel does not stop those at all.
    error_of([&] { open_sysfs_bar(Address::parse(kBdf), 2, options()); }, EBUSY);
}

TEST_F(FakeSysfsBar, AcceptsUserSpaceDrivers) {
    bind_driver("vfio-pci");
    EXPECT_EQ(open_sysfs_bar(Address::parse(kBdf), 0, options())->read32(8), 0x00010400u);
}

TEST_F(FakeSysfsBar, ExplainsStrictDevmemRefusal) {
    bind_driver("nvme");
    auto o = options();
    o.allow_kernel_driver = true;
    o.map = [](int, std::size_t, int, const std::string& path) -> Mapping {
        errno = EINVAL;  // what pci_mmap_resource() returns under CONFIG_IO_STRICT_DEVMEM
        throw Error::from_errno("mmap", path);
    };
    const auto message = error_of([&] { open_sysfs_bar(Address::parse(kBdf), 0, o); }, EINVAL);
    EXPECT_NE(message.find("0000:01:00.0 BAR0"), std::string::npos) << message;
    EXPECT_NE(message.find("resource0"), std::string::npos) << message;
    EXPECT_NE(message.find("CONFIG_IO_STRICT_DEVMEM"), std::string::npos) << message;
    EXPECT_NE(message.find("kernel driver 'nvme'"), std::string::npos) << message;
    EXPECT_NE(message.find("`ring3 unbind 0000:01:00.0`"), std::string::npos) << message;
    EXPECT_NE(message.find("`ring3 bind 0000:01:00.0 vfio-pci`"), std::string::npos) << message;
}

TEST_F(FakeSysfsBar, ExplainsRefusalOnVfioAndLockdown) {
    bind_driver("vfio-pci");
    auto o = options();
    int errnum = EINVAL;
    o.map = [&errnum](int, std::size_t, int, const std::string& path) -> Mapping {
        errno = errnum;
        throw Error::from_errno("mmap", path);
    };
    const auto vfio = error_of([&] { open_sysfs_bar(Address::parse(kBdf), 0, o); }, EINVAL);
    EXPECT_NE(vfio.find("open through VFIO"), std::string::npos) << vfio;
    errnum = EPERM;
    const auto lockdown = error_of([&] { open_sysfs_bar(Address::parse(kBdf), 0, o); }, EPERM);
    EXPECT_NE(lockdown.find("locked down"), std::string::npos) << lockdown;
}

TEST_F(FakeSysfsBar, OpensWritableAndStoresThrough) {
    auto o = options();
    o.writable = true;
    {
        const auto bar = open_sysfs_bar(Address::parse(kBdf), 0, o);
        EXPECT_TRUE(bar->writable());
        bar->write32(0x14, 0x00460001u);
    }
    const auto bar = open_sysfs_bar(Address::parse(kBdf), 0, options());
    EXPECT_EQ(bar->read32(0x14), 0x00460001u);  // MAP_SHARED: the store reached the file
}

}  // namespace
}  // namespace ring3::pci
