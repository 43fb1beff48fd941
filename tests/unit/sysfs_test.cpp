// pci::Sysfs on fake sysfs trees built in a temporary directory, laid out as the kernel lays out
// the real one: device directories under devices/pciDDDD:BB/, reached through relative symlinks
// from bus/pci/devices/, with relative `driver` and `iommu_group` links.
#include "ring3/pci/sysfs.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ring3/core/error.hpp"
#include "test_support.hpp"

namespace ring3::pci {
namespace {

namespace fs = std::filesystem;

using testing::error_of;

constexpr const char* kUnusedLine = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";

std::string resource_lines(const std::vector<std::string>& used, std::size_t total) {
    std::string text;
    for (std::size_t i = 0; i < total; ++i) {
        text += i < used.size() && !used[i].empty() ? used[i] + "\n" : kUnusedLine;
    }
    return text;
}

// A fake /sys. Files default to a plain endpoint; `files` overrides them, std::nullopt removes one.
class FakeSysfs {
  public:
    using Files = std::map<std::string, std::optional<std::string>>;

    FakeSysfs() {
        fs::create_directories(root_ / "bus/pci/devices");
        fs::create_directories(root_ / "bus/pci/drivers");
        fs::create_directories(root_ / "kernel/iommu_groups");
    }
    const fs::path& root() const { return root_; }

    fs::path add_device(const std::string& bdf, const Files& overrides = {}) {
        const std::string host = "pci" + bdf.substr(0, bdf.find(':', 5));
        const fs::path dir = root_ / "devices" / host / bdf;
        fs::create_directories(dir);
        Files files = {
            {"vendor", "0x1af4\n"},
            {"device", "0x1041\n"},
            {"subsystem_vendor", "0x1af4\n"},
            {"subsystem_device", "0x1100\n"},
            {"class", "0x020000\n"},
            {"revision", "0x01\n"},
            {"numa_node", "-1\n"},
            {"resource", resource_lines({}, 7)},
            {"config", std::string(64, '\0')},
        };
        for (const auto& [name, text] : overrides) {
            files[name] = text;
        }
        for (const auto& [name, text] : files) {
            if (text) {
                write(dir / name, *text);
            }
        }
        fs::create_directory_symlink("../../../devices/" + host + "/" + bdf,
                                     root_ / "bus/pci/devices" / bdf);
        return dir;
    }

    void bind(const std::string& bdf, const std::string& driver) {
        fs::create_directories(root_ / "bus/pci/drivers" / driver);
        fs::create_directory_symlink("../../../bus/pci/drivers/" + driver,
                                     fs::canonical(root_ / "bus/pci/devices" / bdf) / "driver");
    }

    void add_group(unsigned number, const std::vector<std::string>& bdfs,
                   const std::string& type = "DMA") {
        const fs::path group = root_ / "kernel/iommu_groups" / std::to_string(number);
        fs::create_directories(group / "devices");
        if (!type.empty()) {
            write(group / "type", type + "\n");
        }
        for (const auto& bdf : bdfs) {
            const fs::path device = fs::canonical(root_ / "bus/pci/devices" / bdf);
            const std::string relative = fs::relative(device, root_).string();
            fs::create_directory_symlink("../../../../" + relative, group / "devices" / bdf);
            fs::create_directory_symlink("../../../kernel/iommu_groups/" + std::to_string(number),
                                         device / "iommu_group");
        }
    }

    static void write(const fs::path& path, const std::string& text) {
        std::ofstream(path, std::ios::binary) << text;
    }

  private:
    testing::TempDir dir_{"ring3-sysfs"};
    fs::path root_ = dir_.path();
};

TEST(Sysfs, ListsDevicesSortedByAddress) {
    FakeSysfs fake;
    // Created out of order: directory order is not address order.
    for (const char* bdf :
         {"0000:00:1f.0", "0001:00:00.0", "0000:00:02.7", "0000:01:00.0", "0000:00:02.0"}) {
        fake.add_device(bdf);
    }
    fs::create_directory(fake.root() / "bus/pci/devices/not-a-device");
    const Sysfs sysfs(fake.root());
    std::vector<std::string> names;
    for (const auto& address : sysfs.addresses()) {
        names.push_back(address.to_string());
    }
    EXPECT_EQ(names, (std::vector<std::string>{"0000:00:02.0", "0000:00:02.7", "0000:00:1f.0",
                                               "0000:01:00.0", "0001:00:00.0"}));
    const auto devices = sysfs.devices();
    ASSERT_EQ(devices.size(), 5u);
    EXPECT_EQ(devices[4].address.to_string(), "0001:00:00.0");
}

TEST(Sysfs, ReadsEveryAttributeOfADevice) {
    FakeSysfs fake;
    const auto dir = fake.add_device(
        "0000:00:02.0",
        {{"vendor", "0x1b36\n"},
         {"device", "0x0010\n"},
         {"subsystem_vendor", "0x1af4\n"},
         {"subsystem_device", "0x1100\n"},
         {"class", "0x010802\n"},
         {"revision", "0x02\n"},
         {"numa_node", "1\n"},
         {"reset_method", "flr bus\n"},
         {"power_state", "D0\n"},
         {"resource",
          resource_lines({"0x00000000fe000000 0x00000000fe003fff 0x0000000000140204", "", "", "",
                          "0x000000000000c000 0x000000000000c01f 0x0000000000040101", "",
                          "0x00000000feb80000 0x00000000febbffff 0x0000000000046200"},
                         13)}});
    fake.bind("0000:00:02.0", "nvme");
    fake.add_group(3, {"0000:00:02.0"}, "DMA-FQ");

    const Sysfs sysfs(fake.root());
    const auto info = sysfs.device(Address::parse("0000:00:02.0"));
    EXPECT_EQ(info.address.to_string(), "0000:00:02.0");
    EXPECT_EQ(info.path, fake.root() / "bus/pci/devices/0000:00:02.0");
    EXPECT_EQ(info.vendor_id, 0x1b36);
    EXPECT_EQ(info.device_id, 0x0010);
    EXPECT_EQ(info.subsystem_vendor_id, 0x1af4);
    EXPECT_EQ(info.subsystem_device_id, 0x1100);
    EXPECT_EQ(info.class_code, 0x010802u);
    EXPECT_EQ(info.revision, 0x02);
    EXPECT_EQ(info.driver, "nvme");
    EXPECT_EQ(info.iommu_group, 3u);
    EXPECT_EQ(info.numa_node, 1u);
    EXPECT_EQ(info.reset_methods.state, ResetMethods::State::listed);
    EXPECT_EQ(info.reset_methods.methods, (std::vector<std::string>{"flr", "bus"}));
    EXPECT_EQ(info.power_state, "D0");

    ASSERT_EQ(info.resources.size(), 13u);
    const Resource* bar0 = info.bar(0);
    ASSERT_NE(bar0, nullptr);
    EXPECT_TRUE(bar0->is_memory());
    EXPECT_TRUE(bar0->is_64bit());
    EXPECT_FALSE(bar0->prefetchable());
    EXPECT_EQ(bar0->start, 0xfe000000u);
    EXPECT_EQ(bar0->size(), 16u * 1024);
    const Resource* bar4 = info.bar(4);
    ASSERT_NE(bar4, nullptr);
    EXPECT_TRUE(bar4->is_io());
    EXPECT_EQ(bar4->size(), 32u);
    EXPECT_FALSE(info.bar(1)->used());
    EXPECT_EQ(info.bar(6), nullptr);
    EXPECT_EQ(info.resources[6].role, Resource::Role::rom);
    EXPECT_TRUE(info.resources[6].prefetchable());
    EXPECT_EQ(info.resources[6].size(), 256u * 1024);
    EXPECT_EQ(info.resources[12].role, Resource::Role::vf_bar);
    EXPECT_EQ(info.resources[12].role_index, 5u);

    EXPECT_EQ(sysfs.driver(info.address), "nvme");
    EXPECT_EQ(sysfs.iommu_group_number(info.address), 3u);
    EXPECT_EQ(sysfs.device_path(info.address), info.path);
    (void)dir;
}

TEST(Sysfs, OptionalFilesMayBeMissing) {
    FakeSysfs fake;
    fake.add_device("0000:00:03.0", {{"numa_node", std::nullopt}});
    fake.add_device("0000:00:04.0", {{"reset_method", ""}, {"power_state", "D3hot\n"}});
    const Sysfs sysfs(fake.root());

    const auto bare = sysfs.device(Address::parse("0000:00:03.0"));
    EXPECT_EQ(bare.driver, "");
    EXPECT_EQ(bare.iommu_group, std::nullopt);
    EXPECT_EQ(bare.numa_node, std::nullopt);
    EXPECT_EQ(bare.reset_methods.state, ResetMethods::State::absent);
    EXPECT_TRUE(bare.reset_methods.methods.empty());
    EXPECT_EQ(bare.power_state, std::nullopt);

    const auto empty = sysfs.device(Address::parse("0000:00:04.0"));
    EXPECT_EQ(empty.numa_node, std::nullopt);  // "-1"
    EXPECT_EQ(empty.reset_methods.state, ResetMethods::State::listed);
    EXPECT_TRUE(empty.reset_methods.methods.empty());
    EXPECT_EQ(empty.power_state, "D3hot");
}

TEST(Sysfs, UnreadableResetMethodIsReportedNotThrown) {
    FakeSysfs fake;
    const auto dir = fake.add_device("0000:00:05.0");
    fs::create_directory(dir / "reset_method");  // read(2) of a directory fails with EISDIR
    const Sysfs sysfs(fake.root());
    const auto info = sysfs.device(Address::parse("0000:00:05.0"));
    EXPECT_EQ(info.reset_methods.state, ResetMethods::State::unreadable);
    EXPECT_EQ(info.reset_methods.problem,
              "read " + (fake.root() / "bus/pci/devices/0000:00:05.0/reset_method").string() +
                  ": Is a directory");
}

TEST(Sysfs, AbsentDeviceNamesTheDirectory) {
    FakeSysfs fake;
    fake.add_device("0000:00:02.0");
    const Sysfs sysfs(fake.root());
    const auto absent = Address::parse("0000:00:09.0");
    EXPECT_FALSE(sysfs.exists(absent));
    EXPECT_TRUE(sysfs.exists(Address::parse("0000:00:02.0")));
    const std::string expected =
        "no PCI device 0000:00:09.0: not in " + (fake.root() / "bus/pci/devices").string();
    EXPECT_EQ(error_of([&] { sysfs.device(absent); }, ENODEV), expected);
    EXPECT_EQ(error_of([&] { sysfs.read_config(absent); }), expected);
    EXPECT_EQ(error_of([&] { sysfs.driver(absent); }), expected);
    EXPECT_EQ(Sysfs().devices_dir(), "/sys/bus/pci/devices");
}

TEST(Sysfs, MalformedFilesAreNamed) {
    FakeSysfs fake;
    fake.add_device("0000:00:02.0", {{"resource", std::string(kUnusedLine) + "0x1000 zz\n"}});
    fake.add_device("0000:00:03.0", {{"vendor", "banana\n"}});
    fake.add_device("0000:00:04.0", {{"class", "0x1010802\n"}});
    fake.add_device("0000:00:05.0", {{"device", std::nullopt}});
    fake.add_device("0000:00:06.0", {{"numa_node", "zero\n"}});
    const Sysfs sysfs(fake.root());
    const auto path = [&](const char* bdf, const char* file) {
        return (fake.root() / "bus/pci/devices" / bdf / file).string();
    };
    EXPECT_EQ(error_of([&] { sysfs.device(Address::parse("0000:00:02.0")); }),
              "parse " + path("0000:00:02.0", "resource") +
                  ": line 2: expected three hex numbers 0x<start> 0x<end> 0x<flags>, got "
                  "'0x1000 zz'");
    EXPECT_EQ(error_of([&] { sysfs.device(Address::parse("0000:00:03.0")); }),
              "parse " + path("0000:00:03.0", "vendor") +
                  ": expected a 16-bit hex number (0x and up to 4 digits), got 'banana'");
    EXPECT_EQ(error_of([&] { sysfs.device(Address::parse("0000:00:04.0")); }),
              "parse " + path("0000:00:04.0", "class") +
                  ": expected a 24-bit hex number (0x and up to 6 digits), got '0x1010802'");
    EXPECT_EQ(error_of([&] { sysfs.device(Address::parse("0000:00:05.0")); }),
              "read " + path("0000:00:05.0", "device") + ": No such file or directory");
    EXPECT_EQ(error_of([&] { sysfs.device(Address::parse("0000:00:06.0")); }),
              "parse " + path("0000:00:06.0", "numa_node") +
                  ": expected a node number or -1, got 'zero'");
    // ls must not half-list: the whole enumeration fails with the first bad file.
    EXPECT_NE(error_of([&] { sysfs.devices(); }), "no error");
}

TEST(Resources, LineCountTellsTheLayout) {
    const auto roles = [](std::size_t lines) {
        std::string out;
        for (const auto& r : parse_resources(resource_lines({}, lines), "resource")) {
            switch (r.role) {
                case Resource::Role::bar:
                    out += "B" + std::to_string(r.role_index);
                    break;
                case Resource::Role::rom:
                    out += "R";
                    break;
                case Resource::Role::vf_bar:
                    out += "V" + std::to_string(r.role_index);
                    break;
                case Resource::Role::bridge_window:
                    out += "W" + std::to_string(r.role_index);
                    break;
                case Resource::Role::other:
                    out += "?" + std::to_string(r.role_index);
                    break;
            }
        }
        return out;
    };
    EXPECT_EQ(roles(7), "B0B1B2B3B4B5R");
    EXPECT_EQ(roles(11), "B0B1B2B3B4B5RW0W1W2W3");
    EXPECT_EQ(roles(13), "B0B1B2B3B4B5RV0V1V2V3V4V5");
    EXPECT_EQ(roles(17), "B0B1B2B3B4B5RV0V1V2V3V4V5W0W1W2W3");
    EXPECT_EQ(roles(8), "B0B1B2B3B4B5R?7");
}

TEST(Resources, SizesAndFlags) {
    const auto resources = parse_resources(
        "0x0000004000080000 0x00000040000fffff 0x0000000000140204\n"  // host virtio-blk BAR0
        "0x0000000000000000 0x0000000000000fff 0x0000000020040200\n"  // unassigned: start 0
        "0x0000000000001000 0x0000000000000fff 0x0000000000000200\n"  // end below start
        "0x00000000e0000000 0x00000000efffffff 0x000000000014220c\n"  // 64-bit prefetchable
        "\n",
        "resource");
    ASSERT_EQ(resources.size(), 4u);
    EXPECT_EQ(resources[0].size(), 512u * 1024);
    EXPECT_TRUE(resources[0].is_memory());
    EXPECT_TRUE(resources[0].is_64bit());
    EXPECT_FALSE(resources[0].is_io());
    EXPECT_TRUE(resources[0].assigned());
    EXPECT_EQ(resources[1].size(), 4096u);
    EXPECT_TRUE(resources[1].used());
    EXPECT_FALSE(resources[1].assigned());  // IORESOURCE_UNSET
    EXPECT_EQ(resources[2].size(), 0u);
    EXPECT_TRUE(resources[3].prefetchable());
    EXPECT_EQ(resources[3].size(), 256u << 20);
    Resource disabled = resources[3];
    disabled.flags |= Resource::flag_disabled;
    EXPECT_FALSE(disabled.assigned());

    EXPECT_EQ(error_of([] { parse_resources("0x0 0x0 0x0 0x0\n", "f"); }),
              "parse f: line 1: expected three hex numbers 0x<start> 0x<end> 0x<flags>, got "
              "'0x0 0x0 0x0 0x0'");
    EXPECT_EQ(error_of([] { parse_resources("0 0 0\n", "f"); }),
              "parse f: line 1: expected three hex numbers 0x<start> 0x<end> 0x<flags>, got "
              "'0 0 0'");
    EXPECT_EQ(error_of([] { parse_resources("0x0 0x0\n", "f"); }),
              "parse f: line 1: expected three hex numbers 0x<start> 0x<end> 0x<flags>, got "
              "'0x0 0x0'");
}

TEST(Sysfs, IommuGroupMembersAndViability) {
    FakeSysfs fake;
    fake.add_device("0000:00:1c.0", {{"class", "0x060400\n"}});  // a root port
    fake.add_device("0000:01:00.1", {{"class", "0x020000\n"}});
    fake.add_device("0000:01:00.0", {{"class", "0x010802\n"}});
    fake.bind("0000:00:1c.0", "pcieport");
    fake.bind("0000:01:00.0", "vfio-pci");
    fake.add_group(7, {"0000:01:00.1", "0000:00:1c.0", "0000:01:00.0"});
    // A non-PCI member, as on ARM platforms.
    const fs::path group = fake.root() / "kernel/iommu_groups/7";
    fs::create_directories(fake.root() / "devices/platform/soc-dma");
    fs::create_directory_symlink("../../../../devices/platform/soc-dma", group / "devices/soc-dma");

    const Sysfs sysfs(fake.root());
    auto g = sysfs.iommu_group(7);
    EXPECT_EQ(g.number, 7u);
    EXPECT_EQ(g.type, "DMA");
    ASSERT_EQ(g.members.size(), 4u);
    EXPECT_EQ(g.members[0].name, "0000:00:1c.0");
    EXPECT_EQ(g.members[0].driver, "pcieport");
    EXPECT_EQ(g.members[0].class_code, 0x060400u);
    EXPECT_EQ(g.members[1].name, "0000:01:00.0");
    EXPECT_EQ(g.members[1].driver, "vfio-pci");
    EXPECT_EQ(g.members[2].name, "0000:01:00.1");
    EXPECT_EQ(g.members[2].driver, "");
    EXPECT_EQ(g.members[3].name, "soc-dma");
    EXPECT_EQ(g.members[3].address, std::nullopt);
    EXPECT_EQ(g.members[3].class_code, std::nullopt);
    EXPECT_TRUE(g.viable_for_vfio());
    EXPECT_TRUE(g.members_on_kernel_drivers().empty());

    fake.bind("0000:01:00.1", "e1000e");
    g = sysfs.iommu_group(7);
    EXPECT_FALSE(g.viable_for_vfio());
    const auto blocking = g.members_on_kernel_drivers();
    ASSERT_EQ(blocking.size(), 1u);
    EXPECT_EQ(blocking[0].name, "0000:01:00.1");
    EXPECT_EQ(blocking[0].driver, "e1000e");

    EXPECT_EQ(error_of([&] { sysfs.iommu_group(8); }),
              "read IOMMU group " + (fake.root() / "kernel/iommu_groups/8/devices").string() +
                  ": No such file or directory");
}

TEST(Sysfs, GroupWithoutTypeFile) {
    FakeSysfs fake;
    fake.add_device("0000:00:02.0");
    fake.add_group(0, {"0000:00:02.0"}, "");
    const Sysfs sysfs(fake.root());
    EXPECT_EQ(sysfs.iommu_group(0).type, "");
    EXPECT_EQ(sysfs.device(Address::parse("0000:00:02.0")).iommu_group, 0u);
}

TEST(DriverAllowsVfio, FollowsTheKernelsDriverManagedDmaDrivers) {
    EXPECT_TRUE(driver_allows_vfio(""));
    EXPECT_TRUE(driver_allows_vfio("vfio-pci"));
    EXPECT_TRUE(driver_allows_vfio("mlx5_vfio_pci"));
    EXPECT_TRUE(driver_allows_vfio("pci-stub"));
    EXPECT_TRUE(driver_allows_vfio("pcieport"));
    EXPECT_FALSE(driver_allows_vfio("nvme"));
    EXPECT_FALSE(driver_allows_vfio("uio_pci_generic"));
    EXPECT_FALSE(driver_allows_vfio("virtio-pci"));
}

TEST(Sysfs, ReadsConfigBytesAndSize) {
    FakeSysfs fake;
    std::string config(256, '\0');
    config[0] = '\xf4';
    config[1] = '\x1a';
    config[255] = '\x7e';
    fake.add_device("0000:00:02.0", {{"config", config}});
    const Sysfs sysfs(fake.root());
    const auto address = Address::parse("0000:00:02.0");
    const auto bytes = sysfs.read_config(address);
    ASSERT_EQ(bytes.size(), 256u);
    EXPECT_EQ(bytes[0], 0xf4);
    EXPECT_EQ(bytes[1], 0x1a);
    EXPECT_EQ(bytes[255], 0x7e);
    EXPECT_EQ(sysfs.config_size(address), 256u);
}

TEST(Sysfs, MissingDevicesDirectoryIsAnError) {
    const Sysfs sysfs("/nonexistent/ring3-sysfs");
    EXPECT_EQ(error_of([&] { sysfs.addresses(); }),
              "list PCI devices in /nonexistent/ring3-sysfs/bus/pci/devices: No such file or "
              "directory");
}

}  // namespace
}  // namespace ring3::pci
