#include <gtest/gtest.h>

#include <set>

#include "../../src/dma/poison.hpp"
#include "fake_iova_space.hpp"
#include "ring3/core/error.hpp"
#include "ring3/dma/pool.hpp"

namespace ring3::dma {
namespace {

using testing::FakeIovaSpace;

class DmaPoolTest : public ::testing::Test {
  protected:
    DmaPoolTest() {
        ArenaOptions options;
        options.chunk_size = 64 * 1024;
        options.max_size = 4 * options.chunk_size;
        options.huge_pages = HugePages::never;
        options.name = "pool-arena";
        arena = DmaArena::create(options);
        space = arena->attach(iommu);
    }

    FakeIovaSpace iommu{16 * 1024, true};  // 16 KiB granules at unrelated addresses
    std::unique_ptr<DmaArena> arena;
    std::size_t space = 0;
};

TEST_F(DmaPoolTest, AllocationsAreAlignedZeroedAndTranslated) {
    DmaPool pool(*arena, space);
    auto a = pool.allocate(100, 64);
    auto b = pool.allocate(4096, 4096);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data()) % 64, 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % 4096, 0u);
    EXPECT_EQ(b.iova() % 4096, 0u);
    EXPECT_EQ(a.iova(), arena->iova(a.data(), space));
    for (const auto byte : b.bytes()) {
        ASSERT_EQ(byte, std::byte{0});
    }
    EXPECT_EQ(pool.bytes_in_use(), 4196u);
}

TEST_F(DmaPoolTest, ObjectsNeverCrossAGranule) {
    DmaPool pool(*arena, space);
    std::vector<DmaBuffer> buffers;
    for (int i = 0; i < 20; ++i) {
        buffers.push_back(pool.allocate(6000, 64));
        const auto start = static_cast<std::size_t>(buffers.back().data() - arena->base());
        EXPECT_EQ(start / 16384, (start + 6000 - 1) / 16384) << "buffer " << i;
        // Contiguous for the device: the last byte's IOVA follows from the first's.
        EXPECT_EQ(arena->iova(buffers.back().data() + 5999, space), buffers.back().iova() + 5999);
    }
}

TEST_F(DmaPoolTest, TooLargeOrBadAlignmentIsAnError) {
    DmaPool pool(*arena, space);
    try {
        pool.allocate(16 * 1024 + 1);
        FAIL();
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(),
                     "allocate DMA memory 16385 bytes aligned to 64: larger than 16384 bytes, the "
                     "most the device sees contiguous in this arena");
    }
    EXPECT_THROW(pool.allocate(64, 48), Error);
    EXPECT_THROW(pool.allocate(0), Error);
}

TEST_F(DmaPoolTest, ExhaustionIsAnErrorAndFreedMemoryIsReused) {
    DmaPool pool(*arena, space);
    std::vector<DmaBuffer> all;
    for (int i = 0; i < 16; ++i) {  // 4 chunks x 4 granules
        all.push_back(pool.allocate(16 * 1024, 16 * 1024));
    }
    try {
        pool.allocate(64);
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.errnum(), ENOMEM);
        EXPECT_STREQ(e.what(), "grow DMA arena pool-arena: full: 4 chunks of 65536 bytes");
    }
    std::byte* freed = all[5].data();
    all[5].reset();
    auto again = pool.allocate(16 * 1024, 4096);
    EXPECT_EQ(again.data(), freed);
}

TEST_F(DmaPoolTest, PoolNeedsAnAttachedSpace) {
    EXPECT_THROW(DmaPool(*arena, 1), Error);
}

TEST_F(DmaPoolTest, BufferPoolHandsOutEveryBufferOnce) {
    DmaPool pool(*arena, space);
    BufferPool buffers(pool, 2048, 100);
    EXPECT_EQ(buffers.capacity(), 100u);
    std::set<std::byte*> seen;
    std::vector<Buffer> taken;
    Buffer b;
    while (buffers.get(b)) {
        EXPECT_TRUE(seen.insert(b.data).second);
        EXPECT_EQ(b.iova, arena->iova(b.data, space));
        EXPECT_EQ(arena->iova(b.data + 2047, space), b.iova + 2047);
        taken.push_back(b);
    }
    EXPECT_EQ(taken.size(), 100u);
    EXPECT_EQ(buffers.available(), 0u);
    buffers.put(taken[42]);
    ASSERT_TRUE(buffers.get(b));
    EXPECT_EQ(b.index, 42u);
    EXPECT_EQ(b.data, taken[42].data);
    for (const auto& t : taken) {
        buffers.put(t);
    }
    EXPECT_EQ(buffers.available(), 100u);
}

TEST_F(DmaPoolTest, BufferLargerThanAGranuleIsRejected) {
    DmaPool pool(*arena, space);
    EXPECT_THROW(BufferPool(pool, 20000, 4), Error);
}

using DmaPoolDeathTest = DmaPoolTest;

TEST_F(DmaPoolDeathTest, DoubleFreeOfABufferIsReported) {
    DmaPool pool(*arena, space);
    BufferPool buffers(pool, 512, 8);
    Buffer b;
    ASSERT_TRUE(buffers.get(b));
    buffers.put(b);
    EXPECT_DEATH(buffers.put(b), "double free of DMA buffer 0");
}

#ifdef RING3_ASAN
// In the sanitizer build a free DMA buffer is poisoned: touching it is a use-after-poison report.
TEST_F(DmaPoolDeathTest, UseAfterPutIsReportedByAsan) {
    DmaPool pool(*arena, space);
    BufferPool buffers(pool, 512, 8);
    Buffer b;
    ASSERT_TRUE(buffers.get(b));
    b.data[10] = std::byte{1};  // fine while held
    buffers.put(b);
    EXPECT_DEATH(static_cast<void>(*reinterpret_cast<volatile std::byte*>(b.data + 10)),
                 "use-after-poison");
}

TEST_F(DmaPoolDeathTest, UseAfterFreeOfADmaBufferIsReportedByAsan) {
    DmaPool pool(*arena, space);
    auto buffer = pool.allocate(256);
    std::byte* stale = buffer.data();
    buffer.reset();
    EXPECT_DEATH(static_cast<void>(*reinterpret_cast<volatile std::byte*>(stale)),
                 "use-after-poison");
}
#endif

}  // namespace
}  // namespace ring3::dma
