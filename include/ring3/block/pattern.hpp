// The self-describing block pattern of `ring3 perf blk --verify` and the guest tests' host-side
// checker (tests/guest/checks/block_pattern.py implements the same function independently).
//
// A block at LBA `lba` written with seed `seed` (block size B, a multiple of 8, at least 32):
//   bytes  0..7   magic "R3BLKPAT" (ASCII)
//   bytes  8..15  lba, little-endian
//   bytes 16..23  seed, little-endian
//   bytes 24..B   little-endian 64-bit words w_0, w_1, ... of splitmix64 started from
//                 state = seed ^ (lba * 0x9e3779b97f4a7c15)
// splitmix64 (Steele, Lea, Flood 2014): state += 0x9e3779b97f4a7c15; z = state;
//   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
//   return z ^ (z >> 31).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace ring3::block {

inline constexpr char kPatternMagic[8] = {'R', '3', 'B', 'L', 'K', 'P', 'A', 'T'};

// Fills one block.
void fill_pattern(std::span<std::byte> block, std::uint64_t lba, std::uint64_t seed) noexcept;

// Checks one block; returns an empty string when it matches, else what is wrong ("LBA 42: magic
// missing (block never written?)", "LBA 42: holds LBA 17's data", "LBA 42: seed 5, expected 9",
// "LBA 42: byte 1000 differs").
std::string check_pattern(std::span<const std::byte> block, std::uint64_t lba, std::uint64_t seed);

}  // namespace ring3::block
