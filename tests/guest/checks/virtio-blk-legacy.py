#!/usr/bin/env python3
"""Host-side check of virtio-blk-legacy: the machine really had a legacy-only virtio-blk
(machine.json: disable-modern=on), and each refusal the guest recorded exited with status 1 and
named its reason."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections, section  # noqa: E402

data, workdir = sys.argv[1], sys.argv[2]
sections = read_sections(data)
c = Checker("virtio-blk-legacy")
with open(os.path.join(workdir, "machine.json")) as f:
    machine = json.load(f)
blk = [d for d in machine["devices"] if d["id"] == "vblk0"]
c.expect(blk and blk[0]["props"].get("disable-modern") == "on",
         f"vblk0 is not legacy-only in machine.json: {blk}")
expected = {
    "legacy": "is a legacy-only virtio device",
    "legacy-interrupt": "is a legacy-only virtio device",
    "legacy-again": "is a legacy-only virtio device",
    "unknown": "no block driver for [8086:10d3]",
}
for name, needle in expected.items():
    text = section(sections, name)
    first, _, rest = text.partition("\n")
    c.expect(first == "exit 1", f"{name}: {first} (expected exit 1)")
    c.expect(needle in rest, f"{name}: the message does not contain '{needle}': {rest}")
c.finish(f"{len(expected)} refusals, each exit 1 with its reason")
