// NVMe driver checks inside a QEMU guest (tests/guest/cases/nvme-*.sh put the controller on
// vfio-pci or uio_pci_generic and name it in RING3_NVME; RING3_BACKEND is "vfio" or "uio").
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ring3/block/open.hpp"
#include "ring3/block/pattern.hpp"
#include "ring3/core/error.hpp"
#include "ring3/nvme/block_device.hpp"

namespace ring3 {
namespace {

std::string env(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') {
        ADD_FAILURE() << name << " is not set by the guest case script";
        return "unset";
    }
    return value;
}

std::string spec() {
    return env("RING3_BACKEND") + ":" + env("RING3_NVME");
}

struct Tracker {
    unsigned done = 0;
    unsigned failed = 0;
    block::Status last;
};

void on_done(void* context, const block::Status& status) {
    auto* tracker = static_cast<Tracker*>(context);
    ++tracker->done;
    if (!status.ok()) {
        ++tracker->failed;
        tracker->last = status;
    }
}

// Writes (or reads and checks) `count` requests of `bs` bytes from LBA `start`, `depth` in flight.
void run(block::BlockDevice& device, block::Queue& queue, bool write, std::uint32_t bs,
         std::uint64_t start, unsigned count, std::uint64_t seed) {
    const auto g = device.geometry();
    const std::uint32_t blocks = bs / g.block_size;
    constexpr unsigned kDepth = 8;
    std::vector<dma::DmaBuffer> buffers;
    for (unsigned i = 0; i < kDepth; ++i) {
        buffers.push_back(device.dma_pool().allocate(bs, 4096));
    }
    Tracker tracker;
    unsigned submitted = 0;
    std::vector<std::uint64_t> lba_of(kDepth);
    std::vector<unsigned> finished_before(kDepth, 0);
    // Simple rounds: fill every buffer slot, wait for all, check, repeat.
    while (submitted < count) {
        const unsigned round = std::min(kDepth, count - submitted);
        for (unsigned i = 0; i < round; ++i) {
            const std::uint64_t lba = start + std::uint64_t{submitted + i} * blocks;
            lba_of[i] = lba;
            if (write) {
                for (std::uint32_t b = 0; b < blocks; ++b) {
                    block::fill_pattern(
                        buffers[i].bytes().subspan(std::size_t{b} * g.block_size, g.block_size),
                        lba + b, seed);
                }
            } else {
                std::memset(buffers[i].data(), 0, bs);
            }
            block::Request request;
            request.op = write ? block::Op::write : block::Op::read;
            request.lba = lba;
            request.blocks = blocks;
            request.data = buffers[i].data();
            request.callback = on_done;
            request.context = &tracker;
            ASSERT_EQ(queue.submit(request), 0);
        }
        const unsigned target = tracker.done + round;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (tracker.done < target) {
            queue.wait(std::chrono::milliseconds(100));
            ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "requests did not complete";
        }
        ASSERT_EQ(tracker.failed, 0u)
            << "error " << tracker.last.error << " device status " << tracker.last.device_code;
        if (!write) {
            for (unsigned i = 0; i < round; ++i) {
                for (std::uint32_t b = 0; b < blocks; ++b) {
                    const std::string problem = block::check_pattern(
                        buffers[i].bytes().subspan(std::size_t{b} * g.block_size, g.block_size),
                        lba_of[i] + b, seed);
                    ASSERT_EQ(problem, "");
                }
            }
        }
        submitted += round;
    }
}

TEST(Nvme, IdentifiesQemusController) {
    auto device = open_device(spec());
    nvme::Controller controller(*device);
    EXPECT_EQ(controller.info().serial, "ring3-nvme0");
    EXPECT_EQ(controller.info().version, 0x00010400u);
    ASSERT_FALSE(controller.namespaces().empty());
    EXPECT_EQ(controller.namespaces()[0].id, 1u);
    EXPECT_GT(controller.namespaces()[0].size, 0u);
    std::printf("model '%s' mdts %u max transfer %u sgl %d\n", controller.info().model.c_str(),
                controller.info().mdts, controller.max_transfer_bytes(),
                controller.info().supports_sgl());
}

class NvmeSizes : public ::testing::TestWithParam<std::tuple<std::uint32_t, std::string, bool>> {};

TEST_P(NvmeSizes, WritesAndReadsBackThePattern) {
    const auto [bs, mode_name, sgl] = GetParam();
    nvme::BlockOptions options;
    options.mode = *irq::parse_wait_mode(mode_name);
    options.use_sgl = sgl;
    auto device = std::make_unique<nvme::NvmeBlockDevice>(open_device(spec()), options);
    auto& queue = device->open_queue(0, 32, options.mode);
    EXPECT_EQ(static_cast<nvme::IoQueue&>(queue).uses_sgl(), sgl);
    const std::uint64_t seed = 0x5eed0000u + bs;
    const unsigned count = std::min<unsigned>(64, static_cast<unsigned>((8u << 20) / bs));
    run(*device, queue, true, bs, 0, count, seed);
    run(*device, queue, false, bs, 0, count, seed);
    std::printf("%s: %u x %u bytes written and verified (%s mode, %s)\n", device->name().c_str(),
                count, bs, mode_name.c_str(), sgl ? "SGL" : "PRP");
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, NvmeSizes,
    ::testing::Values(std::make_tuple(4096u, std::string("poll"), false),
                      std::make_tuple(8192u, std::string("poll"), false),     // PRP2
                      std::make_tuple(65536u, std::string("poll"), false),    // PRP list
                      std::make_tuple(2u << 20, std::string("poll"), false),  // split at MDTS
                      std::make_tuple(65536u, std::string("poll"), true),
                      std::make_tuple(2u << 20, std::string("poll"), true),
                      std::make_tuple(65536u, std::string("interrupt"), false),
                      std::make_tuple(65536u, std::string("adaptive"), true)));

}  // namespace
}  // namespace ring3
