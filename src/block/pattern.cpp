#include "ring3/block/pattern.hpp"

#include "ring3/block/block_device.hpp"

#include <fmt/core.h>

#include <cstring>

namespace ring3::block {
namespace {

constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ull;

std::uint64_t splitmix64(std::uint64_t& state) noexcept {
    state += kGolden;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void put64(std::byte* at, std::uint64_t value) noexcept {
    for (int i = 0; i < 8; ++i) {
        at[i] = static_cast<std::byte>(value >> (8 * i));
    }
}

std::uint64_t get64(const std::byte* at) noexcept {
    std::uint64_t value = 0;
    for (int i = 0; i < 8; ++i) {
        value |= static_cast<std::uint64_t>(at[i]) << (8 * i);
    }
    return value;
}

}  // namespace

void fill_pattern(std::span<std::byte> block, std::uint64_t lba, std::uint64_t seed) noexcept {
    std::memcpy(block.data(), kPatternMagic, 8);
    put64(block.data() + 8, lba);
    put64(block.data() + 16, seed);
    std::uint64_t state = seed ^ (lba * kGolden);
    for (std::size_t offset = 24; offset + 8 <= block.size(); offset += 8) {
        put64(block.data() + offset, splitmix64(state));
    }
}

std::string check_pattern(std::span<const std::byte> block, std::uint64_t lba, std::uint64_t seed) {
    if (block.size() < 32 || std::memcmp(block.data(), kPatternMagic, 8) != 0) {
        return fmt::format("LBA {}: magic missing (block never written?)", lba);
    }
    if (const auto stored = get64(block.data() + 8); stored != lba) {
        return fmt::format("LBA {}: holds LBA {}'s data", lba, stored);
    }
    if (const auto stored = get64(block.data() + 16); stored != seed) {
        return fmt::format("LBA {}: seed {}, expected {}", lba, stored, seed);
    }
    std::uint64_t state = seed ^ (lba * kGolden);
    for (std::size_t offset = 24; offset + 8 <= block.size(); offset += 8) {
        if (get64(block.data() + offset) != splitmix64(state)) {
            return fmt::format("LBA {}: byte {} differs", lba, offset);
        }
    }
    return {};
}

const char* to_string(Op op) noexcept {
    switch (op) {
        case Op::read:
            return "read";
        case Op::write:
            return "write";
        case Op::flush:
            return "flush";
        case Op::write_zeroes:
            return "write-zeroes";
        case Op::deallocate:
            return "deallocate";
    }
    return "?";
}

}  // namespace ring3::block
