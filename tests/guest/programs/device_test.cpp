// Device-layer tests that run inside a QEMU guest against QEMU's emulated devices and the real
// vfio-pci / uio_pci_generic drivers. The guest case scripts (tests/guest/cases/device-*.sh) put
// the devices in the state each suite needs and name them in the environment:
//   RING3_NVME, RING3_E1000E   BDFs of the devices (found by vendor:device)
//   RING3_NVME_SERIAL          the serial= given to QEMU's nvme
//   RING3_BACKEND              "vfio" or "uio": the spec prefix for the Backend suite
//   RING3_GROUP_VFIO, RING3_GROUP_OTHER  two functions of one IOMMU group (NonViable suite)
// A missing variable fails the test: nothing here skips.
#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "raw_nvme.hpp"
#include "ring3/core/error.hpp"
#include "ring3/device/device.hpp"
#include "ring3/device/uio.hpp"
#include "ring3/device/vfio.hpp"
#include "ring3/dma/pool.hpp"
#include "test_support.hpp"

namespace ring3 {
namespace {

using testing::error_of;

std::string env(const char* name) {
    return testing::required_env(name);
}

// e1000e registers (82574 datasheet ch. 10): CTRL and STATUS in BAR0; the I/O BAR's IOADDR
// (offset 0) selects a register that IODATA (offset 4) then reads or writes.
constexpr std::uint64_t kCtrl = 0x0, kStatus = 0x8;

void check_e1000e_registers(Device& device) {
    auto bar0 = device.map_region(0);
    const auto mmio = [&](std::uint64_t offset) {
        return *reinterpret_cast<volatile std::uint32_t*>(bar0.mapping.data() + offset);
    };
    const std::uint32_t status = mmio(kStatus);
    const std::uint32_t ctrl = mmio(kCtrl);
    EXPECT_NE(status, 0xffffffffu);
    unsigned io_bar = 6;
    for (unsigned i = 0; i < 6; ++i) {
        const RegionInfo info = device.region_info(i);
        if (info.size != 0 && info.io_space) {
            io_bar = i;
        }
    }
    ASSERT_LT(io_bar, 6u) << "no I/O BAR found";
    device.region_write32(io_bar, 0, static_cast<std::uint32_t>(kStatus));
    EXPECT_EQ(device.region_read32(io_bar, 4), status);
    device.region_write32(io_bar, 0, static_cast<std::uint32_t>(kCtrl));
    EXPECT_EQ(device.region_read32(io_bar, 4), ctrl);
    // And the memory BAR through the file interface agrees with the mapping.
    EXPECT_EQ(device.region_read32(0, kStatus), status);
    std::printf("%s: STATUS %#010x CTRL %#010x through BAR0 and I/O BAR%u\n", device.name().c_str(),
                status, ctrl, io_bar);
}

// Identify Controller written by the controller into the first and the last page of each chunk
// of an arena: the device itself checks our IOVA translation at the chunk edges.
void identify_into_chunk_edges(Device& nvme, dma::IovaSpace& space, dma::HugePages huge) {
    dma::ArenaOptions queue_options;
    queue_options.huge_pages = huge;
    queue_options.max_size = 8 << 20;
    queue_options.name = "queues";
    auto queue_arena = dma::DmaArena::create(queue_options);
    dma::ArenaOptions target_options = queue_options;
    target_options.name = "targets";
    auto targets = dma::DmaArena::create(target_options);
    const auto queue_space = queue_arena->attach(space);
    const auto target_space = targets->attach(space);
    dma::DmaPool pool(*queue_arena, queue_space);
    testing::RawNvme controller(nvme, pool);
    const std::string serial = env("RING3_NVME_SERIAL");
    for (int i = 0; i < 3; ++i) {
        const dma::ChunkView chunk = targets->grow();
        for (std::byte* page : {chunk.cpu, chunk.cpu + chunk.size - 4096}) {
            std::memset(page, 0, 4096);
            const std::uint64_t iova = targets->iova(page, target_space);
            ASSERT_EQ(controller.identify_controller(iova), 0u);
            EXPECT_EQ(testing::RawNvme::serial(page), serial)
                << "chunk " << i << " page at IOVA " << std::hex << iova;
            std::printf("%s: identify into chunk %d page at IOVA %#llx: serial '%s'\n",
                        nvme.name().c_str(), i, static_cast<unsigned long long>(iova),
                        testing::RawNvme::serial(page).c_str());
        }
    }
    targets->detach(space);
    // queue_arena detaches when it goes; the controller is disabled first (declared later).
}

// ---- Devices on their kernel drivers ----

TEST(KernelBound, VfioOpenSaysHowToBind) {
    const std::string nvme = env("RING3_NVME");
    EXPECT_EQ(error_of([&] { open_device("vfio:" + nvme); }),
              "open VFIO device " + nvme +
                  ": the device is bound to 'nvme', not vfio-pci; hand "
                  "it over with `ring3 bind " +
                  nvme + " vfio-pci`");
    EXPECT_EQ(error_of([&] { open_device(nvme); }),
              "open device " + nvme +
                  ": the device is bound to kernel driver 'nvme'; give it to "
                  "a user-space driver first: `ring3 bind " +
                  nvme +
                  " vfio-pci` (with an IOMMU) or "
                  "`ring3 bind " +
                  nvme + " uio_pci_generic` (without one)");
}

TEST(KernelBound, NonexistentDeviceAndMalformedSpec) {
    EXPECT_EQ(error_of([] { open_device("vfio:0000:00:1e.7"); }),
              "no PCI device 0000:00:1e.7: not in /sys/bus/pci/devices");
    EXPECT_EQ(error_of([] { open_device("uio:00:1e.7"); }),
              "no PCI device 0000:00:1e.7: not in /sys/bus/pci/devices");
    EXPECT_EQ(error_of([] { open_device("vfio:00:02"); }),
              "parse PCI address '00:02': missing bus, device or function; expected DDDD:BB:DD.F "
              "or BB:DD.F in hex, e.g. 0000:00:02.0");
}

// ---- VFIO with the emulated IOMMU ----

TEST(Vfio, E1000eRegistersThroughMemoryAndIoBars) {
    auto device = open_device("vfio:" + env("RING3_E1000E"));
    check_e1000e_registers(*device);
}

TEST(Vfio, NvmeIdentifyIntoEveryChunkEdge) {
    auto nvme = open_device("vfio:" + env("RING3_NVME"));
    identify_into_chunk_edges(*nvme, nvme->iova_space(), dma::HugePages::automatic);
}

TEST(Vfio, TwoDevicesShareOneContainer) {
    auto container = vfio::Container::create();
    OpenOptions options;
    options.vfio_container = container;
    auto nvme = open_device("vfio:" + env("RING3_NVME"), options);
    auto nic = open_device("vfio:" + env("RING3_E1000E"), options);
    EXPECT_EQ(&nvme->iova_space(), &nic->iova_space());
    EXPECT_EQ(&nvme->iova_space(), container.get());
    // The windows the IOMMU reports leave out the MSI range 0xfee00000-0xfeefffff.
    for (const auto& range : container->iova_ranges()) {
        EXPECT_FALSE(range.start <= 0xfee00000 && range.end >= 0xfeefffff)
            << std::hex << range.start << "-" << range.end;
    }
    EXPECT_GT(container->iova_ranges().size(), 1u);
    identify_into_chunk_edges(*nvme, *container, dma::HugePages::automatic);
    check_e1000e_registers(*nic);
}

// What an I/O server does before passing fds to a driver process: open the container and the
// group, select the IOMMU, get the device fd. The Device is then built from those fds alone.
TEST(Vfio, DeviceFromAlreadyOpenFds) {
    const std::string bdf = env("RING3_NVME");
    const std::string group_link =
        std::filesystem::read_symlink("/sys/bus/pci/devices/" + bdf + "/iommu_group")
            .filename()
            .string();
    UniqueFd container_fd = UniqueFd::open("/dev/vfio/vfio", O_RDWR);
    UniqueFd group_fd = UniqueFd::open("/dev/vfio/" + group_link, O_RDWR);
    int raw_container = container_fd.get();
    ASSERT_EQ(::ioctl(group_fd.get(), VFIO_GROUP_SET_CONTAINER, &raw_container), 0);
    ASSERT_EQ(::ioctl(container_fd.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0);
    UniqueFd device_fd(::ioctl(group_fd.get(), VFIO_GROUP_GET_DEVICE_FD, bdf.c_str()));
    ASSERT_TRUE(device_fd);

    auto container =
        vfio::Container::adopt(std::move(container_fd),
                               static_cast<unsigned>(std::stoul(group_link)), std::move(group_fd));
    auto nvme = vfio::adopt(pci::Address::parse(bdf), container, std::move(device_fd));
    EXPECT_EQ(nvme->vendor_id(), 0x1b36);
    EXPECT_FALSE(container->iova_ranges().empty());
    identify_into_chunk_edges(*nvme, *container, dma::HugePages::automatic);
}

TEST(Vfio, ResetAndBarIndexErrors) {
    auto nvme = open_device("vfio:" + env("RING3_NVME"));
    EXPECT_TRUE(nvme->can_reset());  // behind a root port QEMU's NVMe has FLR
    nvme->reset();
    EXPECT_EQ(nvme->vendor_id(), 0x1b36);
    const std::string name = "vfio:" + env("RING3_NVME");
    EXPECT_EQ(error_of([&] { nvme->region_info(12); }),
              "region 12 " + name +
                  ": no such region: the device has 9 (0-5 BARs, 6 ROM, 7 "
                  "config)");
    EXPECT_EQ(error_of([&] { nvme->map_region(5); }),
              "map " + name + " region 5: the region does not exist (unused BAR)");
    EXPECT_EQ(error_of([&] { nvme->enable_irqs(IrqKind::msix, 5000); }),
              "enable 5000 MSI-X vectors " + name + ": the device offers 65");
}

// The kernel asks for the device back (unbind) through the request IRQ; the owner lets go and the
// unbind, which blocks until then, completes.
TEST(Vfio, UnbindWhileOpenIsHandedBackThroughTheRequestIrq) {
    const std::string bdf = env("RING3_E1000E");
    auto device = open_device("vfio:" + bdf);
    ASSERT_EQ(device->irq_count(IrqKind::req), 1u);
    auto request = device->enable_irqs(IrqKind::req, 1);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // exec, so the child does not hold the device fd it inherited: a forked copy of the
        // owner would keep the unbind waiting on itself.
        const std::string command =
            "echo " + bdf + " > /sys/bus/pci/devices/" + bdf + "/driver/unbind";
        ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    const auto signals = request.front().wait(std::chrono::seconds(20));
    EXPECT_GE(signals, 1u) << "no request interrupt within 20 s";
    request.clear();
    device.reset();  // release: the unbind may now finish
    int status = 0;
    pid_t done = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while ((done = ::waitpid(child, &status, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
        ::usleep(10000);
    }
    if (done == 0) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        FAIL() << "unbind did not complete within 20 s of the release";
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_FALSE(std::filesystem::exists("/sys/bus/pci/devices/" + bdf + "/driver"));
    std::printf("%s: request IRQ received, device released, unbind completed\n", bdf.c_str());
}

TEST(NonViable, GroupWithAMemberOnAnotherDriverIsRefused) {
    const std::string vfio_member = env("RING3_GROUP_VFIO");
    const std::string other = env("RING3_GROUP_OTHER");
    const std::string message = error_of([&] { open_device("vfio:" + vfio_member); });
    EXPECT_NE(message.find("is not viable: every device in it must be bound to vfio-pci or to "
                           "no driver, but " +
                           other + " (driver uio_pci_generic) is not"),
              std::string::npos)
        << message;
}

// ---- UIO without an IOMMU ----

TEST(Uio, E1000eRegistersThroughMemoryAndIoBars) {
    auto device = open_device("uio:" + env("RING3_E1000E"));
    check_e1000e_registers(*device);
}

TEST(Uio, NvmeIdentifyIntoEveryChunkEdge) {
    auto nvme = open_device("uio:" + env("RING3_NVME"));
    identify_into_chunk_edges(*nvme, nvme->iova_space(), dma::HugePages::required);
}

TEST(Uio, DmaWithoutHugepagesIsRefused) {
    auto nvme = open_device("uio:" + env("RING3_NVME"));
    dma::ArenaOptions options;
    options.huge_pages = dma::HugePages::never;
    options.max_size = 4 << 20;
    auto arena = dma::DmaArena::create(options);
    arena->attach(nvme->iova_space());
    EXPECT_EQ(error_of([&] { arena->grow(); }),
              "map DMA at physical addresses for uio:" + env("RING3_NVME") +
                  ": UIO DMA needs hugepages (an arena of 2 MiB pages): small pages are not "
                  "physically contiguous and may move; reserve some with `echo N > "
                  "/proc/sys/vm/nr_hugepages`");
}

TEST(Uio, WithoutRootIsRefused) {
    const std::string bdf = env("RING3_NVME");
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
            _exit(2);
        }
        const std::string message = error_of([&] { open_device("uio:" + bdf); });
        const bool ok = message.find("UIO needs root") != std::string::npos;
        std::printf("as uid 65534: %s\n", message.c_str());
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(Uio, VfioWithoutIommuExplainsTheWayOut) {
    const std::string nvme = env("RING3_NVME");
    const std::string message = error_of([&] { open_device("vfio:" + nvme); });
    EXPECT_NE(message.find("this system has no IOMMU"), std::string::npos) << message;
    EXPECT_NE(message.find("intel_iommu=on"), std::string::npos) << message;
    EXPECT_NE(message.find("ring3 bind " + nvme + " uio_pci_generic"), std::string::npos)
        << message;
}

}  // namespace
}  // namespace ring3
