// pci::PciIds against lspci 3.9's own text. Every expected string below was produced by
// `lspci -i <kSample written to a file> -F <dump>` (with -D, -Dnn, -Dv, -Dvnn, -Dvmm) on config
// dumps with the same ids, so the fallbacks for unknown ids are lspci's, not guesses.
#include "ring3/pci/ids.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <optional>
#include <string>

#include "ring3/core/error.hpp"
#include "test_support.hpp"

namespace ring3::pci {
namespace {

constexpr const char* kSample =
    "# sample\n"
    "\n"
    "1af4  Red Hat, Inc.\n"
    "\t1000  Virtio network device\n"
    "\t\t01de fffb  Propolis Virtio network device\n"
    "\t1041  Virtio 1.0 network device\n"
    "1b36  Red Hat, Inc.\n"
    "\t0010  QEMU NVM Express Controller\n"
    "8086  Intel Corporation\n"
    "\t10d3  82574L Gigabit Network Connection\n"
    "\t\t8086 0000  Gigabit CT Desktop Adapter\n"
    "# comment\n"
    "\n"
    "# List of known device classes, subclasses and programming interfaces\n"
    "C 00  Unclassified device\n"
    "\t00  Non-VGA unclassified device\n"
    "C 01  Mass storage controller\n"
    "\t06  SATA controller\n"
    "\t\t01  AHCI 1.0\n"
    "\t08  Non-Volatile memory controller\n"
    "\t\t02  NVM Express\n"
    "C 02  Network controller\n"
    "\t00  Ethernet controller\n"
    "C 0c  Serial bus controller\n"
    "\t03  USB controller\n"
    "\t\t00  UHCI\n"
    "C ff  Unassigned class\n";

PciIds sample() {
    return PciIds::parse(kSample, "sample");
}

constexpr IdStyle kNames = IdStyle::names;
constexpr IdStyle kNumbers = IdStyle::names_and_numbers;

TEST(PciIds, RawLookups) {
    const auto ids = sample();
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(ids.vendor_name(0x1af4), "Red Hat, Inc.");
    EXPECT_EQ(ids.vendor_name(0x1234), std::nullopt);
    EXPECT_EQ(ids.device_name(0x1b36, 0x0010), "QEMU NVM Express Controller");
    EXPECT_EQ(ids.device_name(0x8086, 0x0d57), std::nullopt);
    EXPECT_EQ(ids.subsystem_name(0x1af4, 0x1000, 0x01de, 0xfffb), "Propolis Virtio network device");
    EXPECT_EQ(ids.subsystem_name(0x1af4, 0x1041, 0x01de, 0xfffb), std::nullopt);
    EXPECT_EQ(ids.class_name(0x01), "Mass storage controller");
    EXPECT_EQ(ids.subclass_name(0x01, 0x08), "Non-Volatile memory controller");
    EXPECT_EQ(ids.prog_if_name(0x01, 0x08, 0x02), "NVM Express");
    EXPECT_EQ(ids.prog_if_name(0x01, 0x08, 0x03), std::nullopt);
    EXPECT_EQ(ids.class_name(0x06), std::nullopt);
}

// lspci -D / lspci -Dnn, the part before ':'.
TEST(PciIds, ClassTextLikeLspci) {
    const auto ids = sample();
    EXPECT_EQ(ids.class_text(0x010802, kNames), "Non-Volatile memory controller");
    EXPECT_EQ(ids.class_text(0x010802, kNumbers), "Non-Volatile memory controller [0108]");
    // Known class, unknown subclass: the class name with the numbers, in both styles.
    EXPECT_EQ(ids.class_text(0x0277ff, kNames), "Network controller [0277]");
    EXPECT_EQ(ids.class_text(0x0277ff, kNumbers), "Network controller [0277]");
    EXPECT_EQ(ids.class_text(0xffff00, kNames), "Unassigned class [ffff]");
    EXPECT_EQ(ids.class_text(0x00ff00, kNames), "Unclassified device [00ff]");
    // Unknown class.
    EXPECT_EQ(ids.class_text(0xab0000, kNames), "Class ab00");
    EXPECT_EQ(ids.class_text(0xab0000, kNumbers), "Class [ab00]");
    EXPECT_EQ(ids.class_text(0x060000, kNames), "Class 0600");
    EXPECT_EQ(ids.class_text(0x060000, kNumbers), "Class [0600]");
    EXPECT_EQ(ids.class_text(0x000000, kNames), "Non-VGA unclassified device");
}

// lspci -D / lspci -Dnn, the part after ':' (before "(rev xx)").
TEST(PciIds, DeviceTextLikeLspci) {
    const auto ids = sample();
    EXPECT_EQ(ids.device_text(0x1b36, 0x0010, kNames), "Red Hat, Inc. QEMU NVM Express Controller");
    EXPECT_EQ(ids.device_text(0x1b36, 0x0010, kNumbers),
              "Red Hat, Inc. QEMU NVM Express Controller [1b36:0010]");
    // Known vendor, unknown device.
    EXPECT_EQ(ids.device_text(0x8086, 0x0d57, kNames), "Intel Corporation Device 0d57");
    EXPECT_EQ(ids.device_text(0x8086, 0x0d57, kNumbers), "Intel Corporation Device [8086:0d57]");
    // Unknown vendor.
    EXPECT_EQ(ids.device_text(0x1234, 0x11e8, kNames), "Device 1234:11e8");
    EXPECT_EQ(ids.device_text(0x1234, 0x11e8, kNumbers), "Device [1234:11e8]");
    EXPECT_EQ(ids.device_text(0x0000, 0x0000, kNames), "Device 0000:0000");
}

// lspci -v's "Subsystem:" line.
TEST(PciIds, SubsystemTextLikeLspci) {
    const auto ids = sample();
    // Known subsystem vendor, no entry: "Device ssdd".
    EXPECT_EQ(ids.subsystem_text(0x1b36, 0x0010, 0x1af4, 0x1100, kNames),
              "Red Hat, Inc. Device 1100");
    EXPECT_EQ(ids.subsystem_text(0x1b36, 0x0010, 0x1af4, 0x1100, kNumbers),
              "Red Hat, Inc. Device [1af4:1100]");
    // An entry under the device.
    EXPECT_EQ(ids.subsystem_text(0x8086, 0x10d3, 0x8086, 0x0000, kNames),
              "Intel Corporation Gigabit CT Desktop Adapter");
    EXPECT_EQ(ids.subsystem_text(0x8086, 0x10d3, 0x8086, 0x0000, kNumbers),
              "Intel Corporation Gigabit CT Desktop Adapter [8086:0000]");
    // Subsystem ids equal to the device's: the device's name, or "Device dddd".
    EXPECT_EQ(ids.subsystem_text(0x1af4, 0x1041, 0x1af4, 0x1041, kNames),
              "Red Hat, Inc. Virtio 1.0 network device");
    EXPECT_EQ(ids.subsystem_text(0x1af4, 0x1041, 0x1af4, 0x1041, kNumbers),
              "Red Hat, Inc. Virtio 1.0 network device [1af4:1041]");
    EXPECT_EQ(ids.subsystem_text(0x8086, 0x0d57, 0x8086, 0x0d57, kNames),
              "Intel Corporation Device 0d57");
    // Unknown subsystem vendor: numbers only, even when the entry under the device has a name.
    EXPECT_EQ(ids.subsystem_text(0x1af4, 0x1041, 0xabcd, 0x0001, kNames), "Device abcd:0001");
    EXPECT_EQ(ids.subsystem_text(0x1af4, 0x1041, 0xabcd, 0x0001, kNumbers), "Device [abcd:0001]");
    EXPECT_EQ(ids.subsystem_text(0x1af4, 0x1000, 0x01de, 0xfffb, kNames), "Device 01de:fffb");
    EXPECT_EQ(ids.subsystem_text(0x1234, 0x11e8, 0x1234, 0x11e8, kNames), "Device 1234:11e8");
    EXPECT_EQ(ids.subsystem_text(0x1af4, 0x1000, 0x0001, 0x0000, kNames), "Device 0001:0000");
    // lspci prints no Subsystem line for subsystem vendor 0000 or ffff.
    EXPECT_FALSE(PciIds::has_subsystem(0x0000));
    EXPECT_FALSE(PciIds::has_subsystem(0xffff));
    EXPECT_TRUE(PciIds::has_subsystem(0x0001));
}

// lspci -v's title-line suffix.
TEST(PciIds, ProgIfTextLikeLspci) {
    const auto ids = sample();
    EXPECT_EQ(ids.prog_if_text(0x010802), "(prog-if 02 [NVM Express])");
    EXPECT_EQ(ids.prog_if_text(0x0c0300), "(prog-if 00 [UHCI])");  // named zero: shown
    EXPECT_EQ(ids.prog_if_text(0x010601), "(prog-if 01 [AHCI 1.0])");
    EXPECT_EQ(ids.prog_if_text(0x0c0301), "(prog-if 01)");
    EXPECT_EQ(ids.prog_if_text(0x010810), "(prog-if 10)");
    EXPECT_EQ(ids.prog_if_text(0x0277ff), "(prog-if ff)");
    EXPECT_EQ(ids.prog_if_text(0x010800), "");  // unnamed zero: nothing
    EXPECT_EQ(ids.prog_if_text(0x060000), "");
}

// lspci -vmm / -vmmnn fields.
TEST(PciIds, SeparateFieldsLikeLspciVmm) {
    const auto ids = sample();
    EXPECT_EQ(ids.vendor_field(0x1b36, kNames), "Red Hat, Inc.");
    EXPECT_EQ(ids.vendor_field(0x1b36, kNumbers), "Red Hat, Inc. [1b36]");
    EXPECT_EQ(ids.vendor_field(0x1234, kNames), "Vendor 1234");
    EXPECT_EQ(ids.vendor_field(0x1234, kNumbers), "Vendor [1234]");
    EXPECT_EQ(ids.device_field(0x1b36, 0x0010, kNames), "QEMU NVM Express Controller");
    EXPECT_EQ(ids.device_field(0x1b36, 0x0010, kNumbers), "QEMU NVM Express Controller [0010]");
    EXPECT_EQ(ids.device_field(0x8086, 0x0d57, kNames), "Device 0d57");
    EXPECT_EQ(ids.device_field(0x1234, 0x11e8, kNames), "Device 11e8");
    EXPECT_EQ(ids.device_field(0x1234, 0x11e8, kNumbers), "Device [11e8]");
    EXPECT_EQ(ids.subsystem_vendor_field(0x1af4, kNames), "Red Hat, Inc.");
    EXPECT_EQ(ids.subsystem_vendor_field(0xabcd, kNames), "Unknown vendor abcd");
    EXPECT_EQ(ids.subsystem_vendor_field(0xabcd, kNumbers), "Unknown vendor [abcd]");
    EXPECT_EQ(ids.subsystem_device_field(0x1af4, 0x1000, 0x01de, 0xfffb, kNames),
              "Propolis Virtio network device");
    EXPECT_EQ(ids.subsystem_device_field(0x1af4, 0x1041, 0x1af4, 0x1041, kNames),
              "Virtio 1.0 network device");
    EXPECT_EQ(ids.subsystem_device_field(0x1b36, 0x0010, 0x1af4, 0x1100, kNames), "Device 1100");
    EXPECT_EQ(ids.subsystem_device_field(0x1b36, 0x0010, 0x1af4, 0x1100, kNumbers),
              "Device [1100]");
}

// What lspci -i /nonexistent prints: "Class 0600: Device 8086:0d57".
TEST(PciIds, EmptyDatabaseFallsBackToNumbers) {
    const PciIds ids;
    EXPECT_TRUE(ids.empty());
    EXPECT_EQ(ids.class_text(0x060000, kNames), "Class 0600");
    EXPECT_EQ(ids.device_text(0x8086, 0x0d57, kNames), "Device 8086:0d57");
    EXPECT_EQ(ids.subsystem_text(0x1af4, 0x1042, 0x1af4, 0x1042, kNames), "Device 1af4:1042");
    EXPECT_EQ(ids.prog_if_text(0x010802), "(prog-if 02)");
}

std::string parse_error(const std::string& text) {
    return testing::error_of([&] { PciIds::parse(text, "x.ids"); });
}

TEST(PciIds, MalformedLinesNameFileAndLine) {
    EXPECT_EQ(parse_error("1af4  Red Hat\n\t10  short\n"),
              "parse x.ids: line 2: expected '<TAB>dddd  device name': '\t10  short'");
    EXPECT_EQ(parse_error("\n1af4Red Hat\n"),
              "parse x.ids: line 2: expected 'vvvv  vendor name' or 'C cc  class name': "
              "'1af4Red Hat'");
    EXPECT_EQ(parse_error("\t1000  orphan\n"),
              "parse x.ids: line 1: indented line outside a vendor or class: '\t1000  orphan'");
    EXPECT_EQ(parse_error("1af4  Red Hat\n\t1000  Virtio\n\t\t01de  no device id\n"),
              "parse x.ids: line 3: expected '<TAB><TAB>ssvv ssdd  subsystem name': "
              "'\t\t01de  no device id'");
    EXPECT_EQ(parse_error("C 01  Mass\n\t08  NVM\n\t\t\t02  deep\n"),
              "parse x.ids: line 3: more than two tabs of indentation: '\t\t\t02  deep'");
    EXPECT_EQ(parse_error("C 1  Mass\n"),
              "parse x.ids: line 1: expected 'C cc  class name': 'C 1  Mass'");
    EXPECT_EQ(parse_error("1af4  \n"),
              "parse x.ids: line 1: expected 'vvvv  vendor name' or 'C cc  class name': '1af4'");
}

TEST(PciIds, SkipsUnknownSectionsAndCarriageReturns) {
    const auto ids = PciIds::parse(
        "1af4  Red Hat, Inc.\r\n\t1041  Virtio 1.0 network device\r\n"
        "X 01  Some future section\n\t02  its entry\n\t\t03  its sub-entry\n"
        "C 02  Network controller\n\t00  Ethernet controller\n",
        "x.ids");
    EXPECT_EQ(ids.device_text(0x1af4, 0x1041, kNames), "Red Hat, Inc. Virtio 1.0 network device");
    EXPECT_EQ(ids.class_text(0x020000, kNames), "Ethernet controller");
}

// A pci.ids file in a temporary directory.
class TempFile {
  public:
    explicit TempFile(const std::string& text) { testing::write_file(path_, text); }
    const std::string& path() const { return path_; }

  private:
    testing::TempDir dir_{"ring3-ids"};
    std::string path_ = (dir_.path() / "pci.ids").string();
};

class ScopedEnv {
  public:
    ScopedEnv(const char* name, const std::string& value) : name_(name) {
        if (const char* old = ::getenv(name)) {
            old_ = old;
        }
        ::setenv(name, value.c_str(), 1);
    }
    ~ScopedEnv() {
        if (old_) {
            ::setenv(name_, old_->c_str(), 1);
        } else {
            ::unsetenv(name_);
        }
    }

  private:
    const char* name_;
    std::optional<std::string> old_;
};

TEST(PciIds, LoadsTheFileNamedByTheEnvironment) {
    const TempFile file(kSample);
    const auto direct = PciIds::load_file(file.path());
    EXPECT_EQ(direct.source(), file.path());
    EXPECT_EQ(direct.device_text(0x1b36, 0x0010, kNames),
              "Red Hat, Inc. QEMU NVM Express Controller");

    const ScopedEnv env("RING3_PCI_IDS", file.path());
    const auto ids = PciIds::load_default();
    EXPECT_EQ(ids.problem(), "");
    EXPECT_EQ(ids.source(), file.path());
    EXPECT_EQ(ids.vendor_name(0x8086), "Intel Corporation");
}

TEST(PciIds, MissingOrBrokenDatabaseIsAProblemNotAnError) {
    {
        const ScopedEnv env("RING3_PCI_IDS", "/nonexistent/pci.ids");
        const auto ids = PciIds::load_default();
        EXPECT_TRUE(ids.empty());
        EXPECT_EQ(ids.problem(), "open /nonexistent/pci.ids: No such file or directory");
        EXPECT_EQ(ids.device_text(0x1b36, 0x0010, kNames), "Device 1b36:0010");
    }
    const TempFile broken("1af4  Red Hat\n\t10  short\n");
    const ScopedEnv env("RING3_PCI_IDS", broken.path());
    const auto ids = PciIds::load_default();
    EXPECT_TRUE(ids.empty());
    EXPECT_EQ(ids.problem(), "parse " + broken.path() +
                                 ": line 2: expected '<TAB>dddd  device name': '\t10  short'");
}

}  // namespace
}  // namespace ring3::pci
