#!/usr/bin/env python3
"""Host-side check of nvme-uio: the two regions written through UIO (poll and INTx) hold their
runs' patterns in every LBA (block_pattern.py), and every MiB outside them still holds the host's
random fill: DMA at physical addresses wrote where it should and nowhere else on the disk."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections  # noqa: E402

import nvme_backing  # noqa: E402  (shared by the NVMe checkers)

sections = read_sections(sys.argv[1])
runs = nvme_backing.perf_runs(sections)
c = Checker("nvme-uio")
labels = [label for _, label, _ in runs]
c.expect(labels == ["uio-poll", "uio-interrupt"], f"runs {labels}, expected uio-poll, uio-interrupt")
nvme_backing.check_reports(c, runs)
c.finish(nvme_backing.check_backing(c, sys.argv[2], runs))
