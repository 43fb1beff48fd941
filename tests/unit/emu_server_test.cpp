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
        start(options);
    }
    void TearDown() override { stop(); }
    void start(const NvmeOptions& options) {
        function_ = std::make_unique<PciFunction>("emu-test-nvme");
        nvme_ = std::make_unique<NvmeController>(*function_, options);
        server_ = std::make_unique<Server>(path_, *function_);
        thread_ = std::thread([this] { server_->run(); });
    }
    // A fresh controller with one I/O queue pair and these faults.
    void restart_with_faults(std::initializer_list<const char*> faults) {
        stop();
        NvmeOptions options;
        options.size = 1 << 20;
        options.queues = 1;
        for (const char* fault : faults) {
            parse_fault(fault, options.faults);
        }
        start(options);
    }
    void stop() {
        if (server_) {
            server_->stop();
            thread_.join();
        }
        server_.reset();
        nvme_.reset();
        function_.reset();
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
    std::unique_ptr<PciFunction> function_;
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
        auto lock = function_->lock();
        EXPECT_EQ(function_->dma_mapping_count(), 0u);
    }
    channel.call(Command::device_reset, {});
    EXPECT_EQ(read_region(channel, 0, 0x24, 4), 0u);
}

// A minimal NVMe host over the wire (not the driver): the admin queue, one I/O queue pair and
// data buffers in one memfd mapped at kIova, doorbells through the mapped page.
class NvmeHost {
  public:
    static constexpr std::uint64_t kIova = 0x100000;
    static constexpr std::uint64_t kAsq = 0x0, kAcq = 0x1000, kIoSq = 0x2000, kIoCq = 0x3000;
    static constexpr std::uint64_t kList = 0x4000, kData = 0x10000;
    static constexpr std::uint32_t kEntries = 16;

    explicit NvmeHost(const std::string& path)
        : channel_(Channel::connect(path)), memory_(1 << 20) {
        channel_.call(Command::version, vfio_user::encode_version(vfio_user::Limits{}));
        const int memfd[1] = {memory_.fd.get()};
        vfio_user::DmaMap map{sizeof(vfio_user::DmaMap), vfio_user::kDmaRead | vfio_user::kDmaWrite,
                              0, kIova, memory_.size};
        channel_.call(Command::dma_map, vfio_user::encode(map), memfd);
        vfio_user::RegionInfoPayload request{};
        request.argsz = 256;
        auto reply = channel_.call(Command::device_get_region_info, vfio_user::encode(request));
        const auto info = vfio_user::decode_region_info(reply.payload);
        void* page = mmap(nullptr, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED,
                          reply.fds.at(0).get(), static_cast<off_t>(info.info.offset + 0x1000));
        EXPECT_NE(page, MAP_FAILED);
        doorbells_ = static_cast<volatile std::uint32_t*>(page);
        write(0x24, 4, (kEntries - 1) | ((kEntries - 1) << 16));
        write(0x28, 8, kIova + kAsq);
        write(0x30, 8, kIova + kAcq);
        write(0x14, 4, 1u | (6u << 16) | (4u << 20));
        nvme::SubmissionEntry c{};
        c.opcode = nvme::admin::set_features;
        c.cdw10 = nvme::feature::number_of_queues;
        EXPECT_EQ(status(0, c), 0u);
        c = {};
        c.opcode = nvme::admin::create_io_cq;
        c.dptr[0] = kIova + kIoCq;
        c.cdw10 = 1 | ((kEntries - 1) << 16);
        c.cdw11 = 1;  // PC, no interrupts
        EXPECT_EQ(status(0, c), 0u);
        c.opcode = nvme::admin::create_io_sq;
        c.dptr[0] = kIova + kIoSq;
        c.cdw11 = 1 | (1u << 16);
        EXPECT_EQ(status(0, c), 0u);
    }
    ~NvmeHost() { munmap(const_cast<std::uint32_t*>(doorbells_), 0x1000); }

    std::uint64_t read(std::uint64_t offset, unsigned count) {
        vfio_user::RegionAccess access{offset, 0, count};
        const auto reply = channel_.call(Command::region_read, vfio_user::encode(access));
        std::uint64_t value = 0;
        std::memcpy(&value, reply.payload.data() + sizeof access, count);
        return value;
    }
    void write(std::uint64_t offset, unsigned count, std::uint64_t value) {
        vfio_user::RegionAccess access{offset, 0, count};
        channel_.call(Command::region_write,
                      vfio_user::encode(access, std::span(bytes_of(value).data(), count)));
    }
    void submit(unsigned q, nvme::SubmissionEntry c) {
        c.command_id = next_id_++;
        std::memcpy(memory_.data + (q == 0 ? kAsq : kIoSq) + tail_[q] * 64, &c, sizeof c);
        tail_[q] = (tail_[q] + 1) % kEntries;
        std::atomic_thread_fence(std::memory_order_release);
        doorbells_[2 * q] = tail_[q];
    }
    std::optional<nvme::CompletionEntry> reap(unsigned q, std::chrono::milliseconds wait) {
        const auto deadline = std::chrono::steady_clock::now() + wait;
        nvme::CompletionEntry e{};
        do {
            std::memcpy(&e, memory_.data + (q == 0 ? kAcq : kIoCq) + head_[q] * 16, sizeof e);
            if ((e.status & 1u) == phase_[q]) {
                head_[q] = (head_[q] + 1) % kEntries;
                phase_[q] ^= head_[q] == 0 ? 1u : 0u;
                doorbells_[2 * q + 1] = head_[q];
                return e;
            }
            std::this_thread::sleep_for(50us);
        } while (std::chrono::steady_clock::now() < deadline);
        return std::nullopt;
    }
    // Submits and reaps one command; the status field without DNR, or ~0 when none came.
    unsigned status(unsigned q, const nvme::SubmissionEntry& c) {
        submit(q, c);
        const auto e = reap(q, 1s);
        return e ? (e->status >> 1) & 0x7ff : ~0u;
    }
    static nvme::SubmissionEntry io(std::uint8_t opcode, std::uint64_t lba, unsigned blocks,
                                    std::uint64_t prp1, std::uint64_t prp2 = 0) {
        nvme::SubmissionEntry c{};
        c.opcode = opcode;
        c.nsid = 1;
        c.dptr[0] = prp1;
        c.dptr[1] = prp2;
        c.cdw10 = static_cast<std::uint32_t>(lba);
        c.cdw11 = static_cast<std::uint32_t>(lba >> 32);
        c.cdw12 = blocks - 1;
        return c;
    }
    std::byte* at(std::uint64_t offset) { return memory_.data + offset; }
    Channel& channel() { return channel_; }
    std::uint16_t last_id() const { return static_cast<std::uint16_t>(next_id_ - 1); }

  private:
    Channel channel_;
    ClientMemory memory_;
    volatile std::uint32_t* doorbells_ = nullptr;
    std::uint32_t tail_[2] = {}, head_[2] = {}, phase_[2] = {1, 1};
    std::uint16_t next_id_ = 1;
};

TEST_F(EmuServer, IoThroughPrpListsAndSglsReachesTheStorage) {
    NvmeHost host(path_);
    constexpr std::uint64_t kIova = NvmeHost::kIova;
    // 16 KiB at a page offset of 0x200: PRP1, then a PRP list of four pages.
    for (unsigned i = 0; i < 16384; ++i) {
        host.at(NvmeHost::kData + 0x200)[i] = static_cast<std::byte>(i * 7 + 1);
    }
    for (std::uint64_t page = 0; page < 4; ++page) {
        const std::uint64_t address = kIova + NvmeHost::kData + 0x1000 * (page + 1);
        std::memcpy(host.at(NvmeHost::kList) + 8 * page, &address, 8);
    }
    EXPECT_EQ(host.status(1, NvmeHost::io(nvme::io::write, 8, 32, kIova + NvmeHost::kData + 0x200,
                                          kIova + NvmeHost::kList)),
              0u);
    {
        auto lock = function_->lock();  // the model's thread writes the storage under it
        EXPECT_EQ(
            std::memcmp(nvme_->storage().data() + 8 * 512, host.at(NvmeHost::kData + 0x200), 16384),
            0);
    }
    // Read it back through one SGL data block into another buffer.
    auto read = NvmeHost::io(nvme::io::read, 8, 32, 0);
    read.flags = nvme::kPsdtSgl;
    nvme::SglDescriptor sgl{};
    sgl.address = kIova + 0x40000;
    sgl.length = 16384;
    std::memcpy(read.dptr, &sgl, sizeof sgl);
    EXPECT_EQ(host.status(1, read), 0u);
    EXPECT_EQ(std::memcmp(host.at(0x40000), host.at(NvmeHost::kData + 0x200), 16384), 0);
    // Write Zeroes, then the refusals: past the end, past MDTS, an unmapped buffer, a PRP1 that
    // is not dword aligned, a namespace that does not exist, an unknown opcode.
    EXPECT_EQ(host.status(1, NvmeHost::io(nvme::io::write_zeroes, 8, 1, 0)), 0u);
    {
        auto lock = function_->lock();
        EXPECT_EQ(nvme_->storage()[8 * 512 + 5], std::byte{0});
    }
    const std::uint64_t blocks = nvme_->namespace_blocks();
    EXPECT_EQ(host.status(1, NvmeHost::io(nvme::io::read, blocks - 1, 2, kIova)), 0x80u);
    EXPECT_EQ(host.status(1, NvmeHost::io(nvme::io::read, 0, 1025, kIova)), 0x02u);
    EXPECT_EQ(host.status(1, NvmeHost::io(nvme::io::read, 0, 1, 0x900000)), 0x04u);
    EXPECT_EQ(host.status(1, NvmeHost::io(nvme::io::read, 0, 1, kIova + 2)), 0x13u);
    auto bad_ns = NvmeHost::io(nvme::io::read, 0, 1, kIova);
    bad_ns.nsid = 9;
    EXPECT_EQ(host.status(1, bad_ns), 0x0bu);
    EXPECT_EQ(host.status(1, NvmeHost::io(0x7f, 0, 1, kIova)), 0x01u);
    EXPECT_EQ(nvme_->io_commands(), 9u);
}

TEST_F(EmuServer, FaultsDropCorruptAndFatalStatusAreDeterministic) {
    restart_with_faults({"drop:2", "corrupt:3", "cfs:4"});
    NvmeHost host(path_);
    const auto read = NvmeHost::io(nvme::io::read, 0, 1, NvmeHost::kIova + NvmeHost::kData);
    EXPECT_EQ(host.status(1, read), 0u);
    host.submit(1, read);  // the 2nd: dropped
    EXPECT_FALSE(host.reap(1, 100ms).has_value());
    host.submit(1, read);  // the 3rd: its command id corrupted
    auto e = host.reap(1, 1s);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->command_id, static_cast<std::uint16_t>(~host.last_id()));
    EXPECT_EQ(host.status(1, read), 0u);  // the 4th completes, then CSTS.CFS
    EXPECT_EQ(host.read(0x1c, 4) & 2u, 2u);
    host.submit(1, read);  // nothing more is processed
    EXPECT_FALSE(host.reap(1, 50ms).has_value());
    EXPECT_EQ(nvme_->io_commands(), 4u);
}

TEST_F(EmuServer, FaultsDelayAndVanish) {
    restart_with_faults({"delay:30000", "vanish:2"});
    {
        NvmeHost host(path_);
        const auto read = NvmeHost::io(nvme::io::read, 0, 1, NvmeHost::kIova + NvmeHost::kData);
        const auto begin = std::chrono::steady_clock::now();
        EXPECT_EQ(host.status(1, read), 0u);
        EXPECT_GE(std::chrono::steady_clock::now() - begin, 30ms);
        host.submit(1, read);  // the 2nd: the connection goes away
        std::optional<vfio_user::Message> gone;
        try {
            gone = host.channel().receive();
        } catch (const Error&) {
        }
        EXPECT_FALSE(gone.has_value());
    }
    // The server listens on: a new client connects (and would re-enable the controller).
    Channel channel = connect();
    EXPECT_EQ(read_region(channel, kConfigRegion, 0, 2), 0x1b36u);
}

// PciFunction alone (no socket): MSI-X masking and pending bits, and the DMA table's bounds.
class TrivialModel final : public DeviceModel {
  public:
    void reset() override { ++resets; }
    unsigned resets = 0;
};

TEST(EmuFunction, MsixHonoursEnableFunctionMaskAndVectorMask) {
    PciFunction function("msix");
    TrivialModel model;
    function.config().set_identity(0x1234, 0x5678, 0x020000);
    function.config().add_bar(2, 0x1000, false);
    function.config().add_msix(2, 2, 0x0, 0x800);
    function.config().add_pcie_endpoint();
    function.set_model(&model);
    std::vector<UniqueFd> fds;
    fds.emplace_back(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    fds.emplace_back(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const int vector1 = fds[1].get();
    function.set_msix_eventfds(0, std::move(fds));
    const auto fired = [vector1] {
        std::uint64_t count = 0;
        return ::read(vector1, &count, sizeof count) == sizeof count;
    };
    // MSI-X not enabled in config space: eventfds alone decide (a VFIO-style client).
    EXPECT_TRUE(function.raise_msix(1));
    EXPECT_TRUE(fired());
    // Enabled: vectors start masked (PCI 3.0 §6.8.2.9); a raise sets the PBA bit instead.
    const std::uint8_t cap = function.config().bytes()[0x34];
    const std::byte enable[1] = {std::byte{0x80}};
    function.region_write(kConfigRegion, cap + 3u, enable);
    EXPECT_TRUE(function.config().msix_enabled());
    EXPECT_FALSE(function.raise_msix(1));
    EXPECT_FALSE(fired());
    std::byte pba[4] = {};
    function.region_read(2, 0x800, pba);
    EXPECT_EQ(pba[0], std::byte{2});
    // Unmasking vector 1 (its Vector Control dword) sends the pending message.
    const std::byte unmask[4] = {};
    function.region_write(2, 16 + 12, unmask);
    EXPECT_TRUE(fired());
    function.region_read(2, 0x800, pba);
    EXPECT_EQ(pba[0], std::byte{0});
    EXPECT_TRUE(function.raise_msix(1));
    EXPECT_TRUE(fired());
    EXPECT_FALSE(function.raise_msix(2));  // no such vector
    // Function Level Reset through the PCIe capability resets config and the model.
    const std::uint8_t pcie = function.config().bytes()[cap + 1u];
    const std::byte flr[1] = {std::byte{0x80}};
    function.region_write(kConfigRegion, pcie + 9u, flr);
    EXPECT_EQ(model.resets, 1u);
    EXPECT_FALSE(function.config().msix_enabled());
    function.set_model(nullptr);
}

TEST(EmuFunction, DmaTableRefusesOverlapsSplitsAndOutOfBoundsRanges) {
    PciFunction function("dma");
    ClientMemory memory(1 << 16);
    const auto map = [&](std::uint64_t iova, std::uint64_t size, std::uint64_t offset,
                         std::uint32_t flags) {
        function.map_dma(iova, size, offset, flags, UniqueFd(dup(memory.fd.get())), 4);
    };
    map(0x10000, 0x4000, 0, vfio_user::kDmaRead | vfio_user::kDmaWrite);
    map(0x14000, 0x4000, 0x4000, vfio_user::kDmaRead);  // adjacent, read-only
    EXPECT_NE(function.dma(0x10000, 0x4000, true), nullptr);
    EXPECT_EQ(function.dma(0x10000, 0x4001, true), nullptr);  // crosses into the next mapping
    EXPECT_EQ(function.dma(0x14000, 16, true), nullptr);      // device may not write there
    EXPECT_NE(function.dma(0x14000, 16, false), nullptr);
    EXPECT_EQ(function.dma(0xffff, 2, false), nullptr);
    EXPECT_EQ(function.dma(~0ull - 4, 8, false), nullptr);
    // The memory is the client's: a write through dma() shows in its mapping.
    std::memset(function.dma(0x10010, 4, true), 0x5a, 4);
    EXPECT_EQ(memory.data[0x10], std::byte{0x5a});
    const auto refused = [&](auto call, int errnum) {
        try {
            call();
        } catch (const Error& e) {
            return e.errnum() == errnum;
        }
        return false;
    };
    EXPECT_TRUE(refused([&] { map(0x13000, 0x2000, 0, vfio_user::kDmaRead); }, EEXIST));
    EXPECT_TRUE(refused([&] { map(0x20000, 0x1000, 0x10000, vfio_user::kDmaRead); }, EINVAL));
    EXPECT_TRUE(refused([&] { map(0x20000, 0x1000, 0, 0x4); }, EINVAL));
    EXPECT_TRUE(refused([&] { map(~0ull - 0xfff, 0x2000, 0, vfio_user::kDmaRead); }, EINVAL));
    EXPECT_TRUE(refused([&] { function.unmap_dma(0x11000, 0x1000); }, EINVAL));  // a split
    function.unmap_dma(0x10000, 0x8000);
    EXPECT_EQ(function.dma_mapping_count(), 0u);
    for (std::uint64_t i = 0; i < 4; ++i) {
        map(0x100000 * (i + 1), 0x1000, 0, vfio_user::kDmaRead);
    }
    EXPECT_TRUE(refused([&] { map(0x900000, 0x1000, 0, vfio_user::kDmaRead); }, ENOSPC));
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
