// emu::VirtioNetDevice in-process: ring3's own virtio-net driver over vfio-user against the
// model in loopback (100,000 frames of varied sizes, each checked byte for byte), and the model's
// transport driven register by register with hand-made rings, so that bad descriptors and
// refused features can be shown to set DEVICE_NEEDS_RESET (VIRTIO 1.2 §2.1.2) or leave
// FEATURES_OK clear (§3.1.1) instead of crashing.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/emu/server.hpp"
#include "ring3/emu/virtio_net.hpp"
#include "ring3/net/open.hpp"
#include "ring3/virtio/registers.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::emu {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace reg = virtio::reg;

std::string socket_path() {
    static unsigned counter = 0;
    return "/tmp/ring3-emu-virtio-" + std::to_string(getpid()) + "-" + std::to_string(counter++) +
           ".sock";
}

// The byte at position i of frame `sequence` (its first 14 bytes are an Ethernet header).
std::byte pattern(std::uint64_t sequence, std::size_t i) {
    return static_cast<std::byte>((sequence * 131 + i * 7 + (sequence >> 8)) & 0xff);
}
std::uint32_t frame_length(std::uint64_t sequence) {
    return 60 + static_cast<std::uint32_t>((sequence * 2654435761u) % (1514 - 60 + 1));
}

TEST(EmuVirtioNet, LoopbackCarries100000FramesThroughRing3sDriver) {
    PciFunction function("emu-virtio-net-test");
    VirtioNetOptions options;
    options.loopback = true;
    VirtioNetDevice device(function, options);
    const std::string path = socket_path();
    Server server(path, function);
    std::thread serving([&server] { server.run(); });
    struct Stop {
        Server& server;
        std::thread& thread;
        ~Stop() {
            server.stop();
            thread.join();
        }
    } stop{server, serving};

    auto port = net::open_net_port("vfio-user:" + path, net::OpenNetOptions{});
    EXPECT_TRUE(port->link().up);
    EXPECT_EQ(port->info().mac.bytes[5], 0x01);
    net::Queue& queue = port->open_queue(0);
    const std::uint16_t headroom = queue.headroom();

    constexpr std::uint64_t kFrames = 100000;
    constexpr std::uint64_t kInFlight = 96;  // below the 256 receive buffers: none is dropped
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t wrong = 0;
    net::Packet packets[32];
    const auto deadline = Clock::now() + 60s;
    while (received < kFrames && Clock::now() < deadline && queue.failure() == 0) {
        unsigned n = 0;
        while (n < 32 && sent + n < kFrames && sent + n - received < kInFlight) {
            net::Packet& p = packets[n];
            if (!queue.pool().get(p.buffer)) {
                break;
            }
            p.offset = headroom;
            p.flags = 0;
            p.length = frame_length(sent + n);
            for (std::size_t i = 0; i < p.length; ++i) {
                p.data()[i] = pattern(sent + n, i);
            }
            ++n;
        }
        const unsigned accepted = queue.tx_burst(packets, n);
        for (unsigned i = accepted; i < n; ++i) {
            queue.pool().put(packets[i].buffer);
        }
        sent += accepted;
        queue.reclaim();
        const unsigned got = queue.rx_burst(packets, 32);
        for (unsigned i = 0; i < got; ++i) {
            const net::Packet& p = packets[i];
            bool same = p.length == frame_length(received);
            for (std::size_t b = 0; same && b < p.length; ++b) {
                same = p.data()[b] == pattern(received, b);
            }
            if (!same && ++wrong <= 3) {
                ADD_FAILURE() << "frame " << received << " differs (" << p.length << " bytes)";
            }
            ++received;
            queue.pool().put(p.buffer);
        }
    }
    EXPECT_EQ(queue.failure(), 0);
    EXPECT_EQ(received, kFrames);
    EXPECT_EQ(wrong, 0u);
    const VirtioNetCounters c = device.counters();
    EXPECT_EQ(c.tx_frames, kFrames);
    EXPECT_EQ(c.rx_frames, kFrames);
    EXPECT_EQ(c.rx_dropped, 0u);
    EXPECT_EQ(c.needs_reset, 0u);
}

// The model's transport driven as a driver would, register by register, with rings built by
// hand in a memfd given to the function as DMA memory.
class EmuVirtioNetRegisters : public ::testing::Test {
  protected:
    static constexpr std::uint64_t kIova = 0x100000;
    static constexpr std::size_t kBytes = 0x10000;
    static constexpr std::uint64_t kDesc = kIova;
    static constexpr std::uint64_t kAvail = kIova + 0x1000;
    static constexpr std::uint64_t kUsed = kIova + 0x2000;
    static constexpr std::uint64_t kData = kIova + 0x4000;
    static constexpr std::uint16_t kSize = 8;

    void SetUp() override {
        memory_.reset(memfd_create("emu-virtio-test", MFD_CLOEXEC));
        ASSERT_TRUE(memory_);
        ASSERT_EQ(ftruncate(memory_.get(), kBytes), 0);
        void* at = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memory_.get(), 0);
        ASSERT_NE(at, MAP_FAILED);
        base_ = static_cast<std::byte*>(at);
        device_ = std::make_unique<VirtioNetDevice>(function_, VirtioNetOptions{});
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
        function_.region_write(0, VirtioNetDevice::kCommonOffset + Register::offset,
                               {reinterpret_cast<const std::byte*>(&value), width});
    }
    template <class Register>
    std::uint64_t read() {
        auto lock = function_.lock();
        std::uint64_t value = 0;
        const std::size_t width = sizeof(typename Register::word_type);
        function_.region_read(0, VirtioNetDevice::kCommonOffset + Register::offset,
                              {reinterpret_cast<std::byte*>(&value), width});
        return value;
    }
    std::byte* at(std::uint64_t iova) { return base_ + (iova - kIova); }

    // §3.1.1 steps 1-6 with `features`; returns the status read back.
    std::uint64_t negotiate(std::uint64_t features) {
        write<reg::DeviceStatus>(0);
        write<reg::DeviceStatus>(virtio::status::acknowledge);
        write<reg::DeviceStatus>(virtio::status::acknowledge | virtio::status::driver);
        write<reg::DriverFeatureSelect>(0);
        write<reg::DriverFeature>(features & 0xffffffff);
        write<reg::DriverFeatureSelect>(1);
        write<reg::DriverFeature>(features >> 32);
        write<reg::DeviceStatus>(virtio::status::acknowledge | virtio::status::driver |
                                 virtio::status::features_ok);
        return read<reg::DeviceStatus>();
    }
    // Transmit queue 1 set up on the rings above, then DRIVER_OK.
    void start() {
        ASSERT_NE(negotiate(virtio::bit(virtio::feature::version_1)) & virtio::status::features_ok,
                  0u);
        write<reg::QueueSelect>(1);
        write<reg::QueueSize>(kSize);
        write<reg::QueueDescLow>(kDesc);
        write<reg::QueueDriverLow>(kAvail);
        write<reg::QueueDeviceLow>(kUsed);
        write<reg::QueueEnable>(1);
        write<reg::DeviceStatus>(virtio::status::acknowledge | virtio::status::driver |
                                 virtio::status::features_ok | virtio::status::driver_ok);
    }
    void descriptor(std::uint16_t index, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                    std::uint16_t next) {
        const virtio::Descriptor d{addr, len, flags, next};
        std::memcpy(at(kDesc) + sizeof d * index, &d, sizeof d);
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
    // Bounded wait for the device to set DEVICE_NEEDS_RESET.
    bool wait_needs_reset() {
        const auto deadline = Clock::now() + 5s;
        while (Clock::now() < deadline) {
            if ((device_->status() & virtio::status::device_needs_reset) != 0) {
                return true;
            }
            std::this_thread::sleep_for(1ms);
        }
        return false;
    }

    PciFunction function_{"emu-virtio-net-registers"};
    UniqueFd memory_;
    std::byte* base_ = nullptr;
    std::unique_ptr<VirtioNetDevice> device_;
};

TEST_F(EmuVirtioNetRegisters, IdentityAndFeatures) {
    std::uint16_t ids[2] = {};
    function_.config().read(0, {reinterpret_cast<std::byte*>(ids), 4});
    EXPECT_EQ(ids[0], 0x1af4);
    EXPECT_EQ(ids[1], 0x1041);
    write<reg::DeviceFeatureSelect>(1);
    EXPECT_NE(read<reg::DeviceFeature>() & 1u, 0u);  // VERSION_1 is bit 32
    EXPECT_EQ(read<reg::NumQueues>(), 2u);
    // §3.1.1: without VERSION_1, or with a feature never offered, FEATURES_OK does not stay set.
    EXPECT_EQ(negotiate(0) & virtio::status::features_ok, 0u);
    EXPECT_EQ(negotiate(virtio::bit(virtio::feature::version_1) |
                        virtio::bit(virtio::feature::ring_packed)) &
                  virtio::status::features_ok,
              0u);
    EXPECT_NE(negotiate(virtio::bit(virtio::feature::version_1)) & virtio::status::features_ok, 0u);
    // §4.1.5.1.2: a vector the device does not have reads back NO_VECTOR.
    write<reg::QueueSelect>(0);
    write<reg::QueueMsixVector>(7);
    EXPECT_EQ(read<reg::QueueMsixVector>(), virtio::kNoVector);
    write<reg::QueueMsixVector>(1);
    EXPECT_EQ(read<reg::QueueMsixVector>(), 1u);
}

TEST_F(EmuVirtioNetRegisters, GoodFrameIsTakenAndReturned) {
    start();
    descriptor(0, kData, 12 + 60, 0, 0);
    publish(0);
    const auto deadline = Clock::now() + 5s;
    while (used_idx() != 1 && Clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(used_idx(), 1);
    EXPECT_EQ(device_->counters().tx_frames, 1u);
    EXPECT_EQ(device_->status() & virtio::status::device_needs_reset, 0u);
}

TEST_F(EmuVirtioNetRegisters, ChainThatLoopsNeedsReset) {
    start();
    descriptor(0, kData, 12, virtio::desc_flag::next, 1);
    descriptor(1, kData + 12, 60, virtio::desc_flag::next, 0);  // back to 0: a loop
    publish(0);
    EXPECT_TRUE(wait_needs_reset());
    EXPECT_EQ(used_idx(), 0);
    // §2.4: writing 0 resets the device, and the status reads 0 again.
    write<reg::DeviceStatus>(0);
    EXPECT_EQ(read<reg::DeviceStatus>(), 0u);
}

TEST_F(EmuVirtioNetRegisters, DescriptorIndexOutOfRangeNeedsReset) {
    start();
    descriptor(0, kData, 12, virtio::desc_flag::next, kSize + 3);
    publish(0);
    EXPECT_TRUE(wait_needs_reset());
}

TEST_F(EmuVirtioNetRegisters, UnmappedAddressNeedsReset) {
    start();
    descriptor(0, kIova + kBytes - 8, 72, 0, 0);  // runs past the end of the mapping
    publish(0);
    EXPECT_TRUE(wait_needs_reset());
}

TEST_F(EmuVirtioNetRegisters, HeadOutOfRangeAndAvailJumpNeedReset) {
    start();
    publish(kSize);  // no such head
    EXPECT_TRUE(wait_needs_reset());
    start();
    __atomic_store_n(reinterpret_cast<std::uint16_t*>(at(kAvail) + 2),
                     static_cast<std::uint16_t>(kSize + 1), __ATOMIC_RELEASE);
    EXPECT_TRUE(wait_needs_reset());
}

TEST_F(EmuVirtioNetRegisters, WritableDescriptorInTransmitChainNeedsReset) {
    start();
    descriptor(0, kData, 72, virtio::desc_flag::write, 0);
    publish(0);
    EXPECT_TRUE(wait_needs_reset());
}

}  // namespace
}  // namespace ring3::emu
