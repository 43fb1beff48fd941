#!/usr/bin/env python3
"""Host-side check of the smoke case: the data channel carried lspci's output and 2000 lines."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datachannel import Checker, read_sections, section  # noqa: E402

sections = read_sections(sys.argv[1])
c = Checker("smoke")
c.expect(section(sections, "numbers") == "".join(f"{i}\n" for i in range(1, 2001)),
         "section 'numbers' is not the lines 1..2000")
for ids in ("1b36:0010", "8086:10d3", "1af4:1041", "1af4:1042"):
    c.expect(ids in section(sections, "lspci-n"), f"{ids} missing from lspci -Dn")
c.finish("data channel intact, the 4 QEMU devices listed")
