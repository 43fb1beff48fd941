#!/usr/bin/env python3
"""Host-side check of ring3's block pattern in a raw disk image (an NVMe or virtio-blk backing file).

The pattern is the one `ring3 perf blk --verify` writes (include/ring3/block/pattern.hpp); this is
an independent implementation of that text, sharing no code with the C++. A block at LBA `lba`
written with seed `seed` (block size B, a multiple of 8, at least 32):
  bytes  0..7   b"R3BLKPAT"
  bytes  8..15  lba, little-endian
  bytes 16..23  seed, little-endian
  bytes 24..B   little-endian 64-bit words of splitmix64 started from seed ^ (lba * 0x9e3779b97f4a7c15)

  block_pattern.py IMAGE --block-size 512 --seed S [--first-lba L] [--count N] [--offset BYTES]
      checks blocks L .. L+N-1 (default: to the end of the file) of a namespace whose LBA 0 sits at
      byte BYTES of IMAGE; prints "verified N blocks" and exits 0, or the first mismatches (worded
      as the C++ check_pattern() words them) and exits 1. Exit 2: bad arguments or a short file.
  block_pattern.py --selftest [--ring3 PATH]
      known answers shared with tests/unit/pattern_test.cpp, the mismatch messages, and, with the
      ring3 tool, files written by `ring3 perf pattern` (the C++ fill_pattern) compared byte for
      byte.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MAGIC = b"R3BLKPAT"
HEADER = 24

# Known answer, also asserted by tests/unit/pattern_test.cpp: the 64-byte block of LBA 5, seed 42
# (magic, LBA, seed, then the words 0x3290c8341b4de9c1, 0x9e93aebb9e3e4eed, 0xb4346c5a4ac089c3,
# 0xcc868f8d9bd23f76, 0x38a8712a49ca13b5 little-endian). And splitmix64's published first output
# from state 0, 0xe220a8397b1dcdaf, is the first word of LBA 0 under seed 0.
KNOWN_BLOCK = bytes.fromhex(
    "5233424c4b504154" "0500000000000000" "2a00000000000000"
    "c1e94d1b34c89032" "ed4e3e9ebbae939e" "c389c04a5a6c34b4" "763fd29b8d8f86cc" "b513ca492a71a838")
SPLITMIX_FIRST_FROM_ZERO = 0xE220A8397B1DCDAF


def words(lba, seed, count):
    """The first `count` pattern words of block `lba` under `seed` (splitmix64, Steele et al. 2014)."""
    state = (seed ^ (lba * GOLDEN)) & MASK
    out = []
    for _ in range(count):
        state = (state + GOLDEN) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


def expected_block(lba, seed, block_size):
    n = (block_size - HEADER) // 8
    return MAGIC + struct.pack("<QQ", lba & MASK, seed & MASK) + struct.pack(f"<{n}Q", *words(lba, seed, n))


def describe(actual, lba, seed, expected=None):
    """What is wrong with `actual` as block `lba`, in check_pattern()'s words; None if it matches."""
    if len(actual) < 32 or actual[:8] != MAGIC:
        return f"LBA {lba}: magic missing (block never written?)"
    stored_lba, stored_seed = struct.unpack_from("<QQ", actual, 8)
    if stored_lba != lba:
        return f"LBA {lba}: holds LBA {stored_lba}'s data"
    if stored_seed != seed:
        return f"LBA {lba}: seed {stored_seed}, expected {seed}"
    if expected is None:
        expected = expected_block(lba, seed, len(actual))
    for offset in range(HEADER, len(actual) - 7, 8):
        if actual[offset:offset + 8] != expected[offset:offset + 8]:
            return f"LBA {lba}: byte {offset} differs"
    return None


class ShortFile(Exception):
    pass


def check_file(path, block_size, seed, first_lba=0, count=None, offset=0, max_report=10):
    """Checks blocks first_lba .. first_lba+count-1; returns (checked, mismatch_count, messages)."""
    if block_size < 32 or block_size % 8:
        raise ValueError(f"block size {block_size}: must be a multiple of 8, at least 32")
    file_size = os.path.getsize(path)
    start = offset + first_lba * block_size
    if count is None:
        count = max(0, (file_size - start) // block_size)
    end = start + count * block_size
    if end > file_size:
        raise ShortFile(f"{path}: {file_size} bytes, but LBA {first_lba + count - 1} ends at byte {end}")
    mismatches = 0
    messages = []
    per_read = max(1, (1 << 20) // block_size)
    with open(path, "rb") as f:
        f.seek(start)
        lba = first_lba
        left = count
        while left:
            n = min(per_read, left)
            data = f.read(n * block_size)
            for i in range(n):
                actual = data[i * block_size:(i + 1) * block_size]
                expected = expected_block(lba + i, seed, block_size)
                if actual != expected:
                    mismatches += 1
                    if len(messages) < max_report:
                        messages.append(describe(actual, lba + i, seed, expected))
            lba += n
            left -= n
    return count, mismatches, messages


def selftest(ring3):
    failures = []

    def expect(condition, what):
        if not condition:
            failures.append(what)

    # Known answer (pattern_test.cpp asserts the same bytes of the C++ fill_pattern).
    known = expected_block(5, 42, 64)
    expect(known == KNOWN_BLOCK, f"known block differs: {known.hex()}")
    expect(describe(known, 5, 42) is None, "the known block does not check")
    expect(words(0, 0, 1) == [SPLITMIX_FIRST_FROM_ZERO], "splitmix64 from state 0")

    # The messages, for each way a block can be wrong.
    block = bytearray(expected_block(7, 9, 512))
    block[100] ^= 0x40
    expect(describe(bytes(block), 7, 9) == "LBA 7: byte 96 differs", describe(bytes(block), 7, 9))
    expect(describe(expected_block(8, 9, 512), 7, 9) == "LBA 7: holds LBA 8's data", "moved block")
    expect(describe(expected_block(7, 5, 512), 7, 9) == "LBA 7: seed 5, expected 9", "wrong seed")
    expect(describe(bytes(512), 7, 9) == "LBA 7: magic missing (block never written?)", "zeros")

    if ring3:
        with tempfile.TemporaryDirectory(prefix="block-pattern-") as tmp:
            cases = [  # block size, seed, first LBA, count, byte offset of LBA 0
                (512, 0, 0, 64, 0),
                (512, 42, 5, 3, 0),
                (4096, MASK, 1000, 16, 0),
                (520, 123456789, 3, 5, 4096),
                (32, 1 << 63, 0, 100, 512),
            ]
            for bs, seed, first, count, offset in cases:
                path = os.path.join(tmp, f"image-{bs}-{first}")
                subprocess.run([ring3, "perf", "pattern", path, "--block-size", str(bs), "--seed",
                                str(seed), "--first-lba", str(first), "--count", str(count),
                                "--offset", str(offset)], check=True)
                case = f"bs {bs} seed {seed} LBA {first}+{count} offset {offset}"
                with open(path, "rb") as f:
                    f.seek(offset + first * bs)
                    written = f.read(count * bs)
                mine = b"".join(expected_block(first + i, seed, bs) for i in range(count))
                expect(written == mine, f"{case}: ring3 perf pattern wrote other bytes")
                result = check_file(path, bs, seed, first, count, offset)
                expect(result == (count, 0, []), f"{case}: {result}")
            # A flipped byte and a block from elsewhere, found and worded as in C++.
            path = os.path.join(tmp, "image-512-0")
            with open(path, "r+b") as f:
                f.seek(10 * 512 + 300)
                byte = f.read(1)
                f.seek(10 * 512 + 300)
                f.write(bytes([byte[0] ^ 1]))
                f.seek(20 * 512)
                f.write(expected_block(21, 0, 512))
            result = check_file(path, 512, 0)
            expect(result == (64, 2, ["LBA 10: byte 296 differs", "LBA 20: holds LBA 21's data"]),
                   f"corrupted image: {result}")
            expect(check_file(path, 512, 0, 11, 9) == (9, 0, []), "range that skips the damage")

    for failure in failures:
        print(f"selftest: {failure}")
    if failures:
        return 1
    print("selftest passed" + (" (with ring3 perf pattern)" if ring3 else " (without ring3: known answers only)"))
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", nargs="?", help="raw disk image (backing file)")
    parser.add_argument("--block-size", type=int, help="bytes per logical block")
    parser.add_argument("--seed", type=int, help="the seed of `ring3 perf blk --verify`")
    parser.add_argument("--first-lba", type=int, default=0)
    parser.add_argument("--count", type=int, help="blocks to check (default: to the end of the file)")
    parser.add_argument("--offset", type=int, default=0, help="byte offset of LBA 0 in the image")
    parser.add_argument("--max-report", type=int, default=10, help="mismatches to print")
    parser.add_argument("--selftest", action="store_true")
    parser.add_argument("--ring3", help="the ring3 tool, for --selftest")
    args = parser.parse_args(argv)
    if args.selftest:
        return selftest(args.ring3)
    if args.image is None or args.block_size is None or args.seed is None:
        parser.error("IMAGE, --block-size and --seed are required")
    try:
        checked, mismatches, messages = check_file(args.image, args.block_size, args.seed,
                                                   args.first_lba, args.count, args.offset,
                                                   args.max_report)
    except (ValueError, ShortFile, OSError) as e:
        print(f"block_pattern: {e}", file=sys.stderr)
        return 2
    if mismatches == 0:
        print(f"verified {checked} blocks")
        return 0
    for message in messages:
        print(message)
    print(f"{mismatches} of {checked} blocks differ (seed {args.seed}, block size {args.block_size})")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
