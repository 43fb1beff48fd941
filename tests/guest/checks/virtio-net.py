#!/usr/bin/env python3
"""Host-side check of virtio-net: QEMU's filter-dump capture of tx0 (tx.pcap) holds exactly the
frames of the two transmit runs, in order, byte for byte, as test_frames.py builds them from each
run's seed, sizes, count and MAC address (no ring3 code involved); the host fed both receive runs
(feeds.log) and the guest's reports agree with what was fed; behind the forwarder every frame g0
sent arrived."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections, section  # noqa: E402

import test_frames  # noqa: E402

data, workdir = sys.argv[1], sys.argv[2]
sections = read_sections(data)
c = Checker("virtio-net")


def report(name):
    try:
        return json.loads(section(sections, f"perf net {name}"))
    except (KeyError, ValueError, SystemExit) as e:
        c.expect(False, f"no readable report 'perf net {name}': {e}")
        return None


# ---- the capture ------------------------------------------------------------------------------
runs = [r for r in (report("tx-poll"), report("tx-interrupt")) if r is not None]
expected_total = 0
for r in runs:
    c.expect(r.get("ok") is True, f"tx run seed {r.get('seed')}: not ok")
    c.expect(r["packets"] == r["stop"]["count"],
             f"tx run seed {r['seed']}: sent {r['packets']} of {r['stop']['count']}")
    expected_total += r["packets"]
try:
    captured = test_frames.read_pcap(os.path.join(workdir, "tx.pcap"))
except (OSError, ValueError) as e:
    c.expect(False, f"tx.pcap: {e}")
    captured = []
c.expect(len(captured) == expected_total,
         f"the capture holds {len(captured)} frames, the runs sent {expected_total}")
at, wrong = 0, 0
for r in runs:
    frames = test_frames.Frames(r["seed"], r["mac"])
    for sequence in range(r["packets"]):
        length = frames.length(0, sequence, r["size_min"], r["size_max"])
        want = frames.frame(0, sequence, length)
        got = captured[at] if at < len(captured) else None
        if got != want:
            wrong += 1
            if wrong <= 5:
                seen = "nothing" if got is None else \
                    f"{len(got)} bytes, test frame {frames.parse(got)}"
                c.expect(False, f"captured frame {at}: expected seed {r['seed']} sequence "
                                f"{sequence} ({length} bytes), got {seen}")
        at += 1
c.expect(wrong == 0, f"{wrong} captured frame(s) differ from what the runs sent")
sizes = sorted({len(f) for f in captured})
if sizes:
    c.expect(sizes[0] <= 100 and sizes[-1] == 1514,
             f"frame sizes {sizes[0]}..{sizes[-1]}: the range 60-1514 was not covered")

# ---- the receive runs -------------------------------------------------------------------------
try:
    with open(os.path.join(workdir, "feeds.log")) as f:
        feeds = f.read()
except OSError:
    feeds = ""
for name, count in (("rx-poll", 100000), ("rx-interrupt", 20000)):
    c.expect(f"{name}: {count} frames sent" in feeds, f"the host did not send {name} ({feeds!r})")
    r = report(name)
    if r is not None:
        rx = r.get("rx", {})
        c.expect(rx.get("test_frames") == count and rx.get("lost") == 0 and
                 rx.get("corrupt") == 0 and rx.get("reordered") == 0,
                 f"{name}: {rx}")

# ---- forwarding -------------------------------------------------------------------------------
tx, fwd, rx = report("fwd-tx"), report("fwd"), report("fwd-rx")
if tx and fwd and rx:
    sent = tx["packets"]
    c.expect(sent > 0, "g0 sent nothing")
    c.expect(fwd["packets"] == sent and fwd["dropped"] == 0,
             f"the forwarder moved {fwd['packets']} of {sent}, dropped {fwd['dropped']}")
    c.expect(rx["rx"]["test_frames"] == sent and rx["rx"]["lost"] == 0,
             f"behind the forwarder: {rx['rx']} of {sent}")

c.finish(f"{len(captured)} captured frames match {len(runs)} tx runs; rx and fwd reports agree")
