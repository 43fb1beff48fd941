#include "ring3/pci/bind.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "ring3/core/error.hpp"
#include "test_support.hpp"

namespace ring3::pci {
namespace {

namespace fs = std::filesystem;

using testing::error_of;
using testing::write_file;

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// A fake /sys and /proc laid out as the kernel lays them out, and a writer that records every
// sysfs write and plays the kernel's part: unbind removes the `driver` link, drivers_probe binds
// the driver named by driver_override when `probe_succeeds` says so.
class FakeSystem : public ::testing::Test {
  protected:
    static constexpr const char* kDisk = "0000:00:02.0";  // virtio-blk with vda, vda1
    static constexpr const char* kNic = "0000:00:03.0";   // virtio-net with eth0

    void SetUp() override {
        for (const char* driver : {"virtio-pci", "vfio-pci", "uio_pci_generic", "nvme"}) {
            add_driver(driver);
        }
        write_file(sys_ / "bus/pci/drivers_probe", "");
        fs::create_directories(sys_ / "class/block");
        fs::create_directories(sys_ / "class/net");

        add_device(kDisk, "virtio-pci");
        const fs::path vda = device_dir(kDisk) / "virtio1/block/vda";
        add_class_device(vda, "block", "254:0");
        add_class_device(vda / "vda1", "block", "254:1");
        fs::create_directories(vda / "holders");
        fs::create_directories(vda / "vda1/holders");

        add_device(kNic, "virtio-pci");
        const fs::path eth0 = device_dir(kNic) / "virtio2/net/eth0";
        add_class_device(eth0, "net", "");
        write_file(eth0 / "flags", "0x1002\n");  // down

        write_file(proc_ / "self/mountinfo",
                   "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
                   "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n");
        write_file(proc_ / "swaps", "Filename\tType\tSize\tUsed\tPriority\n");
    }

    fs::path device_dir(const std::string& bdf) const { return sys_ / "devices/pci0000:00" / bdf; }

    void add_driver(const std::string& name) {
        write_file(sys_ / "bus/pci/drivers" / name / "unbind", "");
    }

    void add_device(const std::string& bdf, const std::string& driver) {
        const fs::path dir = device_dir(bdf);
        write_file(dir / "driver_override", "(null)\n");
        write_file(dir / "class", "0x010000\n");
        write_file(dir / "resource", "0x0000000000000000 0x0000000000000000 0x0000000000000000\n");
        fs::create_directories(sys_ / "bus/pci/devices");
        fs::create_symlink("../../../devices/pci0000:00/" + bdf, sys_ / "bus/pci/devices" / bdf);
        if (!driver.empty()) {
            fs::create_symlink("../../../bus/pci/drivers/" + driver, dir / "driver");
        }
    }

    void add_class_device(const fs::path& dir, const std::string& subsystem,
                          const std::string& dev) {
        fs::create_directories(dir);
        fs::create_symlink((sys_ / "class" / subsystem).string(), dir / "subsystem");
        if (!dev.empty()) {
            write_file(dir / "dev", dev + "\n");
        }
    }

    void put_in_iommu_group(const std::string& bdf, const std::string& group) {
        const fs::path members = sys_ / "kernel/iommu_groups" / group / "devices";
        fs::create_directories(members);
        fs::create_symlink("../../../../devices/pci0000:00/" + bdf, members / bdf);
        fs::create_symlink("../../../kernel/iommu_groups/" + group,
                           device_dir(bdf) / "iommu_group");
    }

    void mount(const std::string& line) {
        write_file(proc_ / "self/mountinfo", read_file(proc_ / "self/mountinfo") + line + "\n");
    }

    std::string driver_of(const std::string& bdf) const {
        std::error_code ec;
        const auto target = fs::read_symlink(device_dir(bdf) / "driver", ec);
        return ec ? std::string() : target.filename().string();
    }

    std::string override_of(const std::string& bdf) const {
        return read_file(device_dir(bdf) / "driver_override");
    }

    // What a write did, with the path relative to the fake /sys.
    using Write = std::pair<std::string, std::string>;

    BindEnvironment environment() {
        BindEnvironment env;
        env.sysfs_root = sys_.string();
        env.proc_root = proc_.string();
        env.probe_settle = std::chrono::milliseconds(0);
        env.write_attribute = [this](const std::string& path, std::string_view value) {
            const std::string relative = fs::path(path).lexically_relative(sys_).string();
            writes_.emplace_back(relative, std::string(value));
            play_kernel(fs::path(path), std::string(value));
        };
        env.load_module = [this](const std::string& name) { loaded_.push_back(name); };
        return env;
    }

    void play_kernel(const fs::path& path, const std::string& value) {
        const std::string name = path.filename().string();
        if (name == "driver_override") {
            write_file(path, value == "\n" ? "(null)\n" : value);
        } else if (name == "unbind" && unbind_works_) {
            fs::remove(sys_ / "bus/pci/devices" / value / "driver");
        } else if (name == "drivers_probe" && probe_succeeds_) {
            const fs::path dir = sys_ / "bus/pci/devices" / value;
            std::string override_value = read_file(dir / "driver_override");
            override_value.erase(override_value.find('\n'));
            if (override_value != "(null)") {
                fs::create_symlink("../../../bus/pci/drivers/" + override_value, dir / "driver");
            }
        }
    }

    testing::TempDir base_{"ring3-bind"};
    fs::path sys_ = base_.path() / "sys";
    fs::path proc_ = base_.path() / "proc";
    std::vector<Write> writes_;
    std::vector<std::string> loaded_;
    bool probe_succeeds_ = true;
    bool unbind_works_ = true;
};

std::vector<std::string> descriptions(const std::vector<DeviceUse>& uses) {
    std::vector<std::string> out;
    for (const auto& use : uses) {
        out.push_back(use.description);
    }
    return out;
}

// ---- in-use detection
// ----------------------------------------------------------------------------

TEST_F(FakeSystem, IdleDeviceHasNoUses) {
    const DriverBinder binder(environment());
    EXPECT_TRUE(binder.find_uses(Address::parse(kDisk)).empty());
    EXPECT_TRUE(binder.find_uses(Address::parse(kNic)).empty());
}

TEST_F(FakeSystem, FindsMountByDeviceNumber) {
    mount("27 1 254:0 / / rw,relatime - ext4 /dev/root rw");
    const DriverBinder binder(environment());
    const auto uses = binder.find_uses(Address::parse(kDisk));
    ASSERT_EQ(uses.size(), 1u) << ::testing::PrintToString(descriptions(uses));
    EXPECT_EQ(uses[0].kind, DeviceUse::Kind::mount);
    EXPECT_EQ(uses[0].description, "block device vda (254:0) is mounted on /");
}

TEST_F(FakeSystem, FindsPartitionMountedBySourceWithEscapedMountPoint) {
    // btrfs reports an anonymous device number; the source still names the partition.
    mount("40 27 0:45 /data /mnt/my\\040disk rw - btrfs /dev/vda1 rw");
    const DriverBinder binder(environment());
    const auto uses = binder.find_uses(Address::parse(kDisk));
    ASSERT_EQ(uses.size(), 1u);
    EXPECT_EQ(uses[0].description, "block device vda1 (254:1) is mounted on /mnt/my disk");
}

TEST_F(FakeSystem, ReadsInitsMountsToo) {
    write_file(proc_ / "1/mountinfo", "27 1 254:1 / /srv rw - ext4 /dev/vda1 rw\n");
    const DriverBinder binder(environment());
    const auto uses = binder.find_uses(Address::parse(kDisk));
    ASSERT_EQ(uses.size(), 1u);
    EXPECT_TRUE(contains(uses[0].description, "mounted on /srv"));
}

TEST_F(FakeSystem, FindsSwap) {
    write_file(proc_ / "swaps",
               "Filename\tType\tSize\tUsed\tPriority\n"
               "/dev/vda1                               partition\t1048572\t0\t-2\n"
               "/swapfile                               file\t1048572\t0\t-3\n");
    const DriverBinder binder(environment());
    const auto uses = binder.find_uses(Address::parse(kDisk));
    ASSERT_EQ(uses.size(), 1u);
    EXPECT_EQ(uses[0].kind, DeviceUse::Kind::swap);
    EXPECT_EQ(uses[0].description, "block device vda1 (254:1) is swap space");
}

TEST_F(FakeSystem, FollowsHoldersSuchAsDeviceMapper) {
    const fs::path dm = sys_ / "devices/virtual/block/dm-0";
    add_class_device(dm, "block", "253:0");
    write_file(dm / "dm/name", "vg-home\n");
    fs::create_directories(dm / "holders");
    fs::create_symlink(dm, sys_ / "class/block/dm-0");
    fs::create_symlink(dm, device_dir(kDisk) / "virtio1/block/vda/vda1/holders/dm-0");
    mount("50 27 253:0 / /home rw - ext4 /dev/mapper/vg-home rw");
    const DriverBinder binder(environment());
    const auto uses = descriptions(binder.find_uses(Address::parse(kDisk)));
    ASSERT_EQ(uses.size(), 2u) << ::testing::PrintToString(uses);
    EXPECT_EQ(uses[0], "block device vda1 (254:1) is held by block device dm-0 (vg-home, 253:0)");
    EXPECT_EQ(uses[1], "block device dm-0 (vg-home, 253:0), which holds vda1, is mounted on /home");
}

TEST_F(FakeSystem, FindsInterfaceThatIsUp) {
    const fs::path flags = device_dir(kNic) / "virtio2/net/eth0/flags";
    const DriverBinder binder(environment());
    EXPECT_TRUE(binder.find_uses(Address::parse(kNic)).empty());  // 0x1002: down
    write_file(flags, "0x1003\n");
    const auto uses = binder.find_uses(Address::parse(kNic));
    ASSERT_EQ(uses.size(), 1u);
    EXPECT_EQ(uses[0].kind, DeviceUse::Kind::interface_up);
    EXPECT_EQ(uses[0].description, "network interface eth0 is up (flags 0x1003)");
}

TEST_F(FakeSystem, CannotTellWithoutMountinfo) {
    fs::remove(proc_ / "self/mountinfo");
    const DriverBinder binder(environment());
    const auto message = error_of([&] { binder.find_uses(Address::parse(kDisk)); }, ENOENT);
    EXPECT_TRUE(contains(message, "mountinfo")) << message;
}

// ---- refusals happen before any write
// ------------------------------------------------------------

TEST_F(FakeSystem, BindRefusesDeviceInUseWithoutWriting) {
    mount("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw");
    put_in_iommu_group(kDisk, "3");
    const DriverBinder binder(environment());
    const auto message = error_of([&] { binder.bind(Address::parse(kDisk), "vfio-pci"); }, EBUSY);
    EXPECT_TRUE(contains(message, "0000:00:02.0")) << message;
    EXPECT_TRUE(contains(message, "block device vda (254:0) is mounted on /")) << message;
    EXPECT_TRUE(contains(message, "--force")) << message;
    EXPECT_TRUE(writes_.empty());
    EXPECT_TRUE(loaded_.empty());
    EXPECT_EQ(driver_of(kDisk), "virtio-pci");
}

TEST_F(FakeSystem, UnbindRefusesInterfaceUpWithoutWriting) {
    write_file(device_dir(kNic) / "virtio2/net/eth0/flags", "0x1043\n");
    const DriverBinder binder(environment());
    const auto message = error_of([&] { binder.unbind(Address::parse(kNic)); }, EBUSY);
    EXPECT_TRUE(contains(message, "unbind 0000:00:03.0")) << message;
    EXPECT_TRUE(contains(message, "network interface eth0 is up")) << message;
    EXPECT_TRUE(contains(message, "--force")) << message;
    EXPECT_TRUE(writes_.empty());
}

TEST_F(FakeSystem, VfioWithoutIommuIsRefusedBeforeAnyWrite) {
    const DriverBinder binder(environment());
    const auto message = error_of([&] { binder.bind(Address::parse(kNic), "vfio-pci"); }, ENODEV);
    EXPECT_TRUE(contains(message, "0000:00:03.0 has no IOMMU group")) << message;
    EXPECT_TRUE(contains(message, "vfio-pci needs an IOMMU (intel_iommu=on / amd_iommu=on"))
        << message;
    EXPECT_TRUE(contains(message, "use uio_pci_generic")) << message;
    EXPECT_TRUE(writes_.empty());
}

TEST_F(FakeSystem, RejectsBadDriverNamesAndMissingDevices) {
    const DriverBinder binder(environment());
    for (const char* bad : {"", "..", "../vfio-pci", "vfio pci", "a/b"}) {
        error_of([&] { binder.bind(Address::parse(kNic), bad); }, EINVAL);
    }
    const auto missing =
        error_of([&] { binder.bind(Address::parse("0000:00:09.0"), "vfio-pci"); }, ENODEV);
    EXPECT_TRUE(contains(missing, "0000:00:09.0")) << missing;
    error_of([&] { binder.unbind(Address::parse("0000:00:09.0")); }, ENODEV);
    EXPECT_TRUE(writes_.empty());
}

// ---- the bind sequence
// ---------------------------------------------------------------------------

TEST_F(FakeSystem, BindsThroughOverrideUnbindAndProbe) {
    put_in_iommu_group(kNic, "4");
    const DriverBinder binder(environment());
    const auto report = binder.bind(Address::parse(kNic), "vfio-pci");
    EXPECT_EQ(report.previous_driver, "virtio-pci");
    EXPECT_EQ(report.driver, "vfio-pci");
    EXPECT_TRUE(report.changed);
    EXPECT_TRUE(report.warnings.empty());
    const std::vector<Write> expected = {
        {"bus/pci/devices/0000:00:03.0/driver_override", "vfio-pci\n"},
        {"bus/pci/drivers/virtio-pci/unbind", "0000:00:03.0"},
        {"bus/pci/drivers_probe", "0000:00:03.0"},
    };
    EXPECT_EQ(writes_, expected);
    EXPECT_EQ(driver_of(kNic), "vfio-pci");
    EXPECT_EQ(override_of(kNic), "vfio-pci\n");  // stays: the device keeps vfio-pci
}

TEST_F(FakeSystem, ForceBindsDeviceInUse) {
    mount("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw");
    const DriverBinder binder(environment());
    const auto report = binder.bind(Address::parse(kDisk), "uio_pci_generic", true);
    EXPECT_EQ(report.driver, "uio_pci_generic");
    EXPECT_EQ(writes_.size(), 3u);
}

TEST_F(FakeSystem, BindingBackToKernelDriver) {
    put_in_iommu_group(kNic, "4");
    const DriverBinder binder(environment());
    binder.bind(Address::parse(kNic), "vfio-pci");
    writes_.clear();
    const auto report = binder.bind(Address::parse(kNic), "virtio-pci");
    EXPECT_EQ(report.previous_driver, "vfio-pci");
    EXPECT_EQ(report.driver, "virtio-pci");
    EXPECT_EQ(writes_.front().second, "virtio-pci\n");
    EXPECT_EQ(driver_of(kNic), "virtio-pci");
}

TEST_F(FakeSystem, AlreadyBoundChangesNothing) {
    const DriverBinder binder(environment());
    const auto report = binder.bind(Address::parse(kNic), "virtio-pci");
    EXPECT_FALSE(report.changed);
    EXPECT_EQ(report.driver, "virtio-pci");
    EXPECT_TRUE(writes_.empty());
}

TEST_F(FakeSystem, ProbeThatLeavesNoDriverIsReportedAndOverrideCleared) {
    probe_succeeds_ = false;
    const DriverBinder binder(environment());
    const auto message =
        error_of([&] { binder.bind(Address::parse(kNic), "uio_pci_generic"); }, ENODEV);
    EXPECT_TRUE(contains(message, "bind 0000:00:03.0 to uio_pci_generic")) << message;
    EXPECT_TRUE(contains(message, "the probe by uio_pci_generic failed")) << message;
    EXPECT_TRUE(contains(message, "dmesg")) << message;
    EXPECT_TRUE(contains(message, "It is now bound to no driver")) << message;
    EXPECT_TRUE(contains(message, "`ring3 bind 0000:00:03.0 virtio-pci` gives it back")) << message;
    ASSERT_EQ(writes_.size(), 4u);
    EXPECT_EQ(writes_.back(), Write("bus/pci/devices/0000:00:03.0/driver_override", "\n"));
    EXPECT_EQ(override_of(kNic), "(null)\n");
    EXPECT_EQ(driver_of(kNic), "");
}

TEST_F(FakeSystem, FailedVfioProbeWithNoiommuParameterNamesTheIommu) {
    probe_succeeds_ = false;
    write_file(sys_ / "module/vfio/parameters/enable_unsafe_noiommu_mode", "Y\n");
    const DriverBinder binder(environment());
    const auto message = error_of([&] { binder.bind(Address::parse(kNic), "vfio-pci"); }, ENODEV);
    EXPECT_TRUE(contains(message,
                         "vfio-pci needs an IOMMU (intel_iommu=on / amd_iommu=on); "
                         "without one use uio_pci_generic"))
        << message;
}

TEST_F(FakeSystem, UnbindThatDoesNotTakeRestoresOverride) {
    unbind_works_ = false;
    put_in_iommu_group(kNic, "4");
    const DriverBinder binder(environment());
    const auto message = error_of([&] { binder.bind(Address::parse(kNic), "vfio-pci"); }, EBUSY);
    EXPECT_TRUE(contains(message, "still bound to virtio-pci")) << message;
    EXPECT_EQ(override_of(kNic), "(null)\n");
    EXPECT_EQ(driver_of(kNic), "virtio-pci");
}

TEST_F(FakeSystem, LoadsMissingDriverFirst) {
    fs::remove_all(sys_ / "bus/pci/drivers/uio_pci_generic");
    auto env = environment();
    env.load_module = [this](const std::string& name) {
        loaded_.push_back(name);
        add_driver(name);
    };
    const DriverBinder binder(std::move(env));
    binder.bind(Address::parse(kNic), "uio_pci_generic");
    EXPECT_EQ(loaded_, std::vector<std::string>{"uio_pci_generic"});
    EXPECT_EQ(driver_of(kNic), "uio_pci_generic");
}

TEST_F(FakeSystem, MissingDriverAfterLoadingIsAnError) {
    const DriverBinder binder(environment());  // the loader registers nothing
    const auto message =
        error_of([&] { binder.bind(Address::parse(kNic), "no_such_driver"); }, ENOENT);
    EXPECT_TRUE(contains(message, "no_such_driver")) << message;
    EXPECT_EQ(loaded_, std::vector<std::string>{"no_such_driver"});
    EXPECT_TRUE(writes_.empty());
}

TEST_F(FakeSystem, NeverRunsModprobeForAFakeRoot) {
    fs::remove_all(sys_ / "bus/pci/drivers/uio_pci_generic");
    auto env = environment();
    env.load_module = nullptr;  // the default: refuses for a root other than /sys
    const DriverBinder binder(std::move(env));
    const auto message =
        error_of([&] { binder.bind(Address::parse(kNic), "uio_pci_generic"); }, ENOENT);
    EXPECT_TRUE(contains(message, "not run for a sysfs root other than /sys")) << message;
    EXPECT_TRUE(writes_.empty());
}

TEST_F(FakeSystem, WarnsAboutGroupMembersOnKernelDrivers) {
    add_device("0000:00:03.1", "snd_hda_intel");
    put_in_iommu_group(kNic, "4");
    put_in_iommu_group("0000:00:03.1", "4");
    const DriverBinder binder(environment());
    auto report = binder.bind(Address::parse(kNic), "vfio-pci");
    ASSERT_EQ(report.warnings.size(), 1u);
    EXPECT_TRUE(contains(report.warnings[0], "IOMMU group 4 of 0000:00:03.0 will not be viable"))
        << report.warnings[0];
    EXPECT_TRUE(contains(report.warnings[0], "0000:00:03.1 (snd_hda_intel)")) << report.warnings[0];

    report = binder.bind(Address::parse(kNic), "uio_pci_generic");
    ASSERT_EQ(report.warnings.size(), 1u);
    EXPECT_TRUE(contains(report.warnings[0], "shares IOMMU group 4")) << report.warnings[0];
    EXPECT_TRUE(contains(report.warnings[0], "0000:00:03.1 (snd_hda_intel)")) << report.warnings[0];
}

// ---- unbind
// --------------------------------------------------------------------------------------

TEST_F(FakeSystem, UnbindDetachesAndClearsOverride) {
    put_in_iommu_group(kNic, "4");
    const DriverBinder binder(environment());
    binder.bind(Address::parse(kNic), "vfio-pci");
    writes_.clear();
    const auto report = binder.unbind(Address::parse(kNic));
    EXPECT_EQ(report.previous_driver, "vfio-pci");
    EXPECT_EQ(report.driver, "");
    EXPECT_EQ(report.cleared_override, "vfio-pci");
    const std::vector<Write> expected = {
        {"bus/pci/drivers/vfio-pci/unbind", "0000:00:03.0"},
        {"bus/pci/devices/0000:00:03.0/driver_override", "\n"},
    };
    EXPECT_EQ(writes_, expected);
    EXPECT_EQ(override_of(kNic), "(null)\n");
    EXPECT_EQ(driver_of(kNic), "");

    writes_.clear();
    const auto again = binder.unbind(Address::parse(kNic));
    EXPECT_FALSE(again.changed);
    EXPECT_TRUE(writes_.empty());
}

}  // namespace
}  // namespace ring3::pci
