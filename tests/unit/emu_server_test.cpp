// The vfio-user server and the emulated NVMe controller, driven in-process through a raw
// vfio_user::Channel: what a client sees on the wire, malformed messages, DMA into client
// memory and an admin command executed through the mapped doorbell page.
#include <gtest/gtest.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/emu/nvme.hpp"
#include "ring3/emu/server.hpp"
#include "ring3/nvme/spec.hpp"

namespace ring3::emu {
namespace {

using vfio_user::Channel;
using vfio_user::Command;
using namespace std::chrono_literals;

template <class T>
std::span<const std::byte> bytes_of(const T& value) {
    return {reinterpret_cast<const std::byte*>(&value), sizeof value};
}

std::string socket_path() {
    static std::atomic<unsigned> counter{0};
    return "/tmp/ring3-emu-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++) +
           ".sock";
}

// A memfd mapped here, standing in for a driver's DMA arena.
struct ClientMemory {
    explicit ClientMemory(std::size_t bytes) : size(bytes) {
        fd.reset(memfd_create("emu-test-dma", MFD_CLOEXEC));
        EXPECT_EQ(ftruncate(fd.get(), static_cast<off_t>(size)), 0);
        data = static_cast<std::byte*>(
            mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0));
    }
    ~ClientMemory() { munmap(data, size); }
    std::size_t size;
    UniqueFd fd;
    std::byte* data = nullptr;
};

class EmuServer : public ::testing::Test {
  protected:
    void SetUp() override {
        NvmeOptions options;
        options.size = 1 << 20;
        options.queues = 2;
        nvme_ = std::make_unique<NvmeController>(function_, options);
        server_ = std::make_unique<Server>(path_, function_);
        thread_ = std::thread([this] { server_->run(); });
    }
    void TearDown() override {
        server_->stop();
        thread_.join();
    }

    Channel connect() {
        Channel channel = Channel::connect(path_);
        channel.call(Command::version, vfio_user::encode_version(vfio_user::Limits{}));
        return channel;
    }
    // A raw command; returns the reply (error or not).
    static vfio_user::Message raw(Channel& channel, Command command,
                                  std::span<const std::byte> payload,
                                  std::span<const int> fds = {}) {
        vfio_user::Header header;
        header.msg_id = 77;
        header.command = static_cast<std::uint16_t>(command);
        channel.send(header, payload, fds);
        auto reply = channel.receive();
        EXPECT_TRUE(reply.has_value());
        return reply ? std::move(*reply) : vfio_user::Message{};
    }
    static std::uint64_t read_region(Channel& channel, unsigned region, std::uint64_t offset,
                                     unsigned count) {
        vfio_user::RegionAccess access{offset, region, count};
        const auto reply = channel.call(Command::region_read, vfio_user::encode(access));
        const auto transfer = vfio_user::decode_region_access(reply.payload, true, 1 << 20);
        std::uint64_t value = 0;
        std::memcpy(&value, transfer.data.data(), std::min<std::size_t>(count, 8));
        return value;
    }
    static void write_region(Channel& channel, unsigned region, std::uint64_t offset,
                             unsigned count, std::uint64_t value) {
        vfio_user::RegionAccess access{offset, region, count};
        channel.call(Command::region_write,
                     vfio_user::encode(access, std::span(bytes_of(value).data(), count)));
    }
    static int error_of(const vfio_user::Message& reply) {
        return reply.is_error() ? static_cast<int>(reply.header.error) : 0;
    }

    std::string path_ = socket_path();
    PciFunction function_{"emu-test-nvme"};
    std::unique_ptr<NvmeController> nvme_;
    std::unique_ptr<Server> server_;
    std::thread thread_;
};

TEST_F(EmuServer, VersionAndDeviceInfo) {
    Channel channel = Channel::connect(path_);
    const auto reply =
        channel.call(Command::version, vfio_user::encode_version(vfio_user::Limits{}));
    const vfio_user::Version version = vfio_user::decode_version(reply.payload);
    EXPECT_EQ(version.major, vfio_user::kMajor);
    EXPECT_EQ(version.limits.max_msg_fds, vfio_user::Limits{}.max_msg_fds);

    vfio_user::DeviceInfo request{sizeof(vfio_user::DeviceInfo), 0, 0, 0};
    const auto info_reply = channel.call(Command::device_get_info, vfio_user::encode(request));
    const auto info = vfio_user::decode_fixed<vfio_user::DeviceInfo>(info_reply.payload, "info");
    EXPECT_EQ(info.flags, std::uint32_t{VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET});
    EXPECT_EQ(info.num_regions, 9u);
    EXPECT_EQ(info.num_irqs, 5u);

    vfio_user::IrqInfo irq{sizeof(vfio_user::IrqInfo), 0, kMsixIrq, 0};
    const auto irq_reply = channel.call(Command::device_get_irq_info, vfio_user::encode(irq));
    const auto msix = vfio_user::decode_fixed<vfio_user::IrqInfo>(irq_reply.payload, "irq");
    EXPECT_EQ(msix.count, 3u);  // two I/O queue pairs and the admin queue
    EXPECT_NE(msix.flags & VFIO_IRQ_INFO_EVENTFD, 0u);
}

TEST_F(EmuServer, RegionInfoOffersTheDoorbellPageAsASparseArea) {
    Channel channel = connect();
    vfio_user::RegionInfoPayload request{};
    request.argsz = 256;
    request.index = 0;
    auto reply = channel.call(Command::device_get_region_info, vfio_user::encode(request));
    const auto info = vfio_user::decode_region_info(reply.payload);
    EXPECT_EQ(info.info.size, NvmeController::kBarSize);
    EXPECT_NE(info.info.flags & VFIO_REGION_INFO_FLAG_MMAP, 0u);
    ASSERT_EQ(info.sparse_areas.size(), 1u);
    EXPECT_EQ(info.sparse_areas[0].offset, 0x1000u);
    EXPECT_EQ(info.sparse_areas[0].size, 0x3000u);
    ASSERT_EQ(reply.fds.size(), 1u);
    void* page = mmap(nullptr, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, reply.fds[0].get(),
                      static_cast<off_t>(info.info.offset + 0x1000));
    ASSERT_NE(page, MAP_FAILED);
    munmap(page, 0x1000);

    request.index = kConfigRegion;
    reply = channel.call(Command::device_get_region_info, vfio_user::encode(request));
    EXPECT_EQ(vfio_user::decode_region_info(reply.payload).info.size, 4096u);
    EXPECT_TRUE(reply.fds.empty());
}

TEST_F(EmuServer, ConfigSpaceReadsAndBarSizing) {
    Channel channel = connect();
    EXPECT_EQ(read_region(channel, kConfigRegion, 0, 4), 0x00101b36u);
    EXPECT_EQ(read_region(channel, kConfigRegion, 0x0a, 2), 0x0108u);  // subclass, base class
    // A 64-byte read (what a client does to decode the header).
    vfio_user::RegionAccess access{0, kConfigRegion, 64};
    const auto reply = channel.call(Command::region_read, vfio_user::encode(access));
    EXPECT_EQ(reply.payload.size(), sizeof access + 64);
    // PCI 3.0 §6.2.5.1 sizing: all ones in, ~(size - 1) and the type bits out.
    write_region(channel, kConfigRegion, 0x10, 4, 0xffffffff);
    EXPECT_EQ(read_region(channel, kConfigRegion, 0x10, 4), 0xffffc004u);
    // The capability list reaches MSI-X.
    const auto first = read_region(channel, kConfigRegion, 0x34, 1);
    EXPECT_EQ(read_region(channel, kConfigRegion, first, 1), 0x11u);
    // Registers: CAP.MQES and VS through a trapped BAR0 read.
    EXPECT_EQ(read_region(channel, 0, 0, 8) & 0xffff, 1023u);
    EXPECT_EQ(read_region(channel, 0, 8, 4), 0x00010400u);
}

TEST_F(EmuServer, MalformedMessagesGetErrorsAndTheServerSurvives) {
    Channel channel = connect();
    // A truncated payload.
    const std::byte eight[8] = {};
    EXPECT_NE(error_of(raw(channel, Command::device_get_info, eight)), 0);
    // Bad region indexes.
    vfio_user::RegionInfoPayload info{};
    info.argsz = 256;
    info.index = 9;
    EXPECT_EQ(error_of(raw(channel, Command::device_get_region_info, vfio_user::encode(info))),
              EINVAL);
    vfio_user::RegionAccess access{0, 12, 4};
    EXPECT_EQ(error_of(raw(channel, Command::region_read, vfio_user::encode(access))), EINVAL);
    // An oversized count, and an access past the region's end.
    access = {0, kConfigRegion, 2u << 20};
    EXPECT_NE(error_of(raw(channel, Command::region_read, vfio_user::encode(access))), 0);
    access = {4090, kConfigRegion, 8};
    EXPECT_EQ(error_of(raw(channel, Command::region_read, vfio_user::encode(access))), EINVAL);
    // Unaligned register access, unknown command, fds where none belong.
    access = {1, 0, 4};
    EXPECT_EQ(error_of(raw(channel, Command::region_read, vfio_user::encode(access))), EINVAL);
    EXPECT_EQ(error_of(raw(channel, static_cast<Command>(99), {})), ENOSYS);
    const int fd = eventfd(0, EFD_CLOEXEC);
    const int one_fd[1] = {fd};
    EXPECT_EQ(error_of(raw(channel, Command::device_reset, {}, one_fd)), EINVAL);
    // SET_IRQS: two vectors, one fd; a vector beyond the table; an fd that is no eventfd.
    vfio_user::IrqSet set{sizeof(vfio_user::IrqSet),
                          VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, kMsixIrq, 0, 2};
    EXPECT_EQ(error_of(raw(channel, Command::device_set_irqs, vfio_user::encode(set), one_fd)),
              EINVAL);
    set.start = 3;
    set.count = 1;
    EXPECT_EQ(error_of(raw(channel, Command::device_set_irqs, vfio_user::encode(set), one_fd)),
              EINVAL);
    // DMA_MAP: unaligned, past the end of the fd, overlapping.
    ClientMemory memory(1 << 16);
    const int memfd[1] = {memory.fd.get()};
    vfio_user::DmaMap map{sizeof(vfio_user::DmaMap), vfio_user::kDmaRead | vfio_user::kDmaWrite, 0,
                          0x10001, 0x1000};
    EXPECT_EQ(error_of(raw(channel, Command::dma_map, vfio_user::encode(map), memfd)), EINVAL);
    map.addr = 0x10000;
    map.size = 1 << 20;
    EXPECT_EQ(error_of(raw(channel, Command::dma_map, vfio_user::encode(map), memfd)), EINVAL);
    map.size = 0x2000;
    EXPECT_EQ(error_of(raw(channel, Command::dma_map, vfio_user::encode(map), memfd)), 0);
    map.addr = 0x11000;
    EXPECT_EQ(error_of(raw(channel, Command::dma_map, vfio_user::encode(map), memfd)), EEXIST);
    // Still serving.
    EXPECT_EQ(read_region(channel, kConfigRegion, 0, 2), 0x1b36u);

    // Too many fds for one message: the connection is closed, the server goes on.
    channel.set_limits(vfio_user::Limits{16, 1 << 20, 1024});
    std::vector<int> many(9, fd);
    vfio_user::Header header;
    header.command = static_cast<std::uint16_t>(Command::device_reset);
    channel.send(header, {}, many);
    std::optional<vfio_user::Message> closed;
    try {
        closed = channel.receive();
    } catch (const Error&) {
    }
    EXPECT_FALSE(closed.has_value());
    ::close(fd);
    Channel again = connect();
    EXPECT_EQ(read_region(again, kConfigRegion, 2, 2), 0x0010u);
}

// The whole fast path: DMA_MAP of the client's memory, the admin queue set up through trapped
// register writes, an Identify submitted by writing the mapped doorbell page; the model's poller
// writes the identify data and the completion into the memfd and signals the eventfd.
TEST_F(EmuServer, IdentifyThroughTheDoorbellPageWritesClientMemory) {
    Channel channel = connect();
    ClientMemory memory(1 << 16);
    constexpr std::uint64_t kIova = 0x100000;
    const int memfd[1] = {memory.fd.get()};
    vfio_user::DmaMap map{sizeof(vfio_user::DmaMap), vfio_user::kDmaRead | vfio_user::kDmaWrite, 0,
                          kIova, memory.size};
    channel.call(Command::dma_map, vfio_user::encode(map), memfd);

    UniqueFd irq(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const int irq_fd[1] = {irq.get()};
    vfio_user::IrqSet set{sizeof(vfio_user::IrqSet),
                          VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, kMsixIrq, 0, 1};
    channel.call(Command::device_set_irqs, vfio_user::encode(set), irq_fd);

    vfio_user::RegionInfoPayload request{};
    request.argsz = 256;
    auto info_reply = channel.call(Command::device_get_region_info, vfio_user::encode(request));
    const auto info = vfio_user::decode_region_info(info_reply.payload);
    ASSERT_EQ(info_reply.fds.size(), 1u);
    auto* doorbells = static_cast<volatile std::uint32_t*>(
        mmap(nullptr, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, info_reply.fds[0].get(),
             static_cast<off_t>(info.info.offset + 0x1000)));
    ASSERT_NE(static_cast<void*>(const_cast<std::uint32_t*>(doorbells)), MAP_FAILED);

    // §3.5.1: AQA, ASQ, ACQ, then CC.EN; wait for CSTS.RDY.
    write_region(channel, 0, 0x24, 4, 0x000f000f);
    write_region(channel, 0, 0x28, 8, kIova);
    write_region(channel, 0, 0x30, 8, kIova + 0x1000);
    write_region(channel, 0, 0x14, 4, 1u | (6u << 16) | (4u << 20));
    EXPECT_EQ(read_region(channel, 0, 0x1c, 4) & 3u, 1u);

    nvme::SubmissionEntry identify{};
    identify.opcode = nvme::admin::identify;
    identify.command_id = 7;
    identify.dptr[0] = kIova + 0x2000;
    identify.cdw10 = nvme::cns::controller;
    std::memcpy(memory.data, &identify, sizeof identify);
    std::atomic_thread_fence(std::memory_order_release);
    doorbells[0] = 1;  // SQ 0 tail

    nvme::CompletionEntry completion{};
    const auto deadline = std::chrono::steady_clock::now() + 1s;
    while (std::chrono::steady_clock::now() < deadline) {
        std::memcpy(&completion, memory.data + 0x1000, sizeof completion);
        if ((completion.status & 1u) != 0) {
            break;
        }
        std::this_thread::sleep_for(100us);
    }
    ASSERT_EQ(completion.status & 1u, 1u) << "no completion within 1 s";
    EXPECT_EQ(completion.command_id, 7u);
    EXPECT_EQ(completion.status >> 1, 0u);
    EXPECT_EQ(completion.sq_head, 1u);
    std::uint16_t vid = 0;
    std::memcpy(&vid, memory.data + 0x2000, 2);
    EXPECT_EQ(vid, 0x1b36u);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(memory.data + 0x2000 + 24), 30),
              "ring3 emulated NVMe controller");
    std::uint32_t sgls = 0;
    std::memcpy(&sgls, memory.data + 0x2000 + 536, 4);
    EXPECT_EQ(sgls & 3u, 1u);
    pollfd pfd{irq.get(), POLLIN, 0};
    EXPECT_EQ(poll(&pfd, 1, 1000), 1) << "MSI-X vector 0 was not signalled";
    munmap(const_cast<std::uint32_t*>(doorbells), 0x1000);
}

TEST_F(EmuServer, ReconnectDropsMappingsAndKeepsServing) {
    {
        Channel channel = connect();
        ClientMemory memory(1 << 16);
        const int memfd[1] = {memory.fd.get()};
        vfio_user::DmaMap map{sizeof(vfio_user::DmaMap), vfio_user::kDmaRead, 0, 0x200000,
                              memory.size};
        channel.call(Command::dma_map, vfio_user::encode(map), memfd);
        write_region(channel, 0, 0x24, 4, 0x00030003);
    }
    Channel channel = connect();
    EXPECT_EQ(read_region(channel, kConfigRegion, 0, 2), 0x1b36u);
    EXPECT_EQ(read_region(channel, 0, 0x24, 4), 0x00030003u);  // device state kept
    {
        auto lock = function_.lock();
        EXPECT_EQ(function_.dma_mapping_count(), 0u);
    }
    channel.call(Command::device_reset, {});
    EXPECT_EQ(read_region(channel, 0, 0x24, 4), 0u);
}

TEST(EmuFaults, ParsesKindsAndRefusesBadText) {
    Faults faults;
    parse_fault("delay:250", faults);
    parse_fault("drop:3", faults);
    parse_fault("corrupt:4", faults);
    parse_fault("cfs:5", faults);
    parse_fault("vanish:6", faults);
    EXPECT_EQ(faults.delay_us, 250u);
    EXPECT_EQ(faults.drop_io, 3u);
    EXPECT_EQ(faults.corrupt_io, 4u);
    EXPECT_EQ(faults.fatal_after, 5u);
    EXPECT_EQ(faults.vanish_after, 6u);
    EXPECT_THROW(parse_fault("drop", faults), Error);
    EXPECT_THROW(parse_fault("drop:x", faults), Error);
    EXPECT_THROW(parse_fault("drop:0", faults), Error);
    EXPECT_THROW(parse_fault("melt:1", faults), Error);
}

}  // namespace
}  // namespace ring3::emu
