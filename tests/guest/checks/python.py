#!/usr/bin/env python3
"""Host-side check of the python case: nvme_identify.py printed the serial the machine's NVMe
device was given (machine.json) and the model QEMU's NVMe controller reports."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datachannel import Checker, read_sections, section  # noqa: E402

QEMU_NVME_MODEL = "QEMU NVMe Ctrl"  # hw/nvme/ctrl.c, Identify Controller MN

sections = read_sections(sys.argv[1])
with open(os.path.join(sys.argv[2], "machine.json")) as f:
    machine = json.load(f)
serial = next(d["props"]["serial"] for d in machine["devices"] if d["id"] == "nvme0")
lines = dict(line.split(None, 1) for line in section(sections, "identify").splitlines()
             if line.startswith(("model ", "serial ", "firmware ")))
c = Checker("python")
c.expect(lines.get("serial", "").strip() == serial,
         f"serial {lines.get('serial')!r}, the device's is {serial!r}")
c.expect(lines.get("model", "").strip() == QEMU_NVME_MODEL,
         f"model {lines.get('model')!r}, QEMU's is {QEMU_NVME_MODEL!r}")
c.expect(lines.get("firmware", "").strip() != "", "no firmware revision printed")
c.finish(f"nvme_identify.py: model {QEMU_NVME_MODEL!r}, serial {serial!r}")
