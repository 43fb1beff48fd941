// emu::check_blk_request: the virtio-blk model's verdict on a request's header and chain shape
// (VIRTIO 1.2 §5.2.6), before any data moves.
#include <gtest/gtest.h>

#include "ring3/emu/virtio_blk.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::emu {
namespace {

constexpr std::uint64_t kCapacity = 1024;  // sectors
constexpr std::uint32_t kSegMax = 8;

BlkRequestShape shape(std::uint32_t type, std::uint64_t sector, std::uint64_t readable,
                      std::uint64_t writable, unsigned descriptors = 3) {
    BlkRequestShape r;
    r.type = type;
    r.sector = sector;
    r.readable = readable;
    r.writable = writable;
    r.descriptors = descriptors;
    return r;
}

BlkVerdict verdict(const BlkRequestShape& r) {
    return check_blk_request(r, kCapacity, kSegMax).verdict;
}

TEST(EmuVirtioBlkRequest, GoodReadsWritesFlushAndGetId) {
    const BlkCheck read =
        check_blk_request(shape(virtio::blk_type::in, 8, 16, 4096 + 1), kCapacity, kSegMax);
    EXPECT_EQ(read.verdict, BlkVerdict::ok);
    EXPECT_EQ(read.data_bytes, 4096u);
    const BlkCheck write =
        check_blk_request(shape(virtio::blk_type::out, 0, 16 + 512, 1), kCapacity, kSegMax);
    EXPECT_EQ(write.verdict, BlkVerdict::ok);
    EXPECT_EQ(write.data_bytes, 512u);
    EXPECT_EQ(verdict(shape(virtio::blk_type::flush, 0, 16, 1, 2)), BlkVerdict::ok);
    const BlkCheck id =
        check_blk_request(shape(virtio::blk_type::get_id, 0, 16, 21), kCapacity, kSegMax);
    EXPECT_EQ(id.verdict, BlkVerdict::ok);
    EXPECT_EQ(id.data_bytes, VirtioBlkDevice::kIdBytes);
    // The last sectors of the disk, exactly.
    EXPECT_EQ(verdict(shape(virtio::blk_type::out, kCapacity - 2, 16 + 1024, 1)), BlkVerdict::ok);
}

TEST(EmuVirtioBlkRequest, NoStatusByteCannotBeAnswered) {
    EXPECT_EQ(verdict(shape(virtio::blk_type::out, 0, 16 + 512, 0)), BlkVerdict::no_status);
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 0, 0)), BlkVerdict::no_status);
}

TEST(EmuVirtioBlkRequest, ShortHeaderIsAnIoError) {
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 15, 513)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 0, 513)), BlkVerdict::ioerr);
}

TEST(EmuVirtioBlkRequest, DataNotInWholeSectorsIsAnIoError) {
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 16, 1)), BlkVerdict::ioerr);  // no data
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 16, 100 + 1)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::out, 0, 16 + 513, 1)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::out, 0, 16, 1)), BlkVerdict::ioerr);
}

TEST(EmuVirtioBlkRequest, SectorsBeyondTheCapacityAreAnIoError) {
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, kCapacity, 16, 513)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::out, kCapacity - 1, 16 + 1024, 1)),
              BlkVerdict::ioerr);
    // A sector so large that sector * 512 or sector + count would wrap.
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, ~std::uint64_t{0}, 16, 513)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::out, std::uint64_t{1} << 55, 16 + 512, 1)),
              BlkVerdict::ioerr);
}

TEST(EmuVirtioBlkRequest, DataInTheWrongDirectionIsAnIoError) {
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 16 + 512, 513)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::out, 0, 16 + 512, 513)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::flush, 0, 16 + 512, 1)), BlkVerdict::ioerr);
    EXPECT_EQ(verdict(shape(virtio::blk_type::get_id, 0, 16, 20)), BlkVerdict::ioerr);  // 19 + 1
}

TEST(EmuVirtioBlkRequest, MoreDescriptorsThanSegMaxIsAnIoError) {
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 16, 4096 + 1, kSegMax + 2)), BlkVerdict::ok);
    EXPECT_EQ(verdict(shape(virtio::blk_type::in, 0, 16, 4096 + 1, kSegMax + 3)),
              BlkVerdict::ioerr);
}

TEST(EmuVirtioBlkRequest, UnknownTypesAreUnsupported) {
    EXPECT_EQ(verdict(shape(virtio::blk_type::discard, 0, 32, 1)), BlkVerdict::unsupported);
    EXPECT_EQ(verdict(shape(0x1234, 0, 16, 1)), BlkVerdict::unsupported);
}

}  // namespace
}  // namespace ring3::emu
