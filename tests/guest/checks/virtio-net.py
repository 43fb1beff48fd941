#!/usr/bin/env python3
"""Host-side check of virtio-net: QEMU's filter-dump capture of tx0 (tx.pcap) holds exactly the
frames of the two transmit runs, in order, byte for byte, as test_frames.py builds them from each
run's seed, sizes, count and MAC address (no ring3 code involved); the host fed both receive runs
(feeds.log) and the guest's reports agree with what was fed; behind the forwarder every frame g0
sent arrived."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections  # noqa: E402

import net_host  # noqa: E402

data, workdir = sys.argv[1], sys.argv[2]
sections = read_sections(data)
c = Checker("virtio-net")


def report(name):
    return net_host.report(c, sections, name)


# ---- the capture and the receive runs ---------------------------------------------------------
runs = [r for r in (report("tx-poll"), report("tx-interrupt")) if r is not None]
captured = net_host.check_capture(c, runs, os.path.join(workdir, "tx.pcap"))
net_host.check_feeds(c, sections, workdir, {"rx-poll": 100000, "rx-interrupt": 20000})

# ---- forwarding -------------------------------------------------------------------------------
tx, fwd, rx = report("fwd-tx"), report("fwd"), report("fwd-rx")
if tx and fwd and rx:
    sent = tx["packets"]
    c.expect(sent > 0, "g0 sent nothing")
    c.expect(fwd["packets"] == sent and fwd["dropped"] == 0,
             f"the forwarder moved {fwd['packets']} of {sent}, dropped {fwd['dropped']}")
    c.expect(rx["rx"]["test_frames"] == sent and rx["rx"]["lost"] == 0,
             f"behind the forwarder: {rx['rx']} of {sent}")

c.finish(f"{captured} captured frames match {len(runs)} tx runs; rx and fwd reports agree")
