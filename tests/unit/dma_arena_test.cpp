#include <gtest/gtest.h>

#include <cstring>

#include "fake_iova_space.hpp"
#include "ring3/core/error.hpp"
#include "ring3/dma/arena.hpp"
#include "test_support.hpp"

namespace ring3::dma {
namespace {

using ring3::testing::error_of;
using testing::FakeIovaSpace;

ArenaOptions small_arena(std::size_t chunks = 4) {
    ArenaOptions options;
    options.chunk_size = 64 * 1024;
    options.max_size = chunks * options.chunk_size;
    options.huge_pages = HugePages::never;
    options.name = "test-arena";
    return options;
}

TEST(DmaArena, RejectsBadOptions) {
    auto options = small_arena();
    options.chunk_size = 3 * 4096;
    EXPECT_EQ(error_of([&] { DmaArena::create(options); }),
              "create DMA arena test-arena: chunk size 12288 is not a power of two");
    options = small_arena();
    options.max_size = options.chunk_size + 4096;
    EXPECT_EQ(error_of([&] { DmaArena::create(options); }),
              "create DMA arena test-arena: maximum size 69632 is not a multiple of the chunk "
              "size 65536");
}

TEST(DmaArena, GrowsInChunksThatAreBackedByTheMemfd) {
    auto arena = DmaArena::create(small_arena());
    EXPECT_FALSE(arena->huge_pages());
    EXPECT_EQ(arena->size(), 0u);
    const ChunkView first = arena->grow();
    const ChunkView second = arena->grow();
    EXPECT_EQ(second.cpu, first.cpu + first.size);  // chunks are adjacent in the reservation
    EXPECT_EQ(second.memfd_offset, 65536u);
    std::memset(second.cpu, 0x5a, second.size);
    // The same memory through the memfd: what a vfio-user server would map.
    unsigned char byte = 0;
    ASSERT_EQ(pread(arena->memfd(), &byte, 1, 65536 + 100), 1);
    EXPECT_EQ(byte, 0x5a);
    EXPECT_TRUE(arena->contains(second.cpu + second.size - 1));
    EXPECT_FALSE(arena->contains(second.cpu + second.size));
    EXPECT_FALSE(arena->contains(second.cpu + second.size - 4, 8));
}

TEST(DmaArena, FullArenaIsAnErrorNotACrash) {
    auto arena = DmaArena::create(small_arena(2));
    arena->grow();
    arena->grow();
    EXPECT_EQ(error_of([&] { arena->grow(); }),
              "grow DMA arena test-arena: full: 2 chunks of 65536 bytes");
    EXPECT_EQ(arena->chunk_count(), 2u);
}

TEST(DmaArena, TranslatesThroughAContiguousSpace) {
    auto arena = DmaArena::create(small_arena());
    arena->grow();
    FakeIovaSpace iommu(64 * 1024, false);
    const auto index = arena->attach(iommu);  // maps the existing chunk...
    const ChunkView second = arena->grow();   // ...and every later one
    EXPECT_EQ(iommu.mapped, (std::vector<std::uint64_t>{0, 65536}));
    EXPECT_EQ(arena->iova(arena->base(), index), 0x10000000u);
    EXPECT_EQ(arena->iova(arena->base() + 100, index), 0x10000000u + 100);
    EXPECT_EQ(arena->iova(second.cpu + 4095, index), 0x10000000u + 65536 + 4095);
    arena->detach(iommu);
    EXPECT_EQ(iommu.unmapped, (std::vector<std::uint64_t>{0, 65536}));
}

TEST(DmaArena, TranslatesPerGranuleThroughAScatteredSpace) {
    FakeIovaSpace physical(16 * 1024, true);  // a space must outlive the arena it is attached to
    auto arena = DmaArena::create(small_arena());
    const auto index = arena->attach(physical);
    arena->grow();
    EXPECT_EQ(arena->granule(index), 16u * 1024);
    EXPECT_EQ(arena->max_contiguous(), 16u * 1024);
    for (std::uint64_t granule = 0; granule < 4; ++granule) {
        const std::uint64_t expected = 0x80000000ull - granule * 16 * 16384;
        EXPECT_EQ(arena->iova(arena->base() + granule * 16384 + 123, index), expected + 123);
    }
}

TEST(DmaArena, FailedMappingUndoesTheChunk) {
    FakeIovaSpace iommu(64 * 1024, false);
    auto arena = DmaArena::create(small_arena());
    arena->attach(iommu);
    iommu.fail_next_map = true;
    EXPECT_EQ(error_of([&] { arena->grow(); }), "map fake IOVA space: injected failure");
    EXPECT_EQ(arena->chunk_count(), 0u);
    arena->grow();  // and the arena still works
    EXPECT_EQ(arena->chunk_count(), 1u);
}

TEST(DmaArena, RejectsASpaceWhoseGranuleDoesNotFit) {
    auto arena = DmaArena::create(small_arena());
    FakeIovaSpace odd(3 * 4096, false);
    EXPECT_EQ(error_of([&] { arena->attach(odd); }),
              "attach DMA arena test-arena: fake IOVA space has a granule of 12288 bytes; it "
              "must be a power of two between the page size 4096 and the chunk size 65536");
    FakeIovaSpace small(2048, false);
    EXPECT_THROW(arena->attach(small), Error);
}

TEST(DmaArena, AnIommuGranuleIsTheChunk) {
    FakeIovaSpace iommu(IovaSpace::kAnyGranule, false);
    auto arena = DmaArena::create(small_arena());
    const auto index = arena->attach(iommu);
    EXPECT_EQ(arena->granule(index), 65536u);
}

TEST(DmaArena, RequiredHugePagesFailClearlyWhenNoneAreReserved) {
    // This machine reserves no hugepages (HugePages_Total 0 in CI); a system with some would map.
    auto options = small_arena();
    options.chunk_size = 2 << 20;
    options.max_size = 4 << 20;
    options.huge_pages = HugePages::required;
    try {
        auto arena = DmaArena::create(options);
        EXPECT_TRUE(arena->huge_pages());
        EXPECT_EQ(arena->page_size(), 2u << 20);
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(),
                     "create DMA arena test-arena: hugepages required but none can be mapped; "
                     "reserve some with `echo N > /proc/sys/vm/nr_hugepages`");
        EXPECT_EQ(e.errnum(), ENOMEM);
    }
}

}  // namespace
}  // namespace ring3::dma
