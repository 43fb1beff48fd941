#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ring3/core/error.hpp"
#include "ring3/core/fence.hpp"
#include "ring3/core/file.hpp"
#include "ring3/core/mapping.hpp"
#include "ring3/core/unique_fd.hpp"
#include "test_support.hpp"

namespace ring3 {
namespace {

TEST(Error, ComposesOperationObjectAndReason) {
    const Error e("open", "/dev/vfio/7", ENOENT);
    EXPECT_STREQ(e.what(), "open /dev/vfio/7: No such file or directory");
    EXPECT_EQ(e.errnum(), ENOENT);
    EXPECT_EQ(e.operation(), "open");
    EXPECT_EQ(e.object(), "/dev/vfio/7");

    const auto invalid = Error::invalid("map BAR 7", "0000:00:02.0", "no such BAR (0-5)");
    EXPECT_STREQ(invalid.what(), "map BAR 7 0000:00:02.0: no such BAR (0-5)");
    EXPECT_EQ(invalid.errnum(), EINVAL);
}

TEST(UniqueFd, OpenFailureNamesThePath) {
    try {
        UniqueFd::open("/nonexistent/ring3", O_RDONLY);
        FAIL() << "open succeeded";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "open /nonexistent/ring3: No such file or directory");
    }
}

TEST(UniqueFd, ClosesOnceAndMoves) {
    auto fd = UniqueFd::open("/dev/null", O_RDONLY);
    const int raw = fd.get();
    ASSERT_GE(raw, 0);
    UniqueFd moved(std::move(fd));
    EXPECT_FALSE(fd);  // NOLINT(bugprone-use-after-move): moved-from state is specified
    EXPECT_EQ(moved.get(), raw);
    moved.reset();
    EXPECT_EQ(fcntl(raw, F_GETFD), -1);  // closed
}

TEST(Mapping, MapsAndUnmaps) {
    auto fd = UniqueFd::open("/dev/zero", O_RDWR);
    auto mapping =
        Mapping::map(fd.get(), 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, 0, "/dev/zero");
    ASSERT_TRUE(mapping);
    std::memset(mapping.get(), 0xab, mapping.size());
    Mapping other = std::move(mapping);
    EXPECT_FALSE(mapping);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(static_cast<unsigned char>(other.data()[4095]), 0xab);
    EXPECT_THROW(Mapping::map(-1, 4096, PROT_READ, MAP_SHARED, 0, "bad fd"), Error);
}

TEST(File, ReadsWholeFilesOfAnySize) {
    const testing::TempDir dir("ring3-core");
    const std::string empty = (dir.path() / "empty").string();
    const std::string large = (dir.path() / "large").string();
    testing::write_file(empty, "");
    std::string text;
    for (int i = 0; text.size() < 200 * 1024; ++i) {  // several read(2) calls
        text += std::to_string(i) + '\n';
    }
    testing::write_file(large, text);
    EXPECT_EQ(read_file(empty), "");
    EXPECT_EQ(read_file(large), text);
    EXPECT_EQ(read_optional_file(large), text);
}

TEST(File, MissingFileIsAnErrorOrNothing) {
    const testing::TempDir dir("ring3-core");
    const std::string missing = (dir.path() / "missing").string();
    const std::string under_file = (dir.path() / "file/missing").string();
    testing::write_file(dir.path() / "file", "x");
    EXPECT_EQ(testing::error_of([&] { read_file(missing); }, ENOENT),
              "open " + missing + ": No such file or directory");
    EXPECT_EQ(testing::error_of([&] { read_file(under_file); }, ENOTDIR),
              "open " + under_file + ": Not a directory");
    EXPECT_EQ(read_optional_file(missing), std::nullopt);
    EXPECT_EQ(read_optional_file(under_file), std::nullopt);  // a path through a file
    EXPECT_EQ(testing::error_of([&] { read_optional_file(dir.path().string()); }, EISDIR),
              "read " + dir.path().string() + ": Is a directory");
}

// Dekker's litmus test over the asymmetric pair: each thread stores its flag, fences, and loads
// the other's. Without a store-load barrier on both sides x86 lets both loads see 0 (the
// stores still sit in the store buffers); with light_fence() on one side and heavy_fence() on
// the other, at least one must see the other's store, in every round.
TEST(Fence, AsymmetricPairOrdersStoresBeforeLoads) {
    enable_asymmetric_fences();  // either answer: the fallback is a pair of full fences
    constexpr int kRounds = 20000;
    std::atomic<int> x{0};
    std::atomic<int> y{0};
    std::atomic<int> go{-1};
    std::atomic<int> finished{-1};
    std::vector<int> light_saw(kRounds, -1);
    std::thread light([&] {
        for (int i = 0; i < kRounds; ++i) {
            while (go.load(std::memory_order_acquire) != i) {
            }
            x.store(1, std::memory_order_relaxed);
            light_fence();
            light_saw[static_cast<std::size_t>(i)] = y.load(std::memory_order_relaxed);
            finished.store(i, std::memory_order_release);
        }
    });
    int both_missed = 0;
    for (int i = 0; i < kRounds; ++i) {
        x.store(0, std::memory_order_relaxed);
        y.store(0, std::memory_order_relaxed);
        go.store(i, std::memory_order_release);
        y.store(1, std::memory_order_relaxed);
        heavy_fence();
        const int heavy_saw = x.load(std::memory_order_relaxed);
        while (finished.load(std::memory_order_acquire) != i) {
        }
        if (heavy_saw == 0 && light_saw[static_cast<std::size_t>(i)] == 0) {
            ++both_missed;
        }
    }
    light.join();
    EXPECT_EQ(both_missed, 0) << "rounds in which neither thread saw the other's store";
}

}  // namespace
}  // namespace ring3
