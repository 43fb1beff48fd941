// The block face's driver registry: matching by (vendor, device, class), the explicit list of
// ring3's drivers, and what an unknown or legacy-only device is told.
#include <gtest/gtest.h>

#include "fake_device.hpp"
#include "fake_virtio_device.hpp"
#include "ring3/block/open.hpp"
#include "ring3/block/registry.hpp"
#include "ring3/nvme/open.hpp"
#include "ring3/virtio/blk.hpp"
#include "test_support.hpp"

namespace ring3::block {
namespace {

using ring3::testing::error_of;

TEST(BlockRegistry, MatchesByVendorDeviceAndClass) {
    const auto drivers = block_drivers();
    const DriverEntry* nvme = find_driver(drivers, 0x1b36, 0x0010, 0x010802);
    ASSERT_NE(nvme, nullptr);
    EXPECT_STREQ(nvme->name, "NVMe");
    EXPECT_EQ(nvme->factory, &nvme::open_block);
    EXPECT_STREQ(find_driver(drivers, 0x8086, 0xf1a8, 0x010802)->name, "NVMe");  // any vendor
    const DriverEntry* blk = find_driver(drivers, 0x1af4, 0x1042, 0x010000);
    ASSERT_NE(blk, nullptr);
    EXPECT_STREQ(blk->name, "virtio-blk");
    EXPECT_EQ(blk->factory, &virtio::open_blk);
    EXPECT_EQ(find_driver(drivers, 0x1af4, 0x1041, 0x020000), nullptr);  // virtio-net
    EXPECT_EQ(find_driver(drivers, 0x1af4, 0x1042, 0x018000), nullptr);  // wrong class
    EXPECT_EQ(find_driver(drivers, 0x8086, 0x10d3, 0x020000), nullptr);  // e1000e
}

TEST(BlockRegistry, AnUnknownDeviceHearsWhatRing3Drives) {
    auto device = std::make_unique<ring3::testing::FakeDevice>("fake:e1000e");
    device->set_ids(0x8086, 0x10d3, 0x020000);
    const auto message =
        error_of([&] { open_block_device(std::move(device), block_drivers()); }, ENODEV);
    EXPECT_EQ(message,
              "open block device fake:e1000e: no block driver for [8086:10d3] class 02:00:00; "
              "ring3 drives NVMe (class 01:08:02), virtio-blk (1af4:1042, modern), virtio-blk "
              "(1af4:1001, transitional, with its modern interface)");
}

TEST(BlockRegistry, ALegacyOnlyVirtioBlkIsToldWhy) {
    virtio::testing::FakeVirtioBlk::Options o;
    o.legacy_only = true;
    virtio::testing::FakeVirtioBlk model(o);
    const auto message =
        error_of([&] { open_block_device(model.take(), block_drivers()); }, ENOTSUP);
    EXPECT_NE(message.find("[1af4:1001] is a legacy-only virtio device"), std::string::npos)
        << message;
}

TEST(BlockRegistry, OpensAVirtioBlkThroughTheList) {
    virtio::testing::FakeVirtioBlk model;
    auto device = open_block_device(model.take(), block_drivers());
    EXPECT_EQ(device->name(), "fake:virtio-blk");
    EXPECT_EQ(device->geometry().block_count, 2048u);
    device.reset();
}

}  // namespace
}  // namespace ring3::block
