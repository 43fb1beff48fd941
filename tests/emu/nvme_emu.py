#!/usr/bin/env python3
"""ring3's NVMe driver against `ring3 emu nvme` over vfio-user: no root, no QEMU (ctest label emu).

  nvme_emu.py --ring3 PATH verify --queues N --mode poll|interrupt
      a sequential write pass over 16 MiB with --verify (every block written once and read back),
      then the server stops and the backing file is checked on this side by
      tests/guest/checks/block_pattern.py, which shares no code with the C++.
  nvme_emu.py --ring3 PATH fault KIND:N
      the server injects one fault; the run must end (no hang past its bound) with an error that
      names what happened, and must not crash (exit 1, never a signal).
  nvme_emu.py --ring3 PATH reconnect
      the server is killed (SIGKILL) mid-run (once the first block is written; its completions are
      1 ms late, so the pass lasts at least a second) and started again on the same socket and
      backing file; with --reconnect --retries the run completes, verifies, and the file holds the
      pattern.

Every wait is bounded; a test that overruns fails and shows what the processes printed.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_emu import BLOCK, SIZE, Failure, check_backing, perf_write_verify, run  # noqa: E402

class EmuServer:
    """`ring3 emu nvme` in the background, ready once it says it is listening."""

    def __init__(self, ring3, socket, backing, extra=(), size="64M", queues=8):
        self.log_path = socket + ".log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [ring3, "emu", "nvme", "--socket", socket, "--size", size, "--backing", backing,
             "--queues", str(queues), *extra],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"ring3 emu nvme exited with {self.proc.returncode}:\n{self.output()}")
            if b"listening on" in open(self.log_path, "rb").read():
                return
            time.sleep(0.02)
        self.kill()
        raise Failure(f"ring3 emu nvme did not listen within 20 s:\n{self.output()}")

    def output(self):
        self.log.flush()
        return open(self.log_path, "rb").read().decode(errors="replace")

    def stop(self):
        """SIGTERM, and the exit status (0 expected: the backing file is written back)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f"ring3 emu nvme did not stop within 20 s of SIGTERM:\n{self.output()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_verify(ring3, work, queues, mode):
    socket, backing = os.path.join(work, "nvme.sock"), os.path.join(work, "disk.img")
    seed = 1000 + queues * 10 + (mode == "interrupt")
    server = EmuServer(ring3, socket, backing)
    try:
        done = perf_write_verify(ring3, "vfio-user:" + socket, seed,
                                 ["--queues", str(queues), "--mode", mode])
        if done.returncode != 0:
            raise Failure(f"perf blk failed (exit {done.returncode})\n{server.output()}")
        if "blk_write_qd32_iops:" not in done.stdout:
            raise Failure("perf blk printed no figure line")
    finally:
        status = server.stop()
    if status != 0:
        raise Failure(f"ring3 emu nvme exited with {status}:\n{server.output()}")
    check_backing(backing, seed, SIZE // BLOCK)
    print(f"emu nvme verify: {queues} queue(s), {mode} mode: {SIZE // BLOCK} blocks written, "
          "read back and found in the backing file")


# What the driver must say for each fault (any of the words), besides failing.
FAULT_WORDS = {
    "drop": ["timeout", "outlived", "reset"],
    "corrupt": ["command id", "completion"],
    "cfs": ["CFS", "fatal", "not running", "reset"],
    "vanish": ["gone", "closed the connection", "Connection reset", "vfio-user server"],
}


def test_fault(ring3, work, fault):
    kind = fault.split(":")[0]
    socket, backing = os.path.join(work, "nvme.sock"), os.path.join(work, "disk.img")
    server = EmuServer(ring3, socket, backing, ["--fault", fault])
    started = time.monotonic()
    try:
        done = perf_write_verify(ring3, "vfio-user:" + socket, 77,
                                 ["--io-timeout", "2000"], timeout=90)
    finally:
        server.kill()
    took = time.monotonic() - started
    text = done.stdout + done.stderr
    if kind == "delay":
        # Late completions are still completions: the run must pass.
        if done.returncode != 0:
            raise Failure(f"a delay fault failed the run (exit {done.returncode})")
        print(f"emu nvme fault {fault}: the run passed in {took:.1f} s")
        return
    if done.returncode == 0:
        raise Failure(f"fault {fault} went unnoticed: perf blk passed\n{server.output()}")
    words = FAULT_WORDS[kind]
    if not any(w.lower() in text.lower() for w in words):
        raise Failure(f"fault {fault}: the error does not say what happened (looked for {words})")
    print(f"emu nvme fault {fault}: detected in {took:.1f} s, exit {done.returncode}")


def test_reconnect(ring3, work):
    socket, backing = os.path.join(work, "nvme.sock"), os.path.join(work, "disk.img")
    seed = 4242
    size = 64 << 20
    # Every completion 1 ms late: at qd 16 the write pass takes at least a second however fast
    # the machine, so the kill below lands in the middle of it.
    server = EmuServer(ring3, socket, backing, ["--fault", "delay:1000"], size="128M")
    print("+ perf blk with --reconnect; the server is killed mid-run", flush=True)
    perf = subprocess.Popen(
        [ring3, "perf", "blk", "vfio-user:" + socket, "--rw", "write", "--bs", "4k", "--qd", "16",
         "--size", str(size), "--verify", "--seed", str(seed), "--reconnect",
         "--retries", "3", "--io-timeout", "5000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    restarted = None
    try:
        # The kill comes once the first block (LBA 0, written first) holds the pattern.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and perf.poll() is None:
            with open(backing, "rb") as f:
                if f.read(8) == b"R3BLKPAT":
                    break
            time.sleep(0.01)
        time.sleep(0.1)
        if perf.poll() is not None:
            raise Failure("perf blk ended before the server was killed: make the run longer\n"
                          + perf.stdout.read())
        server.kill()
        print("killed the server; starting it again", flush=True)
        restarted = EmuServer(ring3, socket, backing, size="128M")
        try:
            out, _ = perf.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            perf.kill()
            raise Failure("perf blk did not finish within 150 s of the restart\n"
                          + perf.communicate()[0])
        sys.stdout.write(out)
        if perf.returncode != 0:
            raise Failure(f"perf blk failed across the restart (exit {perf.returncode})\n"
                          + restarted.output())
        if "re-attached" not in out and "replaced" not in out:
            raise Failure("perf blk passed but never said it re-attached: was the kill too late?")
    finally:
        if perf.poll() is None:
            perf.kill()
        status = restarted.stop() if restarted else None
    if status != 0:
        raise Failure(f"the restarted server exited with {status}")
    check_backing(backing, seed, size // BLOCK)
    print("emu nvme reconnect: the run survived a server restart and the file holds the pattern")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ring3", required=True)
    sub = parser.add_subparsers(dest="test", required=True)
    verify = sub.add_parser("verify")
    verify.add_argument("--queues", type=int, default=1)
    verify.add_argument("--mode", choices=["poll", "interrupt", "adaptive"], default="poll")
    fault = sub.add_parser("fault")
    fault.add_argument("fault")
    sub.add_parser("reconnect")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ring3-emu-") as work:
        try:
            if args.test == "verify":
                test_verify(args.ring3, work, args.queues, args.mode)
            elif args.test == "fault":
                test_fault(args.ring3, work, args.fault)
            else:
                test_reconnect(args.ring3, work)
        except Failure as e:
            print(f"FAIL: {e}", file=sys.stderr)
            for name in sorted(os.listdir(work)):
                if name.endswith(".log"):
                    print(f"---- {name}\n" + open(os.path.join(work, name), errors="replace").read(),
                          file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
