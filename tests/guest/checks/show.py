#!/usr/bin/env python3
"""Host-side check of the show case: for every device, the capabilities `ring3 show` lists, as
(id, offset) pairs, standard and extended, equal those `lspci -vv` lists; e1000e has MSI-X with
5 vectors, PCI Express and AER.

lspci prints names, not ids: they are mapped back with pciutils' own wording (ls-caps.c,
ls-ecaps.c). A name this table does not know fails the check, so nothing is skipped silently.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datachannel import Checker, read_sections, section  # noqa: E402

# lspci's text after "Capabilities: [xx] " -> capability id (PCI Local Bus 3.0 §6.7, PCI Code and
# ID Assignment §2). Matched as prefixes.
STANDARD = [
    ("Power Management version", 0x01), ("AGP version", 0x02), ("Vital Product Data", 0x03),
    ("Slot ID", 0x04), ("MSI:", 0x05), ("CompactPCI hot-swap", 0x06), ("PCI-X", 0x07),
    ("HyperTransport", 0x08), ("Vendor Specific Information", 0x09), ("Debug port", 0x0a),
    ("CompactPCI central resource control", 0x0b), ("Hot-plug capable", 0x0c),
    ("Subsystem:", 0x0d), ("AGP3", 0x0e), ("Secure device", 0x0f), ("Express", 0x10),
    ("MSI-X:", 0x11), ("SATA HBA", 0x12), ("PCI Advanced Features", 0x13),
    ("Enhanced Allocation", 0x14),
]
EXTENDED = [
    ("Null", 0x0000), ("Advanced Error Reporting", 0x0001), ("Virtual Channel", (0x0002, 0x0009)),
    ("Device Serial Number", 0x0003), ("Power Budgeting", 0x0004), ("Root Complex Link", 0x0005),
    ("Root Complex Internal Link", 0x0006), ("Root Complex Event Collector", 0x0007),
    ("Multi-Function Virtual Channel", 0x0008), ("Root Complex Register Block", 0x000a),
    ("Vendor Specific Information", 0x000b), ("Access Control Services", 0x000d),
    ("Alternative Routing-ID Interpretation", 0x000e), ("Address Translation Service", 0x000f),
    ("Single Root I/O Virtualization", 0x0010), ("Multi-Root I/O Virtualization", 0x0011),
    ("Multicast", 0x0012), ("Page Request Interface", 0x0013), ("Resizable BAR", 0x0015),
    ("Dynamic Power Allocation", 0x0016), ("Transaction Processing Hints", 0x0017),
    ("Latency Tolerance Reporting", 0x0018), ("Secondary PCI Express", 0x0019),
    ("Protocol Multiplexing", 0x001a), ("Process Address Space ID", 0x001b),
    ("LN Requester", 0x001c), ("Downstream Port Containment", 0x001d), ("L1 PM Substates", 0x001e),
    ("Precision Time Measurement", 0x001f), ("PCI Express over M_PHY", 0x0020),
    ("FRS Queueing", 0x0021), ("Readiness Time Reporting", 0x0022),
    ("Designated Vendor-Specific", 0x0023), ("VF Resizable BAR", 0x0024),
    ("Data Link Feature", 0x0025), ("Physical Layer 16.0 GT/s", 0x0026),
    ("Lane Margining at the Receiver", 0x0027), ("Hierarchy ID", 0x0028),
    ("Native PCIe Enclosure Management", 0x0029),
]
LSPCI_CAP = re.compile(r"^\tCapabilities: \[([0-9a-f]+)(?: v(\d+))?\] (.*)$")
RING3_CAP = re.compile(r"^\s+\[([0-9a-f]+)\] cap 0x([0-9a-f]{2})\b(.*)$")
RING3_EXT = re.compile(r"^\s+\[([0-9a-f]+) v(\d+)\] ext-cap 0x([0-9a-f]{4})\b(.*)$")


def lspci_id(text, extended):
    """The capability id (or tuple of possible ids) lspci's text names; None if unknown."""
    m = re.match(r"#([0-9a-f]{2}) \[", text) if not extended else \
        re.match(r"Extended Capability ID (0x[0-9a-f]+|0)$", text)
    if m:
        return int(m.group(1), 16)
    for prefix, cap_id in EXTENDED if extended else STANDARD:
        if text.startswith(prefix):
            return cap_id
    return None


def lspci_caps(text, c, address):
    """{(kind, offset): (id or ids, text)} from lspci -vv, kind 'cap' or 'ext-cap'."""
    caps = {}
    for line in text.splitlines():
        m = LSPCI_CAP.match(line)
        if not m:
            continue
        offset, rest = int(m.group(1), 16), m.group(3)
        extended = m.group(2) is not None
        cap_id = lspci_id(rest, extended)
        if cap_id is None:
            c.expect(False, f"{address}: lspci capability [{m.group(1)}] '{rest}' is not in this "
                            f"checker's name table: add it to checks/show.py")
            continue
        caps[("ext-cap" if extended else "cap", offset)] = (cap_id, rest)
    if "<access denied>" in text:
        c.expect(False, f"{address}: lspci could not read the capabilities (access denied)")
    return caps


def ring3_caps(text):
    caps = {}
    for line in text.splitlines():
        m = RING3_CAP.match(line)
        if m:
            caps[("cap", int(m.group(1), 16))] = (int(m.group(2), 16), m.group(3).strip())
            continue
        m = RING3_EXT.match(line)
        if m:
            caps[("ext-cap", int(m.group(1), 16))] = (int(m.group(3), 16), m.group(4).strip())
    return caps


def same_id(lspci_value, ring3_value):
    return ring3_value in lspci_value if isinstance(lspci_value, tuple) else ring3_value == lspci_value


sections = read_sections(sys.argv[1])
c = Checker("show")
devices = section(sections, "sysfs-devices").split()
total = 0
for address in devices:
    theirs = lspci_caps(section(sections, f"lspci-vv {address}"), c, address)
    ours = ring3_caps(section(sections, f"ring3-show {address}"))
    total += len(theirs)
    for key in sorted(set(theirs) | set(ours)):
        where = f"{address} {key[0]} [{key[1]:x}]"
        if key not in ours:
            c.expect(False, f"{where}: lspci lists '{theirs[key][1]}', ring3 show does not")
        elif key not in theirs:
            c.expect(False, f"{where}: ring3 show lists id {ours[key][0]:#x} '{ours[key][1]}', lspci does not")
        else:
            c.expect(same_id(theirs[key][0], ours[key][0]),
                     f"{where}: ring3 says id {ours[key][0]:#x}, lspci says '{theirs[key][1]}'")

e1000e = [line.split()[0] for line in section(sections, "lspci-n").splitlines()
          if " 8086:10d3" in line]
if c.expect(len(e1000e) == 1, f"expected one e1000e (8086:10d3), found {e1000e}"):
    ours = ring3_caps(section(sections, f"ring3-show {e1000e[0]}"))
    msix = [text for (kind, _), (cap_id, text) in ours.items() if kind == "cap" and cap_id == 0x11]
    c.expect(len(msix) == 1 and re.search(r"\bCount=5\b", msix[0]) is not None,
             f"{e1000e[0]} e1000e: ring3 show has no MSI-X capability with Count=5: {msix}")
    c.expect(any(kind == "cap" and cap_id == 0x10 for (kind, _), (cap_id, _) in ours.items()),
             f"{e1000e[0]} e1000e: ring3 show has no PCI Express capability")
    c.expect(any(kind == "ext-cap" and cap_id == 0x0001 for (kind, _), (cap_id, _) in ours.items()),
             f"{e1000e[0]} e1000e: ring3 show has no AER extended capability")

c.finish(f"{total} capabilities of {len(devices)} devices match lspci -vv; e1000e has MSI-X "
         f"Count=5, PCIe, AER")
