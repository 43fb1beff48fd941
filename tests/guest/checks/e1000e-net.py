#!/usr/bin/env python3
"""Host-side check of e1000e-net: QEMU's filter-dump capture of tx0 (tx.pcap) holds exactly the
frames of the two transmit runs, in order, byte for byte, as test_frames.py builds them from each
run's seed, sizes, count and MAC address (no ring3 code involved); the host fed both receive runs
(feeds.log) and the guest's reports agree with what was fed (checks/net_host.py)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections  # noqa: E402

import net_host  # noqa: E402

data, workdir = sys.argv[1], sys.argv[2]
sections = read_sections(data)
c = Checker("e1000e-net")
runs = [r for r in (net_host.report(c, sections, "tx-poll"),
                    net_host.report(c, sections, "tx-interrupt")) if r is not None]
captured = net_host.check_capture(c, runs, os.path.join(workdir, "tx.pcap"))
net_host.check_feeds(c, sections, workdir, {"rx-poll": 100000, "rx-interrupt": 20000})
c.finish(f"{captured} captured frames match {len(runs)} tx runs; the rx reports agree")
