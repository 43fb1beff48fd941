#!/usr/bin/env python3
"""Host-side check of the ls case: `ring3 ls --json` agrees with lspci and sysfs in the guest.

- the same devices, in the same order, as `lspci -Dn` and the sysfs device list;
- the same vendor/device ids as `lspci -Dn`;
- class, vendor and device names equal to lspci's (`lspci -vmm` fields, and the `lspci -D` line);
- driver and IOMMU group equal to sysfs's;
- QEMU's nvme, e1000e, virtio-net and virtio-blk are there.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datachannel import Checker, read_sections, section  # noqa: E402

QEMU_DEVICES = {"1b36:0010": "nvme", "8086:10d3": "e1000e", "1af4:1041": "virtio-net",
                "1af4:1042": "virtio-blk"}

sections = read_sections(sys.argv[1])
c = Checker("ls")

try:
    listing = json.loads(section(sections, "ring3-ls-json"))
except json.JSONDecodeError as e:
    sys.exit(f"CHECK FAILED (ls): 'ring3 ls --json' is not JSON: {e}")
if isinstance(listing, dict) and "devices" in listing:
    listing = listing["devices"]
if not isinstance(listing, list):
    sys.exit("CHECK FAILED (ls): 'ring3 ls --json' is neither a list nor {\"devices\": [...]}")
ring3 = {}
for entry in listing:
    ring3[entry.get("address")] = entry

sysfs = section(sections, "sysfs-devices").split()
lspci_n = [line.split() for line in section(sections, "lspci-n").splitlines() if line.strip()]
lspci_order = [fields[0] for fields in lspci_n]
ring3_order = [entry.get("address") for entry in listing]
c.expect(ring3_order == lspci_order,
         f"device order differs:\n  ring3 ls: {ring3_order}\n  lspci -Dn: {lspci_order}")
c.expect(sorted(ring3_order) == sorted(sysfs),
         f"devices differ from sysfs:\n  ring3 ls: {sorted(ring3_order)}\n  sysfs: {sorted(sysfs)}")

for fields in lspci_n:  # 0000:01:00.0 0108: 1b36:0010 (rev 02)
    address, ids = fields[0], fields[2]
    entry = ring3.get(address)
    if entry is None:
        continue
    got = f"{entry.get('vendor_id')}:{entry.get('device_id')}"
    c.expect(got == ids, f"{address}: ring3 says ids {got}, lspci -Dn {ids}")

# lspci -vmm: blank-line separated records of "Key:\tvalue".
vmm = {}
for record in section(sections, "lspci-vmm").strip().split("\n\n"):
    fields = dict(line.split(":\t", 1) for line in record.splitlines() if ":\t" in line)
    vmm[fields["Slot"]] = fields
for address, entry in ring3.items():
    fields = vmm.get(address)
    if not c.expect(fields is not None, f"{address}: not in lspci -vmm"):
        continue
    for ring3_key, lspci_key in (("class", "Class"), ("vendor_name", "Vendor"),
                                 ("device_name", "Device")):
        c.expect(entry.get(ring3_key) == fields[lspci_key],
                 f"{address}: ring3 {ring3_key} is {entry.get(ring3_key)!r}, "
                 f"lspci {lspci_key} is {fields[lspci_key]!r}")

for line in section(sections, "lspci").splitlines():  # 0000:00:01.0 Class: Vendor Device (rev 02)
    if not line.strip():
        continue
    address = line.split()[0]
    entry = ring3.get(address)
    if entry is None:
        continue
    expected = f"{address} {entry.get('class')}: {entry.get('vendor_name')} {entry.get('device_name')}"
    c.expect(re.fullmatch(re.escape(expected) + r"( \(rev [0-9a-f]{2}\))?", line) is not None,
             f"{address}: lspci -D says {line!r}; ring3's names make {expected!r}")

for line in section(sections, "sysfs-drivers").splitlines():
    address, driver, group = line.split()
    entry = ring3.get(address)
    if entry is None:
        continue
    got_driver = entry.get("driver") or "none"
    got_group = entry.get("iommu_group")
    got_group = "none" if got_group in (None, "") else str(got_group)
    c.expect(got_driver == driver, f"{address}: ring3 says driver {got_driver}, sysfs {driver}")
    c.expect(got_group == group, f"{address}: ring3 says IOMMU group {got_group}, sysfs {group}")

present = {f"{e.get('vendor_id')}:{e.get('device_id')}" for e in listing}
for ids, name in QEMU_DEVICES.items():
    c.expect(ids in present, f"QEMU's {name} ({ids}) is not in 'ring3 ls --json'")

c.finish(f"{len(listing)} devices match lspci and sysfs (order, ids, names, drivers, groups)")
