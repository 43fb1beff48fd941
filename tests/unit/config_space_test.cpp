// Config-space decoder tests: real config spaces saved from devices (tests/unit/data/*.cfg; the
// expected values were checked against `lspci -vvv` on the machine they came from), and broken
// ones made from them by changing a few bytes.
#include "ring3/pci/config_space.hpp"

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "ring3/core/error.hpp"
#include "test_support.hpp"

namespace ring3::pci {
namespace {

using testing::error_of;

// A config space being edited: starts from a file or from zeros.
class Space {
  public:
    explicit Space(std::size_t size, std::uint8_t fill = 0) : bytes_(size, fill) {}
    static Space load(const std::string& name) {
        const std::string path = std::string(RING3_TEST_DATA_DIR) + "/" + name;
        std::ifstream in(path, std::ios::binary);
        EXPECT_TRUE(in.good()) << "cannot open " << path;
        Space space(0);
        space.bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        return space;
    }

    std::size_t size() const { return bytes_.size(); }
    void resize(std::size_t size) { bytes_.resize(size, 0); }
    void put8(std::size_t offset, std::uint8_t value) { bytes_.at(offset) = value; }
    void put16(std::size_t offset, std::uint16_t value) {
        put8(offset, static_cast<std::uint8_t>(value));
        put8(offset + 1, static_cast<std::uint8_t>(value >> 8));
    }
    void put32(std::size_t offset, std::uint32_t value) {
        put16(offset, static_cast<std::uint16_t>(value));
        put16(offset + 2, static_cast<std::uint16_t>(value >> 16));
    }
    // Copies `length` bytes from `from` to `to`, cut at the end of the space.
    void copy(std::size_t from, std::size_t length, std::size_t to) {
        for (std::size_t i = 0; i < length && to + i < bytes_.size(); ++i) {
            bytes_.at(to + i) = bytes_.at(from + i);
        }
    }

    // A view of the first `length` bytes (all of them by default).
    ConfigView view(std::size_t length = std::numeric_limits<std::size_t>::max()) const {
        return ConfigView(std::span(bytes_).first(std::min(length, bytes_.size())));
    }

  private:
    std::vector<std::uint8_t> bytes_;
};

std::vector<std::string> descriptions(const CapabilityWalk& walk) {
    std::vector<std::string> lines;
    for (const auto& capability : walk.capabilities) {
        lines.push_back(fmt::format("[{:x}] {}", capability.offset, describe(capability)));
    }
    return lines;
}

std::string header_error(const ConfigView& view) {
    try {
        decode_header(view);
    } catch (const Error& e) {
        EXPECT_EQ(e.errnum(), EINVAL);
        return e.what();
    }
    return "no error";
}

// The capability chain of QEMU/Firecracker's virtio 1.0 PCI devices (saved from this host):
// five virtio vendor capabilities, then MSI-X at 0x98.
const std::vector<std::string> kVirtioChain = {
    "[40] Vendor Specific: Len=0x10", "[50] Vendor Specific: Len=0x10",
    "[60] Vendor Specific: Len=0x10", "[70] Vendor Specific: Len=0x14",
    "[84] Vendor Specific: Len=0x14",
};
std::vector<std::string> virtio_chain_then(const std::string& msix) {
    auto lines = kVirtioChain;
    lines.push_back("[98] " + msix);
    return lines;
}

// ---- ConfigView ------------------------------------------------------------------------------

TEST(ConfigView, ReadsLittleEndian) {
    Space space(8);
    space.put32(0, 0x12345678);
    space.put16(4, 0xabcd);
    const auto view = space.view();
    EXPECT_EQ(view.size(), 8u);
    EXPECT_EQ(view.read32(0), 0x12345678u);
    EXPECT_EQ(view.read16(0), 0x5678u);
    EXPECT_EQ(view.read16(1), 0x3456u);
    EXPECT_EQ(view.read8(3), 0x12u);
    EXPECT_EQ(view.read16(4), 0xabcdu);
    EXPECT_EQ(view.read32(4), 0x0000abcdu);
    EXPECT_TRUE(view.has(4, 4));
    EXPECT_FALSE(view.has(5, 4));
    EXPECT_TRUE(view.has(8, 0));
    EXPECT_FALSE(view.has(9, 0));
    EXPECT_FALSE(view.has(4, std::numeric_limits<std::size_t>::max()));
}

TEST(ConfigView, ThrowsOnReadsPastTheEnd) {
    Space space(64);
    const auto view = space.view();
    EXPECT_EQ(error_of([&] { view.read32(0x3e); }),
              "read 32 bits of config space at 0x3e: past the end of the 64 bytes available");
    EXPECT_EQ(error_of([&] { view.read16(0x3f); }),
              "read 16 bits of config space at 0x3f: past the end of the 64 bytes available");
    EXPECT_EQ(error_of([&] { view.read8(0x40); }),
              "read 8 bits of config space at 0x40: past the end of the 64 bytes available");
    EXPECT_EQ(error_of([&] { view.read32(std::numeric_limits<std::size_t>::max() - 1); }),
              "read 32 bits of config space at 0xfffffffffffffffe: past the end of the 64 bytes "
              "available");
    EXPECT_EQ(error_of([&] { ConfigView({}).read8(0); }),
              "read 8 bits of config space at 0x0: past the end of the 0 bytes available");
    EXPECT_EQ(error_of([&] { view.read32(0x3c); }), "no error");
}

// ---- Real devices (this host: Firecracker/QEMU virtio 1.0 devices and an Intel host bridge) ----

struct HostDevice {
    const char* file;
    std::uint16_t device_id;
    std::uint32_t class_code;
    std::uint64_t bar0;
    unsigned msix_vectors;
};

class HostVirtioDevice : public ::testing::TestWithParam<HostDevice> {};

TEST_P(HostVirtioDevice, DecodesHeaderBarsAndCapabilities) {
    const HostDevice& expected = GetParam();
    const auto space = Space::load(expected.file);
    ASSERT_EQ(space.size(), kConfigConventionalSize);

    const Header header = decode_header(space.view());
    EXPECT_EQ(header.vendor_id, 0x1af4);
    EXPECT_EQ(header.device_id, expected.device_id);
    EXPECT_EQ(header.subsystem_vendor_id, 0x1af4);
    EXPECT_EQ(header.subsystem_id, expected.device_id);
    EXPECT_EQ(header.class_code, expected.class_code);
    EXPECT_EQ(header.revision, 1);
    EXPECT_EQ(header.header_layout, 0);
    EXPECT_FALSE(header.multifunction);
    // Mem+ BusMaster+ DisINTx+; Cap+.
    EXPECT_EQ(header.command,
              cfg::command_memory_space | cfg::command_bus_master | cfg::command_interrupt_disable);
    EXPECT_EQ(header.status, cfg::status_capabilities_list);
    EXPECT_EQ(header.capabilities_pointer, 0x40);
    EXPECT_EQ(header.interrupt_pin, 0);
    EXPECT_EQ(header.interrupt_line, 0);

    // BAR0 is 64-bit (BAR1 is its upper half); BAR2..5 are not implemented.
    ASSERT_EQ(header.bars.size(), 5u);
    EXPECT_EQ(header.bars[0].index, 0u);
    EXPECT_EQ(header.bars[0].kind, BarKind::memory64);
    EXPECT_FALSE(header.bars[0].prefetchable);
    EXPECT_EQ(header.bars[0].address, expected.bar0);
    for (unsigned i = 1; i < header.bars.size(); ++i) {
        EXPECT_EQ(header.bars[i].index, i + 1);
        EXPECT_EQ(header.bars[i].kind, BarKind::unused);
        EXPECT_EQ(header.bars[i].address, 0u);
    }
    EXPECT_EQ(header.bar_error, "");

    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_EQ(descriptions(walk),
              virtio_chain_then(fmt::format("MSI-X: Enable+ Count={} Masked- Table: BAR0+0x8000 "
                                            "PBA: BAR0+0x48000",
                                            expected.msix_vectors)));
    ASSERT_EQ(walk.capabilities.size(), 6u);
    const auto& msix = std::get<MsixInfo>(walk.capabilities[5].detail);
    EXPECT_EQ(walk.capabilities[5].id, cap::msix);
    EXPECT_FALSE(walk.capabilities[5].extended);
    EXPECT_TRUE(msix.enabled);
    EXPECT_FALSE(msix.function_masked);
    EXPECT_EQ(msix.table_size, expected.msix_vectors);
    EXPECT_EQ(msix.table_bir, 0);
    EXPECT_EQ(msix.table_offset, 0x8000u);
    EXPECT_EQ(msix.pba_bir, 0);
    EXPECT_EQ(msix.pba_offset, 0x48000u);
    EXPECT_EQ(std::get<VendorSpecificInfo>(walk.capabilities[3].detail).length, 0x14);

    // A 256-byte view has no extended space: an empty list, not an error.
    const auto extended = walk_extended_capabilities(space.view());
    EXPECT_EQ(extended.error, "");
    EXPECT_TRUE(extended.capabilities.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Host, HostVirtioDevice,
    ::testing::Values(
        HostDevice{"host-1af4-1041-virtio-net.cfg", 0x1041, 0x020000, 0x4000100000, 3},
        HostDevice{"host-1af4-1042-virtio-blk.cfg", 0x1042, 0x018000, 0x4000080000, 2},
        HostDevice{"host-1af4-1044-virtio-rng.cfg", 0x1044, 0xffff00, 0x4000200000, 2},
        HostDevice{"host-1af4-1045-virtio-balloon.cfg", 0x1045, 0xffff00, 0x4000000000, 5},
        HostDevice{"host-1af4-1053-virtio-vsock.cfg", 0x1053, 0xffff00, 0x4000180000, 4}),
    [](const auto& test) {
        std::string name = test.param.file;
        name = name.substr(0, name.find('.'));
        for (char& c : name) {
            if (c == '-') {
                c = '_';
            }
        }
        return name;
    });

TEST(HostBridge, HasNoCapabilitiesAndAnEmptyExtendedSpace) {
    const auto space = Space::load("host-8086-0d57-hostbridge.cfg");
    ASSERT_EQ(space.size(), kConfigExtendedSize);
    const Header header = decode_header(space.view());
    EXPECT_EQ(header.vendor_id, 0x8086);
    EXPECT_EQ(header.device_id, 0x0d57);
    EXPECT_EQ(header.class_code, 0x060000u);
    EXPECT_EQ(header.command, 0);
    EXPECT_EQ(header.status, 0);
    EXPECT_EQ(header.capabilities_pointer, 0);
    ASSERT_EQ(header.bars.size(), 6u);
    for (const auto& bar : header.bars) {
        EXPECT_EQ(bar.kind, BarKind::unused);
    }
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_TRUE(walk.capabilities.empty());
    // Extended header of 0 at 0x100: no extended capabilities, and that is not an error.
    const auto extended = walk_extended_capabilities(space.view());
    EXPECT_EQ(extended.error, "");
    EXPECT_TRUE(extended.capabilities.empty());
}

// ---- Guest devices (QEMU q35, saved by tests/guest/collect-configs) ---------------------------
// Expected values are those of the `.lspci` file saved beside each `.cfg` (lspci -vvv in the
// guest).

struct GuestDevice {
    const char* name;  // <name>.cfg
    std::uint16_t vendor_id;
    std::uint16_t device_id;
    std::uint32_t class_code;
    std::uint8_t header_layout;
    std::uint16_t command;
    std::vector<std::string> bars;  // implemented BARs, as bar_lines() prints them
    std::vector<std::string> capabilities;
    std::vector<std::string> extended_capabilities;
};

std::vector<std::string> bar_lines(const Header& header) {
    std::vector<std::string> lines;
    for (const auto& bar : header.bars) {
        const char* kind = bar.kind == BarKind::io         ? "I/O"
                           : bar.kind == BarKind::memory32 ? "mem32"
                           : bar.kind == BarKind::memory64 ? "mem64"
                                                           : nullptr;
        if (kind != nullptr) {
            lines.push_back(fmt::format("BAR{} {}{} at {:#x}", bar.index, kind,
                                        bar.prefetchable ? " prefetchable" : "", bar.address));
        }
    }
    return lines;
}

class GuestConfig : public ::testing::TestWithParam<GuestDevice> {};

TEST_P(GuestConfig, DecodesAsLspciDoes) {
    const GuestDevice& expected = GetParam();
    const auto space = Space::load(std::string(expected.name) + ".cfg");
    const Header header = decode_header(space.view());
    EXPECT_EQ(header.vendor_id, expected.vendor_id);
    EXPECT_EQ(header.device_id, expected.device_id);
    EXPECT_EQ(header.class_code, expected.class_code);
    EXPECT_EQ(header.header_layout, expected.header_layout);
    EXPECT_EQ(header.command, expected.command);
    EXPECT_EQ(bar_lines(header), expected.bars);
    EXPECT_EQ(header.bar_error, "");

    const auto standard = walk_capabilities(space.view());
    EXPECT_EQ(standard.error, "");
    EXPECT_EQ(descriptions(standard), expected.capabilities);
    const auto extended = walk_extended_capabilities(space.view());
    EXPECT_EQ(extended.error, "");
    EXPECT_EQ(descriptions(extended), expected.extended_capabilities);
}

// Command: I/O+ Mem+ BusMaster+ SERR+ DisINTx+ (0x0507); I/O+ Mem+ SERR+ (0x0103).
INSTANTIATE_TEST_SUITE_P(
    Guest, GuestConfig,
    ::testing::Values(
        GuestDevice{
            "e1000e",
            0x8086,
            0x10d3,
            0x020000,
            0,
            0x0507,
            {"BAR0 mem32 at 0xfda40000", "BAR1 mem32 at 0xfda60000", "BAR2 I/O at 0xc000",
             "BAR3 mem32 at 0xfda80000"},
            {"[c8] Power Management version 2", "[d0] MSI: Enable- Count=1/1 64bit+ Maskable-",
             "[e0] Express (v1) Endpoint, FLR-, Link: 2.5GT/s x1 (max 2.5GT/s x1)",
             "[a0] MSI-X: Enable+ Count=5 Masked- Table: BAR3+0x0000 PBA: BAR3+0x2000"},
            {"[100] Advanced Error Reporting (v2)", "[140] Device Serial Number (v1)"}},
        GuestDevice{"nvme",
                    0x1b36,
                    0x0010,
                    0x010802,
                    0,
                    0x0507,
                    {"BAR0 mem64 at 0xfe000000"},
                    {"[40] MSI-X: Enable+ Count=65 Masked- Table: BAR0+0x2000 PBA: BAR0+0x3000",
                     "[80] Express (v2) Endpoint, FLR+, Link: 2.5GT/s x1 (max 2.5GT/s x1)",
                     "[60] Power Management version 3"},
                    {}},
        GuestDevice{"pcie-root-port",
                    0x1b36,
                    0x000c,
                    0x060400,
                    1,
                    0x0507,
                    {"BAR0 mem32 at 0xfe200000"},
                    {"[54] Express (v2) Root Port, FLR-, Link: 2.5GT/s x1 (max 16GT/s x32)",
                     "[48] MSI-X: Enable+ Count=1 Masked- Table: BAR0+0x0000 PBA: BAR0+0x0800",
                     "[40] Bridge Subsystem Vendor ID"},
                    {"[100] Advanced Error Reporting (v2)", "[148] Access Control Services (v1)"}},
        GuestDevice{"virtio-net",
                    0x1af4,
                    0x1041,
                    0x020000,
                    0,
                    0x0507,
                    {"BAR1 mem32 at 0xfde40000", "BAR4 mem64 prefetchable at 0xfe800000"},
                    {"[dc] MSI-X: Enable+ Count=4 Masked- Table: BAR1+0x0000 PBA: BAR1+0x0800",
                     "[c8] Vendor Specific: Len=0x14", "[b4] Vendor Specific: Len=0x14",
                     "[a4] Vendor Specific: Len=0x10", "[94] Vendor Specific: Len=0x10",
                     "[84] Vendor Specific: Len=0x10", "[7c] Power Management version 3",
                     "[40] Express (v2) Endpoint, FLR+, Link: 2.5GT/s x1 (max 2.5GT/s x1)"},
                    {}},
        GuestDevice{"virtio-blk",
                    0x1af4,
                    0x1042,
                    0x010000,
                    0,
                    0x0507,
                    {"BAR1 mem32 at 0xfdc00000", "BAR4 mem64 prefetchable at 0xfe600000"},
                    {"[dc] MSI-X: Enable+ Count=3 Masked- Table: BAR1+0x0000 PBA: BAR1+0x0800",
                     "[c8] Vendor Specific: Len=0x14", "[b4] Vendor Specific: Len=0x14",
                     "[a4] Vendor Specific: Len=0x10", "[94] Vendor Specific: Len=0x10",
                     "[84] Vendor Specific: Len=0x10", "[7c] Power Management version 3",
                     "[40] Express (v2) Endpoint, FLR+, Link: 2.5GT/s x1 (max 2.5GT/s x1)"},
                    {}},
        GuestDevice{"q35-host-bridge", 0x8086, 0x29c0, 0x060000, 0, 0x0103, {}, {}, {}},
        GuestDevice{"q35-lpc", 0x8086, 0x2918, 0x060100, 0, 0x0103, {}, {}, {}},
        GuestDevice{
            "q35-sata",
            0x8086,
            0x2922,
            0x010601,
            0,
            0x0107,
            {"BAR4 I/O at 0xd040", "BAR5 mem32 at 0xfe204000"},
            {"[80] MSI: Enable- Count=1/1 64bit+ Maskable-", "[a8] SATA Data/Index Configuration"},
            {}},
        GuestDevice{
            "q35-smbus", 0x8086, 0x2930, 0x0c0500, 0, 0x0103, {"BAR4 I/O at 0x700"}, {}, {}}),
    [](const auto& test) {
        std::string name = test.param.name;
        std::replace(name.begin(), name.end(), '-', '_');
        return name;
    });

TEST(GuestConfigDetails, E1000e) {
    const auto space = Space::load("e1000e.cfg");
    const Header header = decode_header(space.view());
    EXPECT_EQ(header.subsystem_vendor_id, 0x8086);
    EXPECT_EQ(header.subsystem_id, 0x0000);
    EXPECT_EQ(header.capabilities_pointer, 0xc8);
    EXPECT_EQ(header.interrupt_pin, 1);  // INTA
    EXPECT_EQ(header.status, cfg::status_capabilities_list);
    const auto walk = walk_capabilities(space.view());
    ASSERT_EQ(walk.capabilities.size(), 4u);
    const auto& pm = std::get<PowerManagementInfo>(walk.capabilities[0].detail);
    EXPECT_EQ(pm.power_state, 0);  // D0
    EXPECT_FALSE(pm.no_soft_reset);
    const auto& pcie = std::get<PcieInfo>(walk.capabilities[2].detail);
    EXPECT_EQ(pcie.version, 1);
    EXPECT_EQ(pcie.max_payload_supported, 128u);
    EXPECT_FALSE(pcie.function_level_reset);
    const auto& msix = std::get<MsixInfo>(walk.capabilities[3].detail);
    EXPECT_EQ(walk.capabilities[3].offset, 0xa0);
    EXPECT_EQ(msix.table_size, 5u);
    EXPECT_EQ(msix.table_bir, 3);
    EXPECT_EQ(msix.table_offset, 0u);
    EXPECT_EQ(msix.pba_bir, 3);
    EXPECT_EQ(msix.pba_offset, 0x2000u);
    const auto extended = walk_extended_capabilities(space.view());
    ASSERT_EQ(extended.capabilities.size(), 2u);
    EXPECT_EQ(extended.capabilities[0].id, ext_cap::advanced_error_reporting);
    EXPECT_EQ(extended.capabilities[0].version, 2);
}

TEST(GuestConfigDetails, NvmeAndRootPort) {
    const auto nvme = Space::load("nvme.cfg");
    const auto nvme_walk = walk_capabilities(nvme.view());
    ASSERT_EQ(nvme_walk.capabilities.size(), 3u);
    EXPECT_TRUE(std::get<PowerManagementInfo>(nvme_walk.capabilities[2].detail).no_soft_reset);
    EXPECT_EQ(decode_header(nvme.view()).revision, 2);

    const auto port = Space::load("pcie-root-port.cfg");
    const Header header = decode_header(port.view());
    EXPECT_EQ(header.primary_bus, 0);
    EXPECT_EQ(header.secondary_bus, 1);
    EXPECT_EQ(header.subordinate_bus, 1);
    const auto walk = walk_capabilities(port.view());
    ASSERT_EQ(walk.capabilities.size(), 3u);
    const auto& pcie = std::get<PcieInfo>(walk.capabilities[0].detail);
    EXPECT_EQ(pcie.port_type, 4);
    EXPECT_EQ(pcie.link_speed_max, 4u);
    EXPECT_EQ(pcie.link_width_max, 32u);
    EXPECT_EQ(pcie.link_speed, 1u);
    EXPECT_EQ(pcie.link_width, 1u);
}

// Guest configs as an unprivileged process would read them: only the 64-byte header.
TEST(GuestConfigDetails, UnprivilegedReads) {
    EXPECT_EQ(walk_capabilities(Space::load("e1000e.cfg").view(kConfigHeaderSize)).error,
              "capabilities start at 0xc8, beyond the 64 bytes readable without root; run as root "
              "to decode them");
    EXPECT_EQ(walk_capabilities(Space::load("nvme.cfg").view(kConfigHeaderSize)).error,
              "capabilities start at 0x40, beyond the 64 bytes readable without root; run as root "
              "to decode them");
    EXPECT_EQ(walk_capabilities(Space::load("q35-lpc.cfg").view(kConfigHeaderSize)).error, "");
}

// Broken copies of the e1000e's space.
TEST(GuestConfigBroken, E1000eLists) {
    auto space = Space::load("e1000e.cfg");
    // Its chain is c8 -> d0 -> e0 -> a0. MSI-X moved to the end of the standard space, where
    // only 8 of its 12 bytes fit: in a 4096-byte view it must not run on into 0x100.
    space.copy(0xa0, 8, 0xf8);
    space.put8(0xe1, 0xf8);
    EXPECT_EQ(walk_capabilities(space.view()).error,
              "capability at 0xf8 (MSI-X) is truncated: needs 12 bytes, 8 left");
    space.put8(0xe1, 0xc8);
    auto loop = walk_capabilities(space.view());
    EXPECT_EQ(loop.error, "capability list loops back to 0xc8");
    EXPECT_EQ(loop.capabilities.size(), 3u);
    space.put8(0xd1, 0x3c);
    EXPECT_EQ(walk_capabilities(space.view()).error,
              "capability at 0xd0 points to 0x3c, inside the header");
    // Extended: AER at 0x100 -> DSN at 0x140.
    space.put32(0x140, (space.view().read32(0x140) & 0x000fffff) | 0x100u << 20);
    EXPECT_EQ(walk_extended_capabilities(space.view()).error,
              "extended capability list loops back to 0x100");
    space.put32(0x140, (space.view().read32(0x140) & 0x000fffff) | 0x0fcu << 20);
    EXPECT_EQ(walk_extended_capabilities(space.view()).error,
              "extended capability at 0x140 points to 0xfc, below 0x100 where extended "
              "capabilities start");
    space.put32(0x140, 0);
    const auto ended = walk_extended_capabilities(space.view());
    EXPECT_EQ(ended.error, "");
    EXPECT_EQ(descriptions(ended),
              (std::vector<std::string>{"[100] Advanced Error Reporting (v2)"}));
}

// ---- What an unprivileged reader gets: the first 64 bytes --------------------------------------

TEST(UnprivilegedView, DecodesTheHeaderAndSaysCapabilitiesNeedRoot) {
    const auto space = Space::load("host-1af4-1041-virtio-net.cfg");
    const auto view = space.view(kConfigHeaderSize);
    const Header header = decode_header(view);
    EXPECT_EQ(header.device_id, 0x1041);
    EXPECT_EQ(header.capabilities_pointer, 0x40);
    ASSERT_FALSE(header.bars.empty());
    EXPECT_EQ(header.bars[0].address, 0x4000100000u);

    const auto walk = walk_capabilities(view);
    EXPECT_TRUE(walk.capabilities.empty());
    EXPECT_EQ(walk.error,
              "capabilities start at 0x40, beyond the 64 bytes readable without root; run as root "
              "to decode them");
    EXPECT_EQ(walk_extended_capabilities(view).error, "");
}

TEST(UnprivilegedView, WithoutACapabilityListIsNotAnError) {
    const auto space = Space::load("host-8086-0d57-hostbridge.cfg");
    const auto walk = walk_capabilities(space.view(kConfigHeaderSize));
    EXPECT_EQ(walk.error, "");
    EXPECT_TRUE(walk.capabilities.empty());
}

// ---- Header: BARs and layouts ------------------------------------------------------------------

Space endpoint() {
    Space space(kConfigConventionalSize);
    space.put16(cfg::vendor_id, 0x1b36);
    space.put16(cfg::device_id, 0x0010);
    space.put32(cfg::revision_id, 0x01080202);  // class 010802, revision 2
    return space;
}

TEST(Header, DecodesEveryKindOfBar) {
    auto space = endpoint();
    space.put32(0x10, 0xfebf1000);  // BAR0: 32-bit memory
    space.put32(0x14, 0x0000c001);  // BAR1: I/O at 0xc000
    space.put32(0x18, 0xe000000c);  // BAR2: 64-bit prefetchable, upper half in BAR3
    space.put32(0x1c, 0x00000001);
    space.put32(0x20, 0x00000000);  // BAR4: unused
    space.put32(0x24, 0xfe000008);  // BAR5: 32-bit prefetchable
    space.put8(cfg::interrupt_line, 11);
    space.put8(cfg::interrupt_pin, 1);
    const Header header = decode_header(space.view());
    EXPECT_EQ(header.class_code, 0x010802u);
    EXPECT_EQ(header.revision, 2);
    EXPECT_EQ(header.interrupt_line, 11);
    EXPECT_EQ(header.interrupt_pin, 1);
    EXPECT_EQ(header.bar_error, "");
    ASSERT_EQ(header.bars.size(), 5u);
    const auto expect_bar = [&](std::size_t i, unsigned index, BarKind kind, bool prefetchable,
                                std::uint64_t address) {
        SCOPED_TRACE(i);
        EXPECT_EQ(header.bars[i].index, index);
        EXPECT_EQ(header.bars[i].kind, kind);
        EXPECT_EQ(header.bars[i].prefetchable, prefetchable);
        EXPECT_EQ(header.bars[i].address, address);
    };
    expect_bar(0, 0, BarKind::memory32, false, 0xfebf1000);
    expect_bar(1, 1, BarKind::io, false, 0xc000);
    expect_bar(2, 2, BarKind::memory64, true, 0x1e0000000);
    expect_bar(3, 4, BarKind::unused, false, 0);
    expect_bar(4, 5, BarKind::memory32, true, 0xfe000000);
}

TEST(Header, ReportsA64BitBarInTheLastSlot) {
    auto space = endpoint();
    space.put32(0x24, 0xfe00000c);
    const Header header = decode_header(space.view());
    EXPECT_EQ(header.bar_error,
              "BAR5 at 0x24 is 64-bit but is the last BAR register: its upper 32 bits have no "
              "register");
    ASSERT_EQ(header.bars.size(), 6u);
    EXPECT_EQ(header.bars[5].kind, BarKind::memory64);
    EXPECT_EQ(header.bars[5].address, 0xfe000000u);
}

TEST(Header, ReportsAReservedMemoryType) {
    auto space = endpoint();
    space.put32(0x10, 0xfebf0006);
    space.put32(0x14, 0xfebf2000);
    const Header header = decode_header(space.view());
    EXPECT_EQ(header.bar_error, "BAR0 at 0x10 has the reserved memory type 3");
    ASSERT_EQ(header.bars.size(), 6u);
    EXPECT_EQ(header.bars[0].kind, BarKind::unused);
    EXPECT_EQ(header.bars[1].kind, BarKind::memory32);
    EXPECT_EQ(header.bars[1].address, 0xfebf2000u);
}

TEST(Header, DecodesABridge) {
    auto space = endpoint();
    space.put32(cfg::revision_id, 0x06040000);
    space.put8(cfg::header_type, 0x81);  // multi-function, layout 1
    space.put32(0x10, 0xfe800000);
    space.put32(0x14, 0x0000000c);  // 64-bit in the bridge's last BAR
    space.put8(0x18, 0x00);
    space.put8(0x19, 0x01);
    space.put8(0x1a, 0x03);
    space.put16(cfg::subsystem_vendor_id, 0x1234);  // the bridge's I/O base/limit, not an ID
    const Header header = decode_header(space.view());
    EXPECT_EQ(header.header_layout, 1);
    EXPECT_TRUE(header.multifunction);
    EXPECT_EQ(header.class_code, 0x060400u);
    EXPECT_EQ(header.primary_bus, 0);
    EXPECT_EQ(header.secondary_bus, 1);
    EXPECT_EQ(header.subordinate_bus, 3);
    EXPECT_EQ(header.subsystem_vendor_id, 0);
    ASSERT_EQ(header.bars.size(), 2u);
    EXPECT_EQ(header.bars[0].kind, BarKind::memory32);
    EXPECT_EQ(header.bars[1].kind, BarKind::memory64);
    EXPECT_EQ(header.bar_error,
              "BAR1 at 0x14 is 64-bit but is the last BAR register: its upper 32 bits have no "
              "register");
}

TEST(Header, RejectsWhatItCannotDecode) {
    EXPECT_EQ(header_error(ConfigView({})),
              "decode config space header: 0 bytes of config space, shorter than the 64-byte "
              "header");
    const auto net = Space::load("host-1af4-1041-virtio-net.cfg");
    EXPECT_EQ(header_error(net.view(63)),
              "decode config space header: 63 bytes of config space, shorter than the 64-byte "
              "header");
    EXPECT_EQ(header_error(Space(kConfigConventionalSize, 0xff).view()),
              "decode config space header: vendor ID reads 0xffff: no device answers (absent, "
              "removed or powered off)");
    auto space = endpoint();
    space.put8(cfg::header_type, 0x02);
    EXPECT_EQ(header_error(space.view()),
              "decode config space header: header type 2 (CardBus bridge) is not supported");
    space.put8(cfg::header_type, 0xff);
    EXPECT_EQ(header_error(space.view()),
              "decode config space header: header type 0x7f is undefined");
}

// ---- Capability details, on a synthetic PCIe endpoint -----------------------------------------

// PM at 0x40, MSI (64-bit, maskable: 24 bytes) at 0x50, PCIe at 0x70, MSI-X at 0xb0.
Space pcie_endpoint() {
    auto space = endpoint();
    space.put16(cfg::status, cfg::status_capabilities_list);
    space.put8(cfg::capabilities_pointer, 0x40);
    space.put16(0x40, 0x5001);
    space.put16(0x42, 0xc803);  // version 3
    space.put16(0x44, 0x0008);  // D0, No_Soft_Reset
    space.put16(0x50, 0x7005);
    space.put16(0x52, 0x0195);  // enabled, 4 capable, 2 enabled, 64-bit, per-vector masking
    space.put16(0x70, 0xb010);
    space.put16(0x72, 0x0002);      // version 2, Endpoint
    space.put32(0x74, 0x10008001);  // FLR, MPS 256
    space.put32(0x7c, 0x00000011);  // 2.5GT/s x1
    space.put16(0x82, 0x0011);      // 2.5GT/s x1
    space.put16(0xb0, 0x0011);
    space.put16(0xb2, 0x8004);      // enabled, 5 vectors
    space.put32(0xb4, 0x00000003);  // table BAR3+0
    space.put32(0xb8, 0x00002003);  // PBA BAR3+0x2000
    return space;
}

TEST(Capabilities, DecodeDetails) {
    const auto space = pcie_endpoint();
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_EQ(descriptions(walk),
              (std::vector<std::string>{
                  "[40] Power Management version 3",
                  "[50] MSI: Enable+ Count=2/4 64bit+ Maskable+",
                  "[70] Express (v2) Endpoint, FLR+, Link: 2.5GT/s x1 (max 2.5GT/s x1)",
                  "[b0] MSI-X: Enable+ Count=5 Masked- Table: BAR3+0x0000 PBA: BAR3+0x2000",
              }));
    ASSERT_EQ(walk.capabilities.size(), 4u);
    const auto& pm = std::get<PowerManagementInfo>(walk.capabilities[0].detail);
    EXPECT_EQ(pm.version, 3);
    EXPECT_EQ(pm.power_state, 0);
    EXPECT_TRUE(pm.no_soft_reset);
    const auto& msi = std::get<MsiInfo>(walk.capabilities[1].detail);
    EXPECT_TRUE(msi.enabled);
    EXPECT_TRUE(msi.address_64bit);
    EXPECT_TRUE(msi.per_vector_masking);
    EXPECT_EQ(msi.vectors_capable, 4u);
    EXPECT_EQ(msi.vectors_enabled, 2u);
    const auto& pcie = std::get<PcieInfo>(walk.capabilities[2].detail);
    EXPECT_EQ(pcie.version, 2);
    EXPECT_EQ(pcie.port_type, 0);
    EXPECT_TRUE(pcie.function_level_reset);
    EXPECT_EQ(pcie.max_payload_supported, 256u);
    EXPECT_EQ(pcie.link_speed_max, 1u);
    EXPECT_EQ(pcie.link_width_max, 1u);
    EXPECT_EQ(pcie.link_speed, 1u);
    EXPECT_EQ(pcie.link_width, 1u);
    const auto& msix = std::get<MsixInfo>(walk.capabilities[3].detail);
    EXPECT_EQ(msix.table_size, 5u);
    EXPECT_EQ(msix.table_bir, 3);
    EXPECT_EQ(msix.pba_offset, 0x2000u);
}

TEST(Capabilities, DescribeVariants) {
    auto space = pcie_endpoint();
    space.put16(0x52, 0x0000);      // MSI: disabled, 1 vector, 32-bit, no masking
    space.put16(0x72, 0x0092);      // Root Complex Integrated Endpoint: no link
    space.put32(0x74, 0x00000000);  // no FLR
    space.put32(0x7c, 0x00000000);
    space.put16(0x82, 0x0000);
    space.put16(0xb2, 0x47ff);  // disabled, masked, 2048 vectors
    space.put32(0xb4, 0xfffffffd);
    space.put8(0xb1, 0xc0);
    space.put16(0xc0, 0x0003);  // VPD: no decoded detail
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_EQ(descriptions(walk),
              (std::vector<std::string>{
                  "[40] Power Management version 3",
                  "[50] MSI: Enable- Count=1/1 64bit- Maskable-",
                  "[70] Express (v2) Root Complex Integrated Endpoint, FLR-",
                  "[b0] MSI-X: Enable- Count=2048 Masked+ Table: BAR5+0xfffffff8 PBA: "
                  "BAR3+0x2000",
                  "[c0] Vital Product Data",
              }));
}

TEST(Capabilities, Names) {
    EXPECT_EQ(capability_name(cap::power_management), "Power Management");
    EXPECT_EQ(capability_name(cap::msi), "MSI");
    EXPECT_EQ(capability_name(cap::msix), "MSI-X");
    EXPECT_EQ(capability_name(cap::pci_express), "PCI Express");
    EXPECT_EQ(capability_name(cap::vendor_specific), "Vendor Specific");
    EXPECT_EQ(capability_name(0x16), "unknown capability 0x16");
    EXPECT_EQ(extended_capability_name(ext_cap::advanced_error_reporting),
              "Advanced Error Reporting");
    EXPECT_EQ(extended_capability_name(ext_cap::device_serial_number), "Device Serial Number");
    EXPECT_EQ(extended_capability_name(ext_cap::alternative_routing_id),
              "Alternative Routing-ID Interpretation");
    EXPECT_EQ(extended_capability_name(ext_cap::single_root_io_virtualization),
              "Single Root I/O Virtualization");
    EXPECT_EQ(extended_capability_name(0x00ff), "unknown extended capability 0x00ff");
    EXPECT_EQ(pcie_port_type_name(0), "Endpoint");
    EXPECT_EQ(pcie_port_type_name(4), "Root Port");
    EXPECT_EQ(pcie_port_type_name(3), "reserved port type 3");
    EXPECT_EQ(link_speed_name(1), "2.5GT/s");
    EXPECT_EQ(link_speed_name(4), "16GT/s");
    EXPECT_EQ(link_speed_name(0), "unknown speed 0");
}

// ---- Broken standard lists, made from a real one -----------------------------------------------

class BrokenList : public ::testing::Test {
  protected:
    Space space = Space::load("host-1af4-1041-virtio-net.cfg");
    const std::string msix = "MSI-X: Enable+ Count=3 Masked- Table: BAR0+0x8000 PBA: BAR0+0x48000";
};

TEST_F(BrokenList, LoopIsReportedAndWhatCameBeforeKept) {
    space.put8(0x99, 0x40);  // MSI-X points back to the first capability
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "capability list loops back to 0x40");
    EXPECT_EQ(descriptions(walk), virtio_chain_then(msix));
}

TEST_F(BrokenList, SelfLoop) {
    space.put8(0x71, 0x70);
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "capability list loops back to 0x70");
    EXPECT_EQ(walk.capabilities.size(), 4u);
}

TEST_F(BrokenList, LongestPossibleListEndsInALoop) {
    // Every dword from 0x40 to 0xfc a capability pointing to the next, the last back to 0x40:
    // the walk visits each once (48), then stops.
    for (std::size_t offset = 0x40; offset < 0x100; offset += 4) {
        space.put8(offset, 0x03);
        space.put8(offset + 1, static_cast<std::uint8_t>(offset + 4 < 0x100 ? offset + 4 : 0x40));
    }
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "capability list loops back to 0x40");
    EXPECT_EQ(walk.capabilities.size(), 48u);
}

TEST_F(BrokenList, PointerIntoTheHeader) {
    space.put8(0x51, 0x20);
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "capability at 0x50 points to 0x20, inside the header");
    EXPECT_EQ(walk.capabilities.size(), 2u);

    space.put8(cfg::capabilities_pointer, 0x3c);
    const auto first = walk_capabilities(space.view());
    EXPECT_EQ(first.error, "capabilities pointer points to 0x3c, inside the header");
    EXPECT_TRUE(first.capabilities.empty());
}

TEST_F(BrokenList, PointerPastTheEnd) {
    const auto walk = walk_capabilities(space.view(0x98));
    EXPECT_EQ(walk.error,
              "capability at 0x84 points to 0x98, past the end of the 152 bytes available");
    EXPECT_EQ(descriptions(walk), kVirtioChain);

    space.put8(cfg::capabilities_pointer, 0x98);
    EXPECT_EQ(walk_capabilities(space.view(0x80)).error,
              "capabilities pointer points to 0x98, past the end of the 128 bytes available");
    EXPECT_EQ(descriptions(walk_capabilities(space.view())),
              (std::vector<std::string>{"[98] " + msix}));
}

TEST_F(BrokenList, ReservedPointerBitsAreMasked) {
    space.put8(cfg::capabilities_pointer, 0x43);
    space.put8(0x41, 0x53);
    space.put8(0x99, 0x03);  // masked to 0: the end
    EXPECT_EQ(decode_header(space.view()).capabilities_pointer, 0x40);
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_EQ(descriptions(walk), virtio_chain_then(msix));
}

TEST_F(BrokenList, MsixTruncatedByTheEndOfTheView) {
    space.copy(0x98, 12, 0xf8);  // only 8 of its 12 bytes fit
    space.put8(0x85, 0xf8);
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "capability at 0xf8 (MSI-X) is truncated: needs 12 bytes, 8 left");
    EXPECT_EQ(descriptions(walk), kVirtioChain);
    // The same capability cut by a shorter view.
    space.put8(0x85, 0x98);
    EXPECT_EQ(walk_capabilities(space.view(0xa0)).error,
              "capability at 0x98 (MSI-X) is truncated: needs 12 bytes, 8 left");
}

TEST_F(BrokenList, TruncatedOtherCapabilities) {
    const auto synthetic = pcie_endpoint();
    // MSI with 64-bit addresses and masking is 24 bytes; PCIe is read up to Link Status (20).
    auto msi = space;
    for (std::size_t i = 0; i < 16; ++i) {
        msi.put8(0xf0 + i, synthetic.view().read8(0x50 + i));
    }
    msi.put8(0x99, 0xf0);
    EXPECT_EQ(walk_capabilities(msi.view()).error,
              "capability at 0xf0 (MSI) is truncated: needs 24 bytes, 16 left");
    auto pcie = space;
    for (std::size_t i = 0; i < 16; ++i) {
        pcie.put8(0xf0 + i, synthetic.view().read8(0x70 + i));
    }
    pcie.put8(0x99, 0xf0);
    EXPECT_EQ(walk_capabilities(pcie.view()).error,
              "capability at 0xf0 (PCI Express) is truncated: needs 20 bytes, 16 left");
    auto pm = space;
    pm.put16(0xfc, 0x0001);
    pm.put8(0x99, 0xfc);
    EXPECT_EQ(walk_capabilities(pm.view()).error,
              "capability at 0xfc (Power Management) is truncated: needs 8 bytes, 4 left");
    // One byte left: not even the next pointer.
    EXPECT_EQ(walk_capabilities(space.view(0x41)).error,
              "capability at 0x40 (Vendor Specific) is truncated: needs 3 bytes, 1 left");
}

TEST_F(BrokenList, VendorSpecificLengths) {
    space.put8(0x86, 0x80);  // runs past 0x100
    EXPECT_EQ(walk_capabilities(space.view()).error,
              "capability at 0x84 (Vendor Specific) is truncated: needs 128 bytes, 124 left");
    space.put8(0x42, 0x02);
    EXPECT_EQ(walk_capabilities(space.view()).error,
              "capability at 0x40 (Vendor Specific) has length 2, shorter than its 3-byte header");
}

TEST_F(BrokenList, StatusWithoutPointer) {
    space.put8(cfg::capabilities_pointer, 0x03);  // reserved bits only
    EXPECT_EQ(walk_capabilities(space.view()).error,
              "status says there is a capability list but the capabilities pointer is 0");
    EXPECT_EQ(decode_header(space.view()).capabilities_pointer, 0);
}

TEST_F(BrokenList, NoListWhenStatusSaysSo) {
    space.put16(cfg::status, 0);
    const auto walk = walk_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_TRUE(walk.capabilities.empty());
    EXPECT_EQ(decode_header(space.view()).capabilities_pointer, 0);
}

TEST(BrokenSpace, RemovedDeviceReadsAllOnes) {
    const Space gone(kConfigExtendedSize, 0xff);
    const auto walk = walk_capabilities(gone.view());
    EXPECT_EQ(walk.error,
              "vendor ID reads 0xffff: no device answers (absent, removed or powered off)");
    EXPECT_TRUE(walk.capabilities.empty());
    const auto extended = walk_extended_capabilities(gone.view());
    EXPECT_EQ(extended.error,
              "extended capability header at 0x100 reads 0xffffffff: nothing is readable there "
              "(device removed, or no extended config access)");
    EXPECT_TRUE(extended.capabilities.empty());
}

TEST(BrokenSpace, EmptyAndShortViews) {
    const ConfigView empty({});
    EXPECT_EQ(walk_capabilities(empty).error,
              "0 bytes of config space, shorter than the 64-byte header");
    EXPECT_EQ(walk_extended_capabilities(empty).error, "");
    const auto net = Space::load("host-1af4-1041-virtio-net.cfg");
    EXPECT_EQ(walk_capabilities(net.view(10)).error,
              "10 bytes of config space, shorter than the 64-byte header");
}

// ---- Extended capabilities ----------------------------------------------------------------------

constexpr std::uint32_t ext_header(std::uint16_t id, unsigned version, unsigned next) {
    return id | version << 16 | next << 20;
}

class ExtendedList : public ::testing::Test {
  protected:
    ExtendedList() {
        space.put32(0x100, ext_header(ext_cap::advanced_error_reporting, 2, 0x148));
        space.put32(0x148, ext_header(ext_cap::device_serial_number, 1, 0));
    }
    Space space = Space::load("host-8086-0d57-hostbridge.cfg");
};

TEST_F(ExtendedList, Walks) {
    const auto walk = walk_extended_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_EQ(descriptions(walk), (std::vector<std::string>{
                                      "[100] Advanced Error Reporting (v2)",
                                      "[148] Device Serial Number (v1)",
                                  }));
    ASSERT_EQ(walk.capabilities.size(), 2u);
    EXPECT_TRUE(walk.capabilities[0].extended);
    EXPECT_EQ(walk.capabilities[0].id, ext_cap::advanced_error_reporting);
    EXPECT_EQ(walk.capabilities[0].version, 2);
    EXPECT_EQ(walk.capabilities[1].offset, 0x148);
    // The standard list is not affected by the extended one.
    EXPECT_TRUE(walk_capabilities(space.view()).capabilities.empty());
}

TEST_F(ExtendedList, ReservedNextBitsAreMasked) {
    space.put32(0x100, ext_header(ext_cap::advanced_error_reporting, 2, 0x14b));
    const auto walk = walk_extended_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_EQ(walk.capabilities.size(), 2u);
}

TEST_F(ExtendedList, NullCapabilityWithANextPointerIsFollowed) {
    space.put32(0x100, ext_header(0, 0, 0x148));
    EXPECT_EQ(descriptions(walk_extended_capabilities(space.view())),
              (std::vector<std::string>{"[100] Null (v0)", "[148] Device Serial Number (v1)"}));
}

TEST_F(ExtendedList, Loop) {
    space.put32(0x148, ext_header(ext_cap::device_serial_number, 1, 0x100));
    const auto walk = walk_extended_capabilities(space.view());
    EXPECT_EQ(walk.error, "extended capability list loops back to 0x100");
    EXPECT_EQ(walk.capabilities.size(), 2u);
}

TEST_F(ExtendedList, LongestPossibleListEndsInALoop) {
    for (unsigned offset = 0x100; offset < 0x1000; offset += 4) {
        space.put32(offset, ext_header(0x000b, 1, offset + 4 < 0x1000 ? offset + 4 : 0x100));
    }
    const auto walk = walk_extended_capabilities(space.view());
    EXPECT_EQ(walk.error, "extended capability list loops back to 0x100");
    EXPECT_EQ(walk.capabilities.size(), 960u);
}

TEST_F(ExtendedList, PointerBelow0x100) {
    space.put32(0x100, ext_header(ext_cap::advanced_error_reporting, 2, 0x040));
    const auto walk = walk_extended_capabilities(space.view());
    EXPECT_EQ(walk.error,
              "extended capability at 0x100 points to 0x40, below 0x100 where extended "
              "capabilities start");
    EXPECT_EQ(walk.capabilities.size(), 1u);
}

TEST_F(ExtendedList, PointerPastTheEndAndTruncatedHeaders) {
    EXPECT_EQ(walk_extended_capabilities(space.view(0x140)).error,
              "extended capability at 0x100 points to 0x148, past the end of the 320 bytes "
              "available");
    EXPECT_EQ(walk_extended_capabilities(space.view(0x14a)).error,
              "extended capability at 0x148 is truncated: needs 4 bytes, 2 left");
    EXPECT_EQ(walk_extended_capabilities(space.view(0x102)).error,
              "extended capability at 0x100 is truncated: needs 4 bytes, 2 left");
    EXPECT_EQ(walk_extended_capabilities(space.view(0x100)).error, "");
}

TEST_F(ExtendedList, AllOnesInTheMiddle) {
    space.put32(0x148, 0xffffffff);
    const auto walk = walk_extended_capabilities(space.view());
    EXPECT_EQ(walk.error,
              "extended capability header at 0x148 reads 0xffffffff: nothing is readable there "
              "(device removed, or no extended config access)");
    EXPECT_EQ(walk.capabilities.size(), 1u);
}

TEST_F(ExtendedList, ZeroHeaderEndsTheList) {
    space.put32(0x100, ext_header(ext_cap::advanced_error_reporting, 2, 0x200));
    const auto walk = walk_extended_capabilities(space.view());
    EXPECT_EQ(walk.error, "");
    EXPECT_EQ(walk.capabilities.size(), 1u);
}

}  // namespace
}  // namespace ring3::pci
