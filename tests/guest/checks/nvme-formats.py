#!/usr/bin/env python3
"""Host-side check of nvme-formats: identify (as the guest emitted it) lists the four
namespaces, and the plain one's backing file holds, in every LBA, the pattern of the run that
wrote it (block_pattern.py); the zoned namespace's backing file is still all zeros (its refusal
came before any write)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections, section  # noqa: E402

import nvme_backing  # noqa: E402  (shared by the NVMe checkers)

sections = read_sections(sys.argv[1])
runs = nvme_backing.perf_runs(sections)
c = Checker("nvme-formats")
identify = section(sections, "identify")
for nsid in (1, 2, 3, 4):
    c.expect(f"namespace {nsid}\n" in identify, f"identify does not list namespace {nsid}")
c.expect([n for n, _, _ in runs] == [1], f"perf runs on namespaces {[n for n, _, _ in runs]}, expected only 1")
nvme_backing.check_reports(c, runs)
zoned = os.path.join(sys.argv[2], "nvme0n2.img")
with open(zoned, "rb") as f:
    data = f.read()
c.expect(data.count(0) == len(data), f"{zoned}: {len(data) - data.count(0)} non-zero bytes; the zoned namespace was written")
c.finish(nvme_backing.check_backing(c, sys.argv[2], runs))
