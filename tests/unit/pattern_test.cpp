#include "ring3/block/pattern.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

namespace ring3::block {
namespace {

std::vector<std::byte> pattern(std::size_t size, std::uint64_t lba, std::uint64_t seed) {
    std::vector<std::byte> block(size);
    fill_pattern(block, lba, seed);
    return block;
}

std::uint64_t word_at(const std::vector<std::byte>& block, std::size_t offset) {
    std::uint64_t value = 0;
    for (int i = 7; i >= 0; --i) {
        value =
            value << 8 | static_cast<std::uint64_t>(block[offset + static_cast<std::size_t>(i)]);
    }
    return value;
}

// The same bytes tests/guest/checks/block_pattern.py computes on its own (KNOWN_BLOCK there).
TEST(Pattern, KnownAnswerSharedWithThePythonChecker) {
    const auto block = pattern(64, 5, 42);
    const std::array<std::uint8_t, 64> expected = {
        0x52, 0x33, 0x42, 0x4c, 0x4b, 0x50, 0x41, 0x54,  // "R3BLKPAT"
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // LBA 5
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // seed 42
        0xc1, 0xe9, 0x4d, 0x1b, 0x34, 0xc8, 0x90, 0x32,  // 0x3290c8341b4de9c1
        0xed, 0x4e, 0x3e, 0x9e, 0xbb, 0xae, 0x93, 0x9e,  // 0x9e93aebb9e3e4eed
        0xc3, 0x89, 0xc0, 0x4a, 0x5a, 0x6c, 0x34, 0xb4,  // 0xb4346c5a4ac089c3
        0x76, 0x3f, 0xd2, 0x9b, 0x8d, 0x8f, 0x86, 0xcc,  // 0xcc868f8d9bd23f76
        0xb5, 0x13, 0xca, 0x49, 0x2a, 0x71, 0xa8, 0x38,  // 0x38a8712a49ca13b5
    };
    ASSERT_EQ(block.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        EXPECT_EQ(static_cast<std::uint8_t>(block[i]), expected[i]) << "byte " << i;
    }
}

// splitmix64's published first output from state 0 (Vigna's reference splitmix64.c): the first
// word of LBA 0 under seed 0.
TEST(Pattern, FirstWordIsSplitmix64FromTheSeed) {
    EXPECT_EQ(word_at(pattern(32, 0, 0), 24), 0xe220a8397b1dcdafull);
}

TEST(Pattern, RoundTripsForEveryBlockSize) {
    for (const std::size_t size : {32u, 512u, 520u, 4096u, 65536u}) {
        for (const std::uint64_t lba : {0ull, 1ull, 123456789ull, ~0ull}) {
            const auto block = pattern(size, lba, 77);
            EXPECT_EQ(check_pattern(block, lba, 77), "") << size << " " << lba;
        }
    }
}

TEST(Pattern, BlocksDifferByLbaAndSeed) {
    EXPECT_NE(pattern(512, 1, 7), pattern(512, 2, 7));
    EXPECT_NE(pattern(512, 1, 7), pattern(512, 1, 8));
    // Not only in the header.
    const auto a = pattern(512, 1, 7);
    const auto b = pattern(512, 2, 7);
    EXPECT_NE(std::memcmp(a.data() + 24, b.data() + 24, 512 - 24), 0);
}

TEST(Pattern, SaysWhatIsWrong) {
    EXPECT_EQ(check_pattern(std::vector<std::byte>(512), 7, 9),
              "LBA 7: magic missing (block never written?)");
    EXPECT_EQ(check_pattern(pattern(512, 8, 9), 7, 9), "LBA 7: holds LBA 8's data");
    EXPECT_EQ(check_pattern(pattern(512, 7, 5), 7, 9), "LBA 7: seed 5, expected 9");
    auto flipped = pattern(512, 7, 9);
    flipped[100] ^= std::byte{0x40};
    EXPECT_EQ(check_pattern(flipped, 7, 9), "LBA 7: byte 96 differs");  // the word holding it
    auto last = pattern(512, 7, 9);
    last[511] ^= std::byte{1};
    EXPECT_EQ(check_pattern(last, 7, 9), "LBA 7: byte 504 differs");
}

TEST(Pattern, ABlockTooSmallForTheHeaderNeverMatches) {
    std::vector<std::byte> small(24);
    std::memcpy(small.data(), kPatternMagic, 8);
    EXPECT_EQ(check_pattern(small, 0, 0), "LBA 0: magic missing (block never written?)");
}

}  // namespace
}  // namespace ring3::block
