#!/usr/bin/env python3
"""Host-side check of virtio-blk-verify: every 512-byte block of the backing file (64 MiB, filled
with random bytes before the boot) holds the pattern of the last sequential run that wrote it,
recomputed by block_pattern.py (through nvme_backing, which reads any single-disk device's
backing file from machine.json); every run reported success, the random runs included; the
interrupt runs saw their vectors count up."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections, section  # noqa: E402

import nvme_backing  # noqa: E402  (the backing-file replay is not NVMe-specific)

data, workdir = sys.argv[1], sys.argv[2]
sections = read_sections(data)
runs = nvme_backing.perf_runs(sections)
c = Checker("virtio-blk-verify")
labels = [label for _, label, _ in runs]
for label in ("full-2M", "full-64k", "full-4k", "randrw", "randrw-queues-2-interrupt", "interrupt",
              "queues-2-interrupt", "queues-2", "adaptive"):
    c.expect(label in labels, f"no '{label}' run (runs: {labels})")
nvme_backing.check_reports(c, runs)
for _, label, r in runs:
    if label.startswith("randrw"):
        c.expect(r.get("rw") == "randrw", f"{label}: rw is {r.get('rw')}")
        c.expect(r.get("blocks_checked", 0) > 0, f"{label}: no block was checked on read")
    if "queues-2" in label:
        c.expect(r.get("queues") == 2, f"{label}: {r.get('queues')} queue(s)")

seed = dict(line.split(None, 1) for line in section(sections, "verify-seed").splitlines() if line)
last_full = [r for _, label, r in runs if label.startswith("full-")][-1]
c.expect(int(seed.get("seed", -1)) == last_full["seed"],
         f"verify-seed says {seed}, the last full run used seed {last_full['seed']}")
summary = nvme_backing.check_backing(c, workdir, runs, controller="vblk0")
for name in ("irq ns1 interrupt", "irq ns1 queues-2-interrupt",
             "irq ns1 randrw-queues-2-interrupt"):
    c.expect(name in sections, f"no section '{name}'")
    if name in sections:
        print(f"  {name}: {' | '.join(sections[name].splitlines())}")
c.finish(f"{len(runs)} runs; {summary}; last full run: seed {seed.get('seed')} "
         f"bs {seed.get('bs')}")
