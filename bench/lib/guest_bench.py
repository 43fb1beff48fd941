"""What the guest benchmarks (bench/guest-nvme, bench/guest-blk, bench/guest-net) share: the host
checks, the image (bench/lib/build-image), the backing file, one QEMU boot read section by section
as the guest sends its results, the verdict, the pairs (a kernel run and the ring3 run right
after it) with their medians, and the JSON document's common parts.

A benchmark's `run` script imports this module (sys.path gets bench/lib), makes a Bench, builds
its image, defines its machine on tests/guest/run-guest's Guest, and hands a function for each
section to Boot.run().
"""
import importlib.machinery
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DONE_EXIT = 2 * 42 + 1  # the guest wrote 42 to isa-debug-exit: every run finished
FAIL_EXIT = 2 * 21 + 1  # ... 21: a run failed
GiB = 1 << 30


def load_run_guest():
    """tests/guest/run-guest as a module: its Guest (machine definition) and network check."""
    path = os.path.join(REPO, "tests", "guest", "run-guest")
    loader = importlib.machinery.SourceFileLoader("ring3_run_guest", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def tail(path, n=80):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").replace("\r", "").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-n:])


def other_qemus():
    """PIDs of QEMU processes already running (they share the host's cores with this guest)."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip().startswith("qemu-system"):
                        pids.append(int(pid))
            except OSError:
                pass
    return pids


def find_number(doc, key):
    """The number under `key` in a JSON document: at the top level, else the first one found."""
    if isinstance(doc, dict):
        if isinstance(doc.get(key), (int, float)) and not isinstance(doc.get(key), bool):
            return float(doc[key])
        items = doc.values()
    elif isinstance(doc, list):
        items = doc
    else:
        return None
    for v in items:
        r = find_number(v, key)
        if r is not None:
            return r
    return None


def median(values):
    return statistics.median(values)


SECTION = re.compile(r"==== BEGIN (\S+) ====\n(.*?)\n==== END \1 ====\n", re.S)


class DataChannel:
    """Reads the guest's sections from data.log as they arrive."""

    def __init__(self, path):
        self.path = path
        self.sections = {}

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                text = f.read().decode("utf-8", "replace").replace("\r", "")
        except FileNotFoundError:
            return []
        new = []
        for m in SECTION.finditer(text):
            if m.group(1) not in self.sections:
                self.sections[m.group(1)] = m.group(2)
                new.append(m.group(1))
        return new


class Bench:
    """One benchmark's name (bench-nvme: the log prefix and BUILD_DIR/bench-nvme), its output
    (progress on stderr; results on stdout, or on stderr with --json) and its host checks."""

    def __init__(self, name, json_output):
        self.name = name
        self.json = json_output
        self.out = sys.stderr if json_output else sys.stdout

    def log(self, *a):
        print(f"{self.name}:", *a, file=sys.stderr, flush=True)

    def say(self, line):
        print(line, file=self.out, flush=True)

    def exit(self, message):
        sys.exit(f"{self.name}: {message}")

    def check_host(self, build_dir, perf=None, flag=None):
        """Root, QEMU, and a built ring3 (with `ring3 perf PERF` knowing FLAG, unless perf is None).
        Returns the ring3 binary's path."""
        if os.geteuid() != 0:
            self.exit("needs root (debootstrap and chroot build the guest's root)")
        ring3 = os.path.join(build_dir, "tools", "ring3", "ring3")
        if not os.access(ring3, os.X_OK):
            self.exit(f"{ring3} missing: build the project first")
        if perf is not None:
            # (CLI11 prints the top-level help for an unknown subcommand and exits 0: look at the text.)
            p = subprocess.run([ring3, "perf", perf, "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=30)
            if p.returncode != 0 or flag not in p.stdout:
                self.exit(f"{ring3} has no 'perf {perf}' command (rebuild it, or use --kernel-only)")
        if shutil.which("qemu-system-x86_64") is None:
            self.exit("qemu-system-x86_64 not found (run scripts/install-deps)")
        return ring3

    def build_image(self, build_dir, image_dir, init, options=()):
        """bench/lib/build-image with `options` (--binary/--module/--busybox); returns (seconds it
        took, image.env as a dict)."""
        t0 = time.monotonic()
        p = subprocess.run([os.path.join(HERE, "build-image"), *options, build_dir, image_dir, init],
                           stdout=sys.stderr)
        if p.returncode != 0:
            self.exit("build-image failed")
        image_env = {}
        with open(os.path.join(image_dir, "image.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                image_env[k] = v.strip('"')
        return time.monotonic() - t0, image_env

    def backing_file(self, path, size):
        """A file of `size` random bytes (made once, reused: the benchmarks only read it)."""
        if os.path.exists(path) and os.path.getsize(path) == size:
            return
        self.log(f"writing {size >> 20} MiB of random bytes to {path}")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            for _ in range(size // (16 << 20)):
                f.write(os.urandom(16 << 20))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def backing_dir(self, fallback, size):
        """Where a backing file lives: a tmpfs (/dev/shm) when it has room, so the emulated device
        reads memory on both sides. On disk, this machine's page cache is reclaimed proactively (we
        found 70% of the file evicted between runs): reads then wait for the host's disk, and both
        drivers measure that instead of themselves."""
        shm = "/dev/shm"
        try:
            st = os.statvfs(shm)
            if st.f_bavail * st.f_frsize > 2 * size:
                return shm
        except OSError:
            pass
        self.log(f"warning: no room in {shm}; the backing file goes to {fallback}, where the host may evict it "
                 f"from its page cache (figures then include the host's disk)")
        return fallback

    def workdir(self, keep, default):
        """The run's work directory, emptied (kept after the run)."""
        workdir = os.path.abspath(keep or default)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        return workdir


class Boot:
    """One QEMU boot of `guest` (a run-guest Guest): the command, the run with the guest's sections
    handed over as they arrive, the verdict, and the artifacts in the work directory."""

    def __init__(self, bench, rg, guest, workdir):
        self.bench = bench
        self.rg = rg
        self.guest = guest
        self.workdir = workdir
        self.console_log = guest.path("console.log")
        console = ["-chardev", f"file,id=console,path={self.console_log}"]
        self.qmp_dir = None
        if "qmp_socket" in inspect.signature(guest.command).parameters:  # run-guest with a QMP monitor
            if hasattr(rg, "qmp_socket_path"):
                qmp_socket, self.qmp_dir = rg.qmp_socket_path(workdir)
            else:
                qmp_socket = guest.path("qmp.sock")
            self.cmd = guest.command(console, qmp_socket)
        else:
            self.cmd = guest.command(console)
        rg.check_network_safety(self.cmd)
        with open(guest.path("command"), "w") as f:
            f.write(shlex.join(self.cmd) + "\n")
        self.qemu_version = subprocess.run(["qemu-system-x86_64", "--version"], stdout=subprocess.PIPE,
                                           text=True).stdout.splitlines()[0]
        self.info = {}       # the guest's "info" section (key=value lines)
        self.t_boot = None   # seconds from QEMU's start to the info section
        self.elapsed = None  # seconds from QEMU's start to its exit
        self.rc = None
        self.busy = []
        self.load_before = self.load_after = None

    def warn_if_busy(self):
        self.busy = other_qemus()
        if self.busy:
            self.bench.log(f"warning: other QEMU processes are running (pids {' '.join(map(str, self.busy))}): "
                           f"they take host CPU from this guest and make the figures noisier")
        self.load_before = os.getloadavg()

    def run(self, timeout, on_section, live=False):
        """Boots, hands each new section to on_section(name, text) (the "info" section is parsed
        into self.info first), and returns None when the guest reported RING3-BENCH-DONE, else
        the error. A ValueError, KeyError, IndexError or TypeError from on_section ends the run
        as a parse error."""
        data = DataChannel(self.guest.path("data.log"))
        error = None
        start = time.monotonic()
        live_shown = 0
        live = live and not self.bench.json
        with open(self.guest.path("qemu.log"), "wb") as qlog:
            proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog)
            rc = None
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    rc = None
                if live:
                    live_shown = self.rg.show_new(self.console_log, live_shown)
                try:
                    for name in data.poll():
                        text = data.sections[name]
                        if name == "info":
                            self.info = dict(l.split("=", 1) for l in text.splitlines() if "=" in l)
                            self.t_boot = time.monotonic() - start
                        on_section(name, text)
                except (ValueError, KeyError, IndexError, TypeError) as e:
                    error = f"cannot parse the guest's results: {e!r}"
                    proc.kill()
                    proc.wait()
                    break
                if rc is not None:
                    break
                if time.monotonic() - start > timeout:
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    error = f"the guest did not finish within {timeout:.0f} s; QEMU was killed"
                    break
        self.elapsed = time.monotonic() - start
        self.rc = rc
        if self.qmp_dir is not None:
            shutil.rmtree(self.qmp_dir, ignore_errors=True)
        if live:
            self.rg.show_new(self.console_log, live_shown)
        if error is None:
            console = tail(self.console_log, 100000)
            if rc == DONE_EXIT and "RING3-BENCH-DONE" in console.splitlines():
                pass
            elif rc == FAIL_EXIT:
                error = "a run failed in the guest (QEMU exit code 43)"
            elif rc == 0:
                error = "the guest kernel panicked (QEMU exit code 0)"
            elif rc == 1:
                error = "QEMU failed to start (exit code 1)"
            else:
                error = f"QEMU exited with code {rc} without RING3-BENCH-DONE"
        return error

    def fail(self, error):
        """Shows the console's end and QEMU's log; returns the exit status 1."""
        print(f"---- last 80 lines of {self.console_log} ----", file=sys.stderr)
        print(tail(self.console_log), file=sys.stderr)
        qlog_text = tail(self.guest.path("qemu.log"), 40).strip()
        if qlog_text:
            print(f"---- {self.guest.path('qemu.log')} ----\n{qlog_text}", file=sys.stderr)
        print(f"{self.bench.name}: FAIL after {self.elapsed:.1f} s: {error}; artifacts in {self.workdir}",
              file=sys.stderr)
        return 1

    def done(self):
        """Logs the end of a good run with the host's load."""
        self.load_after = os.getloadavg()
        self.bench.log(f"guest done after {self.elapsed:.1f} s; host load average {self.load_before[0]:.2f} before, "
                       f"{self.load_after[0]:.2f} after (1 min; {os.cpu_count()} host CPUs); "
                       f"artifacts in {self.workdir}")

    def host_json(self):
        return {"cpus": os.cpu_count(), "load_avg_1min_before": self.load_before[0],
                "load_avg_1min_after": self.load_after[0], "other_qemu_pids": self.busy}

    def timings_json(self, t_image):
        return {"image": round(t_image, 1), "boot": round(self.t_boot or 0, 1),
                "guest_total": round(self.elapsed, 1)}


class Pairs:
    """Kernel and ring3 figures by (case, repetition); a pair is complete when both arrived. Its
    ratio is ring3 / kernel; the benchmarks' figures are medians of those ratios (not ratios of
    medians)."""

    def __init__(self, unit, case_key):
        self.unit = unit  # the JSON keys' suffix: "iops" gives kernel_iops, ring3_iops
        self.case_key = case_key  # the pair's key naming its case ("qd": 32)
        self.results = {}  # (case, rep) -> {"kernel": value, "ring3": value or None}
        self.pairs = []  # complete pairs in arrival order

    def add(self, case, rep, side, value, **extra):
        """Records one side; returns the pair (a dict) when this completes it, else None. A ring3
        value of None means the ring3 run was skipped (--kernel-only): the ratio is None."""
        r = self.results.setdefault((case, rep), {})
        r[side] = value
        if "kernel" not in r or "ring3" not in r:
            return None
        k, u = r["kernel"], r["ring3"]
        pair = {self.case_key: case, "rep": rep, f"kernel_{self.unit}": k, f"ring3_{self.unit}": u,
                "ratio": (u / k) if (u is not None and k > 0) else None, **extra}
        self.pairs.append(pair)
        return pair

    def get(self, case, rep, side):
        return self.results.get((case, rep), {}).get(side)

    def of(self, case):
        return [p for p in self.pairs if p[self.case_key] == case]

    def summary(self, case, with_ring3=True):
        """Medians of one case's pairs: kernel_<unit>_median, ring3_<unit>_median, ratio_median."""
        ps = self.of(case)
        s = {f"kernel_{self.unit}_median": median(p[f"kernel_{self.unit}"] for p in ps)}
        if with_ring3:
            s[f"ring3_{self.unit}_median"] = median(p[f"ring3_{self.unit}"] for p in ps)
            s["ratio_median"] = median(p["ratio"] for p in ps)
        return s


# ---- block benchmarks (guest-nvme, guest-blk): fio io_uring against `ring3 perf blk` -------------

def parse_fio(text):
    """A kernel-qdQ-repR section: fio's JSON; the figure is jobs[0].read.iops."""
    doc = json.loads(text[text.index("{"):])  # fio may print notes before its JSON
    return float(doc["jobs"][0]["read"]["iops"]), doc


def parse_perf_blk(text):
    """A ring3-qdQ-repR section: ring3 perf blk's JSON (its `iops`), or {"skipped": true}."""
    doc = json.loads(text[text.index("{"):])
    if doc.get("skipped"):
        return None, doc
    iops = find_number(doc, "iops")
    if iops is None:
        raise ValueError("no 'iops' field in ring3 perf's JSON")
    return iops, doc


def add_block_arguments(ap, name):
    """The options guest-nvme and guest-blk share."""
    ap.add_argument("build_dir", help="a full build (ring3 and tests/guest's programs)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per queue depth (default 5)")
    ap.add_argument("--time", type=int, default=10, help="seconds per fio / ring3 perf run (default 10)")
    ap.add_argument("--qds", default="32,1", help="queue depths, in run order (default 32,1)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ap.add_argument("--kernel-only", action="store_true",
                    help="no ring3 perf: fio and the vfio-pci bind round trip only")
    ap.add_argument("--keep", metavar="DIR", help=f"work directory (default BUILD_DIR/{name}/run)")
    ap.add_argument("--timeout", type=float, help="seconds until the guest is killed (default: from the plan)")
    ap.add_argument("--live", action="store_true", help="show the guest console as it runs (not with --json)")
    ap.add_argument("--modes", default="",
                    help="ring3's wait mode per queue depth, e.g. 32=interrupt (default: poll at every depth)")


def parse_block_arguments(ap, args):
    """(queue depths in run order, {qd: wait mode}) from --qds and --modes; checks --reps/--time."""
    qds = [int(q) for q in args.qds.split(",")]
    modes = {}
    for item in filter(None, args.modes.split(",")):
        qd, _, mode = item.partition("=")
        if not qd.isdigit() or mode not in ("poll", "interrupt", "adaptive"):
            ap.error(f"--modes {args.modes}: give QD=poll|interrupt|adaptive, comma-separated")
        modes[int(qd)] = mode
    if args.reps < 1 or args.time < 1 or not qds:
        ap.error("--reps and --time must be positive, --qds non-empty")
    return qds, modes


def block_kernel_args(args, qds, modes, slack):
    """The kernel command-line words of a block benchmark's init (bench/lib/guest-lib.sh)."""
    return [f"bench.reps={args.reps}", f"bench.time={args.time}",
            f"bench.qds={','.join(map(str, qds))}", f"bench.slack={slack}",
            "bench.modes=" + ",".join(f"{q}:{m}" for q, m in modes.items()),
            f"bench.ring3={0 if args.kernel_only else 1}"]


def block_pair_section(bench, pairs, name, text, reps, modes):
    """Handles a kernel-qdQ-repR or ring3-qdQ-repR section: records it, prints the pair once both
    sides arrived. Returns False for a section of another kind."""
    m = re.fullmatch(r"(kernel|ring3)-qd(\d+)-rep(\d+)", name)
    if not m:
        return False
    side, qd, rep = m.group(1), int(m.group(2)), int(m.group(3))
    iops, _ = (parse_fio if side == "kernel" else parse_perf_blk)(text)
    pair = pairs.add(qd, rep, side, iops)
    if pair is not None:
        k, u = pair["kernel_iops"], pair["ring3_iops"]
        if u is None:
            bench.say(f"qd{qd} rep {rep}/{reps}: kernel {k:.0f} IOPS (ring3 perf skipped)")
        else:
            mode = "" if modes.get(qd, "poll") == "poll" else f" ({modes[qd]} mode)"
            bench.say(f"qd{qd} rep {rep}/{reps}: kernel {k:.0f} IOPS, ring3 {u:.0f} IOPS{mode}, "
                      f"ratio {pair['ratio']:.2f}")
    return True


def block_medians(bench, pairs, qds, kernel_only):
    """Prints `median qdQ: kernel N IOPS, ring3 M IOPS` for each depth (ascending); returns the
    summaries by depth."""
    summary = {qd: pairs.summary(qd, with_ring3=not kernel_only) for qd in qds}
    for qd in sorted(qds):
        s = summary[qd]
        line = f"median qd{qd}: kernel {s['kernel_iops_median']:.0f} IOPS"
        if not kernel_only:
            line += f", ring3 {s['ring3_iops_median']:.0f} IOPS"
        bench.say(line)
    return summary


def block_figures(bench, summary, qds, kernel_only, prefix):
    """The figures, last: PREFIX_qd1_ratio, then PREFIX_qd32_ratio (or the kernel's IOPS)."""
    for qd in sorted(qds):
        if kernel_only:
            bench.say(f"{prefix}_qd{qd}_kernel_iops: {summary[qd]['kernel_iops_median']:.0f} IOPS")
        else:
            bench.say(f"{prefix}_qd{qd}_ratio: {summary[qd]['ratio_median']:.2f}")


def block_figures_json(doc, summary, qds, kernel_only, prefix):
    for qd in sorted(qds):
        if not kernel_only:
            doc[f"{prefix}_qd{qd}_ratio"] = round(summary[qd]["ratio_median"], 3)
        else:
            doc[f"{prefix}_qd{qd}_kernel_iops"] = round(summary[qd]["kernel_iops_median"])
