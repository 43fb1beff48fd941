#!/usr/bin/env python3
"""Host-side check of ring3d-supervise: the supervised writer's acknowledged writes survived its
SIGKILL, ring3d's reset and its restart.

The writer (tests/guest/programs/supervised_writer.cpp) reports `ack gen=G pass=K seed=S
first=L count=N` after each completed flush: LBAs L..L+N-1 (512 bytes each) were written with
seed S and flushed. In nvme0's backing file:
  - generation 0 was killed mid-pass. A block it acknowledged last in pass K holds seed(K), or
    seed(K+1) if pass K+1 rewrote it before the kill (submitted, not yet acknowledged); anything
    else (an older pass, the random fill, a torn block) is a lost acknowledged write.
  - generation 1 finished: every block of its region holds its last pass's seed, exactly.
Patterns are rebuilt by block_pattern.py, which shares no code with ring3."""
import collections
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections, section  # noqa: E402
from block_pattern import expected_block  # noqa: E402

BLOCK = 512
ACK = re.compile(r"^ack gen=(\d+) pass=(\d+) seed=(\d+) first=(\d+) count=(\d+)$")

sections = read_sections(sys.argv[1])
image = os.path.join(sys.argv[2], "nvme0.img")
c = Checker("ring3d-supervise")
last = {}                                   # gen -> {lba: (pass, seed)}
seeds = collections.defaultdict(dict)       # gen -> {pass: seed}
for line in section(sections, "writer").splitlines():
    m = ACK.match(line.strip())
    if not m:
        continue
    gen, k, seed, first, count = (int(x) for x in m.groups())
    seeds[gen][k] = seed
    blocks = last.setdefault(gen, {})
    for lba in range(first, first + count):
        blocks[lba] = (k, seed)
c.expect(0 in last and 1 in last, f"acknowledgements of generations {sorted(last)}; 0 and 1 expected")


def check(gen, exact):
    bad, checked = [], 0
    with open(image, "rb") as f:
        for lba, (k, seed) in sorted(last.get(gen, {}).items()):
            f.seek(lba * BLOCK)
            actual = f.read(BLOCK)
            allowed = [seed]
            if not exact:
                # The next pass's seed follows the writer's rule: S + 1000*G + K.
                allowed.append(seed + 1)
            if not any(actual == expected_block(lba, s, BLOCK) for s in allowed):
                bad.append(f"gen {gen}: LBA {lba} acknowledged with seed {seed} (pass {k}) holds "
                           f"{actual[:24].hex()}...")
            checked += 1
    for b in bad[:10]:
        c.expect(False, b)
    c.expect(not bad, f"{len(bad)} of {checked} acknowledged blocks of generation {gen} lost")
    return checked


gen0 = check(0, exact=False)
gen1 = check(1, exact=True)
passes0 = len(seeds.get(0, {}))
c.expect(passes0 >= 2, f"generation 0 acknowledged {passes0} pass(es) before the kill; 2 expected")
region1 = set(last.get(1, {}))
c.expect(len(region1) == 16 * 2048, f"generation 1 acknowledged {len(region1)} blocks of 32768")
c.finish(f"{gen0} blocks acknowledged before the kill ({passes0} passes) and {gen1} after the "
         f"restart hold their patterns")
