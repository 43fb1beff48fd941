#!/usr/bin/env python3
"""Host-side ground truth for the NVMe guest cases: what QEMU's emulated controller wrote into the
backing files, against what the guest's `ring3 perf blk --verify` runs claim they wrote.

The guest runs `perf_blk "ns<nsid> <label>" DEVICE ...` (tests/guest/lib.sh), which emits each
run's JSON report (`ring3 perf blk --json`) as data-channel section "perf ns<nsid> <label>". This
module
  1. checks every report: "ok", no mismatch, no I/O error, --verify on, every block of a write
     run's range read back and checked (blocks_checked = lba_count);
  2. replays the sequential write runs in order (each covers its range once; a later run
     overwrites an earlier one's blocks) into the final layout of each namespace: which seed each
     LBA must hold at power-off;
  3. checks every LBA of that layout in the namespace's backing file with block_pattern.py (the
     other, independent implementation of include/ring3/block/pattern.hpp), and every MiB that no
     run wrote against the digests of run-guest's random fill (no write went astray).
Backing files are found through machine.json (run-guest; names relative to the run's directory):
namespace 1 of a controller with a drive of its own is <controller>.img, an `nvme-ns` with nsid=N
on it is its own <id>.img.

Used by checks/nvme-*.py (perf_runs(), check_reports(), check_backing()); by hand:
    checks/nvme_backing.py DATA_FILE WORK_DIR [--controller nvme0]
"""
import hashlib
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from datachannel import Checker, read_sections  # noqa: E402

MiB = 1 << 20
BLOCK_PATTERN = os.path.join(HERE, "block_pattern.py")
_PERF_SECTION = re.compile(r"^perf ns(\d+) (.+)$")


def machine(workdir):
    with open(os.path.join(workdir, "machine.json")) as f:
        return json.load(f)


def namespace_backing(info, nsid, controller="nvme0"):
    """The machine.json entry of the device whose backing file holds namespace `nsid`."""
    for d in info["devices"]:
        if d["type"] == "nvme-ns" and d["props"].get("bus") == controller and \
                int(d["props"].get("nsid", 0)) == nsid:
            return d
    for d in info["devices"]:
        if d["id"] == controller and nsid == 1 and d["backing"]:
            return d
    raise SystemExit(f"CHECK FAILED: machine.json has no backing file for namespace {nsid} of "
                     f"{controller}")


def perf_runs(sections):
    """[(nsid, label, report)] in the order the guest emitted them."""
    runs = []
    for name, text in sections.items():
        m = _PERF_SECTION.match(name)
        if m:
            try:
                report = json.loads(text)
            except json.JSONDecodeError as e:
                raise SystemExit(f"CHECK FAILED: section '{name}' is not JSON ({e}): {text[:200]}")
            runs.append((int(m.group(1)), m.group(2), report))
    return runs


def check_reports(c, runs):
    """Each report claims success, and a write run read back every block it wrote."""
    for nsid, label, r in runs:
        what = f"ns{nsid} {label}"
        c.expect(r.get("ok") is True, f"{what}: report says ok={r.get('ok')}")
        c.expect(r.get("verify") is True, f"{what}: ran without --verify")
        c.expect(r.get("mismatches") == 0, f"{what}: {r.get('mismatches')} mismatches "
                                           f"{r.get('first_mismatches')}")
        c.expect(r.get("errors") == 0, f"{what}: {r.get('errors')} I/O errors {r.get('first_errors')}")
        c.expect(not r.get("stopped"), f"{what}: queue(s) stopped: {r.get('stopped')}")
        if r.get("rw") == "write":
            c.expect(r.get("blocks_checked") == r.get("lba_count"),
                     f"{what}: {r.get('blocks_checked')} blocks checked of {r.get('lba_count')} "
                     f"written")


def layout(runs):
    """{nsid: (block_size, [(first_lba, count, seed, label)])}: the seed each LBA must hold at
    power-off, from the sequential write runs in order (random or read runs change nothing the
    host can predict block by block, so a case must not follow them with no sequential write)."""
    result = {}
    for nsid, label, r in runs:
        if r.get("rw") != "write" or not r.get("stop", {}).get("single_pass"):
            continue
        block_size, intervals = result.setdefault(nsid, (r["block_size"], []))
        if r["block_size"] != block_size:
            raise SystemExit(f"CHECK FAILED: ns{nsid} {label}: block size {r['block_size']}, "
                             f"earlier runs {block_size}")
        start, end = r["first_lba"], r["first_lba"] + r["lba_count"]
        kept = []
        for first, count, seed, old in intervals:  # cut the new range out of the older ones
            if first < start:
                kept.append((first, min(count, start - first), seed, old))
            if first + count > end:
                at = max(first, end)
                kept.append((at, first + count - at, seed, old))
        kept.append((start, end - start, r["seed"], label))
        result[nsid] = (block_size, sorted(kept))
    return result


def check_backing(c, workdir, runs, controller="nvme0"):
    """Steps 2 and 3 of the module's description; returns a summary."""
    info = machine(workdir)
    summary = []
    for nsid, (block_size, intervals) in sorted(layout(runs).items()):
        d = namespace_backing(info, nsid, controller)
        image = os.path.join(workdir, d["backing"])
        size = os.path.getsize(image)
        checked = 0
        for first, count, seed, label in intervals:
            p = subprocess.run([sys.executable, BLOCK_PATTERN, image, "--block-size",
                                str(block_size), "--seed", str(seed), "--first-lba", str(first),
                                "--count", str(count)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            where = (f"{os.path.basename(image)} LBA {first}..{first + count - 1} "
                     f"(ns{nsid} '{label}', seed {seed})")
            if c.expect(p.returncode == 0, f"{where}: block_pattern.py says:\n{p.stdout.strip()}"):
                print(f"  {where}: {p.stdout.strip()}")
            checked += count
        written = [(f * block_size, (f + n) * block_size) for f, n, _, _ in intervals]
        untouched = 0
        if d.get("fill_digests"):
            with open(os.path.join(workdir, d["fill_digests"])) as f:
                digests = f.read().split()
            with open(image, "rb") as f:
                for i, digest in enumerate(digests):
                    lo, hi = i * MiB, min(size, (i + 1) * MiB)
                    if any(a < hi and lo < b for a, b in written):
                        continue
                    f.seek(lo)
                    untouched += 1
                    c.expect(hashlib.sha256(f.read(hi - lo)).hexdigest() == digest,
                             f"{os.path.basename(image)} MiB {i}: no run wrote there, yet it "
                             f"differs from the random fill")
        summary.append(f"ns{nsid} ({os.path.basename(image)}, {block_size}-byte LBAs): "
                       f"{checked} of {size // block_size} LBAs match their last run's pattern"
                       + (f", {untouched} unwritten MiB as filled" if d.get("fill_digests") else ""))
    return "; ".join(summary)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("workdir")
    ap.add_argument("--controller", default="nvme0")
    args = ap.parse_args(argv)
    runs = perf_runs(read_sections(args.data))
    c = Checker("nvme-backing")
    c.expect(runs, "no 'perf ns<N> ...' sections in the data channel")
    check_reports(c, runs)
    c.finish(check_backing(c, args.workdir, runs, args.controller))


if __name__ == "__main__":
    main(sys.argv[1:])
