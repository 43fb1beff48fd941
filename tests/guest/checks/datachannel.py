"""Reading the guest's data channel (the second serial port) in host-side checkers.

The guest's `emit NAME` writes
    ==== BEGIN NAME ====
    ...text...
    ==== END NAME ====
A checker is run as `checks/<case>.py DATA_FILE WORK_DIR` and exits 0 only if its checks pass.
"""
import re
import sys

_BEGIN = re.compile(r"^==== BEGIN (.+) ====$")


def read_sections(path):
    """Returns {name: text} for every section; a repeated or unterminated section is an error."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines(keepends=True)
    sections = {}
    name, body = None, []
    for line in lines:
        bare = line.rstrip("\r\n")
        if name is None:
            m = _BEGIN.match(bare)
            if m:
                name, body = m.group(1), []
        elif bare == f"==== END {name} ====":
            if name in sections:
                raise SystemExit(f"CHECK FAILED: section '{name}' appears twice in {path}")
            sections[name] = "".join(body)
            name = None
        else:
            body.append(line)
    if name is not None:
        raise SystemExit(f"CHECK FAILED: section '{name}' has no END line in {path} (truncated?)")
    return sections


class Checker:
    """Collects failures so that one run reports all of them."""

    def __init__(self, name):
        self.name = name
        self.errors = []

    def expect(self, condition, message):
        if not condition:
            self.errors.append(message)
        return condition

    def finish(self, summary):
        if self.errors:
            for e in self.errors:
                print(f"CHECK FAILED ({self.name}): {e}")
            sys.exit(1)
        print(f"check {self.name}: {summary}")


def section(sections, name):
    """The text of a section that must be there."""
    if name not in sections:
        raise SystemExit(f"CHECK FAILED: no section '{name}' in the data channel "
                         f"(have: {', '.join(sorted(sections)) or 'none'})")
    return sections[name]
