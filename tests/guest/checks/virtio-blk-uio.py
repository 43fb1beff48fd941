#!/usr/bin/env python3
"""Host-side check of virtio-blk-uio: the two regions written through UIO (one queue, two queues)
hold their runs' patterns in every 512-byte block (block_pattern.py through nvme_backing), and
every MiB outside them still holds the host's random fill: DMA at physical addresses wrote where
it should and nowhere else on the disk."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections  # noqa: E402

import nvme_backing  # noqa: E402  (the backing-file replay is not NVMe-specific)

sections = read_sections(sys.argv[1])
runs = nvme_backing.perf_runs(sections)
c = Checker("virtio-blk-uio")
labels = [label for _, label, _ in runs]
c.expect(labels == ["uio-poll", "uio-queues-2"], f"runs {labels}, expected uio-poll, uio-queues-2")
nvme_backing.check_reports(c, runs)
c.finish(nvme_backing.check_backing(c, sys.argv[2], runs, controller="vblk0"))
