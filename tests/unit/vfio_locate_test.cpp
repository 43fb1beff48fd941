// vfio::locate_group over fake sysfs and /dev trees: the no-IOMMU group path (which Debian's
// kernel lacks, so no guest can show it) and the errors that tell a user how to get a device to
// VFIO.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ring3/core/error.hpp"
#include "ring3/device/vfio.hpp"
#include "test_support.hpp"

namespace ring3::vfio {
namespace {

namespace fs = std::filesystem;

using testing::error_of;

class FakeTree {
  public:
    FakeTree() {
        fs::create_directories(sys() / "bus/pci/drivers/vfio-pci");
        fs::create_directories(sys() / "bus/pci/drivers/nvme");
        fs::create_directories(sys() / "kernel/iommu_groups");
        fs::create_directories(dev() / "vfio");
    }
    fs::path sys() const { return dir_.path() / "sys"; }
    fs::path dev() const { return dir_.path() / "dev"; }

    // A device directory with a driver link and, when `group` is given, an IOMMU group.
    void add_device(const std::string& bdf, const std::string& driver, int group) {
        const fs::path dir = sys() / "devices/pci0000:00" / bdf;
        fs::create_directories(dir);
        fs::create_directories(sys() / "bus/pci/devices");
        fs::create_directory_symlink("../../../devices/pci0000:00/" + bdf,
                                     sys() / "bus/pci/devices" / bdf);
        if (!driver.empty()) {
            fs::create_directory_symlink("../../../bus/pci/drivers/" + driver, dir / "driver");
        }
        if (group >= 0) {
            const fs::path group_dir = sys() / "kernel/iommu_groups" / std::to_string(group);
            fs::create_directories(group_dir / "devices");
            fs::create_directory_symlink("../../../../kernel/iommu_groups/" + std::to_string(group),
                                         dir / "iommu_group");
        }
    }
    void add_node(const std::string& name) { std::ofstream(dev() / "vfio" / name) << ""; }

  private:
    testing::TempDir dir_{"ring3-vfio"};
};

const pci::Address kNvme = pci::Address::parse("0000:01:00.0");

TEST(VfioLocateGroup, FindsTheGroupNode) {
    FakeTree tree;
    tree.add_device("0000:01:00.0", "vfio-pci", 7);
    tree.add_node("7");
    const auto location = locate_group(pci::Sysfs(tree.sys()), tree.dev(), kNvme);
    EXPECT_EQ(location.number, 7u);
    EXPECT_EQ(location.dev_path, tree.dev() / "vfio/7");
    EXPECT_FALSE(location.noiommu);
}

TEST(VfioLocateGroup, FindsANoIommuGroup) {
    FakeTree tree;
    tree.add_device("0000:01:00.0", "vfio-pci", 3);
    tree.add_node("noiommu-3");
    const auto location = locate_group(pci::Sysfs(tree.sys()), tree.dev(), kNvme);
    EXPECT_EQ(location.number, 3u);
    EXPECT_EQ(location.dev_path, tree.dev() / "vfio/noiommu-3");
    EXPECT_TRUE(location.noiommu);
}

TEST(VfioLocateGroup, DeviceOnAKernelDriverSaysHowToBind) {
    FakeTree tree;
    tree.add_device("0000:01:00.0", "nvme", 7);
    EXPECT_EQ(error_of([&] { locate_group(pci::Sysfs(tree.sys()), tree.dev(), kNvme); }),
              "open VFIO device 0000:01:00.0: the device is bound to 'nvme', not vfio-pci; hand "
              "it over with `ring3 bind 0000:01:00.0 vfio-pci`");
}

TEST(VfioLocateGroup, NoIommuExplainsBothWaysOut) {
    FakeTree tree;
    tree.add_device("0000:01:00.0", "nvme", -1);  // no IOMMU: no groups at all
    const std::string message =
        error_of([&] { locate_group(pci::Sysfs(tree.sys()), tree.dev(), kNvme); });
    EXPECT_NE(message.find("this system has no IOMMU"), std::string::npos) << message;
    EXPECT_NE(message.find("intel_iommu=on or amd_iommu=on"), std::string::npos) << message;
    EXPECT_NE(message.find("`ring3 bind 0000:01:00.0 uio_pci_generic`, then open "
                           "uio:0000:01:00.0"),
              std::string::npos)
        << message;
}

TEST(VfioLocateGroup, MissingGroupNodeIsNamed) {
    FakeTree tree;
    tree.add_device("0000:01:00.0", "vfio-pci", 9);
    const std::string message =
        error_of([&] { locate_group(pci::Sysfs(tree.sys()), tree.dev(), kNvme); });
    EXPECT_NE(message.find("IOMMU group 9 has no node " + (tree.dev() / "vfio/9").string()),
              std::string::npos)
        << message;
}

TEST(VfioLocateGroup, AbsentDevice) {
    FakeTree tree;
    EXPECT_EQ(error_of([&] { locate_group(pci::Sysfs(tree.sys()), tree.dev(), kNvme); }),
              "no PCI device 0000:01:00.0: not in " + (tree.sys() / "bus/pci/devices").string());
}

// A device handed over open (`ring3 hold`, an I/O server): the spec names the fds; anything that
// is not two open fds is refused before any is used.
TEST(VfioHandedOver, MalformedSpecsAreNamed) {
    EXPECT_EQ(error_of([] { open_device("vfio-fd:0000:01:00.0,3"); }),
              "open device 'vfio-fd:0000:01:00.0,3': the container and device fds are missing; "
              "expected vfio-fd:BDF,CONTAINER_FD,DEVICE_FD");
    EXPECT_EQ(error_of([] { open_device("vfio-fd:0000:01:00.0,3,x4"); }),
              "open device 'vfio-fd:0000:01:00.0,3,x4': the device fd 'x4' is not a number; "
              "expected vfio-fd:BDF,CONTAINER_FD,DEVICE_FD");
    EXPECT_NE(error_of([] { open_device("vfio-fd:zz,3,4"); }).find("parse PCI address 'zz'"),
              std::string::npos);
    // fd 1000 is not open in the test process.
    EXPECT_EQ(error_of([] { open_device("vfio-fd:0000:01:00.0,1000,1001"); }, EBADF),
              "use the handed-over container fd 1000 of vfio-fd:0000:01:00.0,1000,1001: Bad file "
              "descriptor");
}

}  // namespace
}  // namespace ring3::vfio
