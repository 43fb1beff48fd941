// emu::VirtioBlkDevice in-process, driven register by register with hand-made rings in a memfd
// given to the function as DMA memory: requests carried out against the disk, bad ones answered
// VIRTIO_BLK_S_IOERR (VIRTIO 1.2 §5.2.6) without touching memory they do not own, the
// configuration as §5.2.4 lays it out.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "ring3/emu/server.hpp"
#include "ring3/emu/virtio_blk.hpp"
#include "ring3/virtio/registers.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::emu {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace reg = virtio::reg;

class EmuVirtioBlk : public ::testing::Test {
  protected:
    static constexpr std::uint64_t kIova = 0x100000;
    static constexpr std::size_t kBytes = 0x10000;
    static constexpr std::uint64_t kDesc = kIova;
    static constexpr std::uint64_t kAvail = kIova + 0x1000;
    static constexpr std::uint64_t kUsed = kIova + 0x2000;
    static constexpr std::uint64_t kHeader = kIova + 0x3000;  // 16 bytes per request slot
    static constexpr std::uint64_t kStatus = kIova + 0x3800;  // one byte per request slot
    static constexpr std::uint64_t kData = kIova + 0x4000;
    static constexpr std::uint16_t kSize = 16;
    static constexpr std::uint64_t kDiskBytes = 1 << 20;

    void SetUp() override {
        memory_.reset(memfd_create("emu-virtio-blk-test", MFD_CLOEXEC));
        ASSERT_TRUE(memory_);
        ASSERT_EQ(ftruncate(memory_.get(), kBytes), 0);
        void* at = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memory_.get(), 0);
        ASSERT_NE(at, MAP_FAILED);
        base_ = static_cast<std::byte*>(at);
        VirtioBlkOptions options;
        options.size = kDiskBytes;
        options.queues = 2;
        options.seg_max = 4;
        device_ = std::make_unique<VirtioBlkDevice>(function_, options);
        auto lock = function_.lock();
        function_.map_dma(kIova, kBytes, 0, vfio_user::kDmaRead | vfio_user::kDmaWrite,
                          UniqueFd(dup(memory_.get())), 16);
    }
    void TearDown() override {
        device_.reset();
        munmap(base_, kBytes);
    }

    template <class Register>
    void write(std::uint64_t value) {
        auto lock = function_.lock();
        const std::size_t width = sizeof(typename Register::word_type);
        function_.region_write(0, VirtioBlkDevice::kCommonOffset + Register::offset,
                               {reinterpret_cast<const std::byte*>(&value), width});
    }
    template <class Register>
    std::uint64_t read() {
        auto lock = function_.lock();
        std::uint64_t value = 0;
        const std::size_t width = sizeof(typename Register::word_type);
        function_.region_read(0, VirtioBlkDevice::kCommonOffset + Register::offset,
                              {reinterpret_cast<std::byte*>(&value), width});
        return value;
    }
    template <class Register>
    std::uint64_t config() {
        auto lock = function_.lock();
        std::uint64_t value = 0;
        const std::size_t width = sizeof(typename Register::word_type);
        function_.region_read(0, VirtioBlkDevice::kDeviceOffset + Register::offset,
                              {reinterpret_cast<std::byte*>(&value), width});
        return value;
    }
    std::byte* at(std::uint64_t iova) { return base_ + (iova - kIova); }

    // §3.1.1 with VERSION_1, request queue 1 (index 0) on the rings above, DRIVER_OK.
    void start() {
        using namespace virtio::status;
        write<reg::DeviceStatus>(0);
        write<reg::DeviceStatus>(acknowledge | driver);
        write<reg::DriverFeatureSelect>(1);
        write<reg::DriverFeature>(virtio::bit(virtio::feature::version_1) >> 32);
        write<reg::DeviceStatus>(acknowledge | driver | features_ok);
        ASSERT_NE(read<reg::DeviceStatus>() & features_ok, 0u);
        write<reg::QueueSelect>(0);
        write<reg::QueueSize>(kSize);
        write<reg::QueueDescLow>(kDesc);
        write<reg::QueueDriverLow>(kAvail);
        write<reg::QueueDeviceLow>(kUsed);
        write<reg::QueueEnable>(1);
        write<reg::DeviceStatus>(acknowledge | driver | features_ok | driver_ok);
    }
    void descriptor(std::uint16_t index, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                    std::uint16_t next) {
        const virtio::Descriptor d{addr, len, flags, next};
        std::memcpy(at(kDesc) + sizeof d * index, &d, sizeof d);
    }
    // A request in descriptors 3 * slot .. 3 * slot + 2: header, data (when `data_len` is not 0),
    // status; the status byte preset to 0xff.
    std::uint16_t request(unsigned slot, std::uint32_t type, std::uint64_t sector,
                          std::uint32_t data_len, bool data_writable, std::uint64_t data_at) {
        const virtio::BlkRequestHeader header{type, 0, sector};
        std::memcpy(at(kHeader + 16 * slot), &header, sizeof header);
        *at(kStatus + slot) = std::byte{0xff};
        const auto first = static_cast<std::uint16_t>(3 * slot);
        const auto status_index = static_cast<std::uint16_t>(first + (data_len != 0 ? 2 : 1));
        descriptor(first, kHeader + 16 * slot, 16, virtio::desc_flag::next,
                   static_cast<std::uint16_t>(first + 1));
        if (data_len != 0) {
            const auto flags = static_cast<std::uint16_t>(
                virtio::desc_flag::next | (data_writable ? virtio::desc_flag::write : 0));
            descriptor(static_cast<std::uint16_t>(first + 1), data_at, data_len, flags,
                       status_index);
        }
        descriptor(status_index, kStatus + slot, 1, virtio::desc_flag::write, 0);
        return first;
    }
    void publish(std::uint16_t head) {
        std::uint16_t idx = 0;
        std::memcpy(&idx, at(kAvail) + 2, 2);
        std::memcpy(at(kAvail) + 4 + 2 * (idx % kSize), &head, 2);
        __atomic_store_n(reinterpret_cast<std::uint16_t*>(at(kAvail) + 2),
                         static_cast<std::uint16_t>(idx + 1), __ATOMIC_RELEASE);
    }
    std::uint16_t used_idx() {
        return __atomic_load_n(reinterpret_cast<std::uint16_t*>(at(kUsed) + 2), __ATOMIC_ACQUIRE);
    }
    // Bounded wait for `n` used elements; returns the last one.
    virtio::UsedElement wait_used(std::uint16_t n) {
        const auto deadline = Clock::now() + 5s;
        while (used_idx() < n && Clock::now() < deadline) {
            std::this_thread::sleep_for(1ms);
        }
        EXPECT_EQ(used_idx(), n);
        virtio::UsedElement e{};
        std::memcpy(&e, at(kUsed) + 4 + 8 * ((n - 1) % kSize), sizeof e);
        return e;
    }
    std::uint8_t status(unsigned slot) {
        return std::to_integer<std::uint8_t>(*at(kStatus + slot));
    }

    PciFunction function_{"emu-virtio-blk-test"};
    UniqueFd memory_;
    std::byte* base_ = nullptr;
    std::unique_ptr<VirtioBlkDevice> device_;
};

TEST_F(EmuVirtioBlk, IdentityAndConfiguration) {
    std::uint16_t ids[2] = {};
    function_.config().read(0, {reinterpret_cast<std::byte*>(ids), 4});
    EXPECT_EQ(ids[0], 0x1af4);
    EXPECT_EQ(ids[1], 0x1042);
    EXPECT_EQ(read<reg::NumQueues>(), 2u);
    write<reg::DeviceFeatureSelect>(0);
    const std::uint64_t low = read<reg::DeviceFeature>();
    EXPECT_NE(low & virtio::bit(virtio::blk_feature::mq), 0u);
    EXPECT_NE(low & virtio::bit(virtio::blk_feature::flush), 0u);
    EXPECT_EQ(low & virtio::bit(virtio::feature::indirect_desc), 0u);
    EXPECT_EQ(config<reg::blk::CapacityLow>(), kDiskBytes / 512);
    EXPECT_EQ(config<reg::blk::CapacityHigh>(), 0u);
    EXPECT_EQ(config<reg::blk::SegMax>(), 4u);
    EXPECT_EQ(config<reg::blk::BlkSize>(), 512u);
    EXPECT_EQ(config<reg::blk::NumQueues>(), 2u);
}

TEST_F(EmuVirtioBlk, WriteThenReadBackThroughTheDisk) {
    start();
    for (std::size_t i = 0; i < 1024; ++i) {
        at(kData)[i] = static_cast<std::byte>(i * 7 + 3);
    }
    publish(request(0, virtio::blk_type::out, 10, 1024, false, kData));
    virtio::UsedElement e = wait_used(1);
    EXPECT_EQ(e.id, 0u);
    EXPECT_EQ(e.len, 1u);
    EXPECT_EQ(status(0), virtio::blk_status::ok);
    EXPECT_EQ(std::memcmp(device_->storage().data() + 10 * 512, at(kData), 1024), 0);

    publish(request(1, virtio::blk_type::in, 10, 1024, true, kData + 0x2000));
    e = wait_used(2);
    EXPECT_EQ(e.id, 3u);
    EXPECT_EQ(e.len, 1024u + 1);
    EXPECT_EQ(status(1), virtio::blk_status::ok);
    EXPECT_EQ(std::memcmp(at(kData + 0x2000), at(kData), 1024), 0);

    publish(request(2, virtio::blk_type::flush, 0, 0, false, 0));
    wait_used(3);
    EXPECT_EQ(status(2), virtio::blk_status::ok);
    const VirtioBlkCounters c = device_->counters();
    EXPECT_EQ(c.writes, 1u);
    EXPECT_EQ(c.reads, 1u);
    EXPECT_EQ(c.flushes, 1u);
    EXPECT_EQ(c.ioerr, 0u);
    EXPECT_EQ(device_->status() & virtio::status::device_needs_reset, 0u);
}

TEST_F(EmuVirtioBlk, GetIdAnswersTwentyBytes) {
    start();
    std::memset(at(kData), 0x55, 32);
    publish(request(0, virtio::blk_type::get_id, 0, 20, true, kData));
    const virtio::UsedElement e = wait_used(1);
    EXPECT_EQ(e.len, 21u);
    EXPECT_EQ(status(0), virtio::blk_status::ok);
    EXPECT_EQ(std::memcmp(at(kData), "ring3-emu-blk", 13), 0);
    EXPECT_EQ(at(kData)[19], std::byte{0});
    EXPECT_EQ(at(kData)[20], std::byte{0x55});  // nothing past the 20 bytes
}

TEST_F(EmuVirtioBlk, BadRequestsAreAnsweredIoErrorAndTouchNothing) {
    start();
    std::memset(device_->storage().data(), 0xaa, kDiskBytes);
    std::memset(at(kData), 0x11, 0x2000);
    // Past the capacity; not whole sectors; a read whose data the device may not write.
    publish(request(0, virtio::blk_type::in, kDiskBytes / 512, 512, true, kData));
    publish(request(1, virtio::blk_type::out, 0, 100, false, kData));
    publish(request(2, virtio::blk_type::in, 0, 512, false, kData));
    publish(request(3, 0x77, 0, 0, false, 0));
    wait_used(4);
    EXPECT_EQ(status(0), virtio::blk_status::ioerr);
    EXPECT_EQ(status(1), virtio::blk_status::ioerr);
    EXPECT_EQ(status(2), virtio::blk_status::ioerr);
    EXPECT_EQ(status(3), virtio::blk_status::unsupp);
    EXPECT_EQ(at(kData)[0], std::byte{0x11});
    EXPECT_EQ(device_->storage()[0], std::byte{0xaa});
    const VirtioBlkCounters c = device_->counters();
    EXPECT_EQ(c.ioerr, 3u);
    EXPECT_EQ(c.unsupported, 1u);
    EXPECT_EQ(c.reads + c.writes, 0u);
    // Bad requests are the driver's mistakes, not broken rings: the device goes on.
    EXPECT_EQ(device_->status() & virtio::status::device_needs_reset, 0u);
}

TEST_F(EmuVirtioBlk, ChainWithoutStatusByteIsReturnedUnanswered) {
    start();
    const virtio::BlkRequestHeader header{virtio::blk_type::out, 0, 0};
    std::memcpy(at(kHeader), &header, sizeof header);
    descriptor(0, kHeader, 16, virtio::desc_flag::next, 1);
    descriptor(1, kData, 512, 0, 0);
    publish(0);
    const virtio::UsedElement e = wait_used(1);
    EXPECT_EQ(e.len, 0u);
    EXPECT_EQ(device_->counters().no_status, 1u);
    EXPECT_EQ(device_->counters().writes, 0u);
}

TEST_F(EmuVirtioBlk, DescriptorOutsideTheDriversMemoryNeedsReset) {
    start();
    publish(request(0, virtio::blk_type::in, 0, 4096, true, kIova + kBytes - 512));
    const auto deadline = Clock::now() + 5s;
    while ((device_->status() & virtio::status::device_needs_reset) == 0 &&
           Clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_NE(device_->status() & virtio::status::device_needs_reset, 0u);
    EXPECT_EQ(used_idx(), 0);
    // §2.4: writing 0 resets the device, and the status reads 0 again.
    write<reg::DeviceStatus>(0);
    EXPECT_EQ(read<reg::DeviceStatus>(), 0u);
}

}  // namespace
}  // namespace ring3::emu
