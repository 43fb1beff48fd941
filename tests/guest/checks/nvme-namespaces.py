#!/usr/bin/env python3
"""Host-side check of nvme-namespaces: both backing files (nsid 1, 512-byte LBAs, and nsid 2,
4096-byte LBAs) hold, in every LBA, the pattern of the last run that wrote it (block_pattern.py
with that LBA size), and the identify output the guest emitted names both namespaces."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections, section  # noqa: E402

import nvme_backing  # noqa: E402  (shared by the NVMe checkers)

sections = read_sections(sys.argv[1])
runs = nvme_backing.perf_runs(sections)
c = Checker("nvme-namespaces")
identify = section(sections, "identify")
for nsid in (1, 2):
    c.expect(f"namespace {nsid}\n" in identify, f"identify does not list namespace {nsid}")
    c.expect(any(n == nsid and r.get("lba_count", 0) * r.get("block_size", 0) == 16 << 20
                 for n, _, r in runs), f"no run over all of namespace {nsid}")
nvme_backing.check_reports(c, runs)
layout = nvme_backing.layout(runs)
c.expect(layout.get(1, (0,))[0] == 512 and layout.get(2, (0,))[0] == 4096,
         f"LBA sizes in the reports: {({n: v[0] for n, v in layout.items()})}, expected 512 and 4096")
c.finish(nvme_backing.check_backing(c, sys.argv[2], runs))
