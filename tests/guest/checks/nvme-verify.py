#!/usr/bin/env python3
"""Host-side check of nvme-verify: every LBA of the backing file (64 MiB, filled with random bytes
before the boot) holds the pattern of the last run that wrote it, recomputed by block_pattern.py
from the runs' seeds; the four full-namespace runs and the mode runs all reported success; the
last full run's seed (section verify-seed) is the one the unshared tail [48m,64m) holds."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections, section  # noqa: E402

import nvme_backing  # noqa: E402  (shared by the NVMe checkers)

data, workdir = sys.argv[1], sys.argv[2]
sections = read_sections(data)
runs = nvme_backing.perf_runs(sections)
c = Checker("nvme-verify")
labels = [label for _, label, _ in runs]
for size in ("4k", "8k", "64k", "2M"):
    c.expect(f"full-{size}" in labels, f"no full-namespace run at {size} (runs: {labels})")
for label in ("interrupt", "adaptive", "queues-2", "queues-2-interrupt"):
    c.expect(label in labels, f"no '{label}' run (runs: {labels})")
nvme_backing.check_reports(c, runs)

seed = dict(line.split(None, 1) for line in section(sections, "verify-seed").splitlines() if line)
last_full = [r for _, label, r in runs if label.startswith("full-")][-1]
c.expect(int(seed.get("seed", -1)) == last_full["seed"],
         f"verify-seed says {seed}, the last full run used seed {last_full['seed']}")
_, tail = nvme_backing.layout(runs)[1]
c.expect(any(s == last_full["seed"] for _, _, s, _ in tail),
         "no part of the namespace is left with the last full run's pattern")
summary = nvme_backing.check_backing(c, workdir, runs)
for name in ("irq ns1 interrupt", "irq ns1 queues-2-interrupt"):
    if name in sections:
        print(f"  {name}: {' | '.join(sections[name].splitlines())}")
c.finish(f"{len(runs)} runs; {summary}; last full run: seed {seed.get('seed')} bs {seed.get('bs')}")
