#!/usr/bin/env python3
"""ring3's virtio-blk driver against `ring3 emu virtio-blk` over vfio-user: no root, no QEMU
(ctest label emu).

  virtio_blk_emu.py --ring3 PATH verify --queues N --mode poll|interrupt
      the device offers N request queues (VIRTIO_BLK_F_MQ, num_queues N); a sequential write pass
      over 16 MiB with --verify through N queues (every block written once and read back), then
      the device stops and its backing file is checked on this side by
      tests/guest/checks/block_pattern.py, which shares no code with the C++.
  virtio_blk_emu.py --ring3 PATH fault KIND:N
      the device injects one fault; the run must end within seconds (no hang) with an error that
      names the cause, and must not crash (exit 1, never a signal); delay:US must pass.

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

# A failing run must stop well inside perf blk's 60 s stall check: the driver itself notices.
FAULT_BOUND_S = 20


class EmuDisk:
    """`ring3 emu virtio-blk` in the background, ready once it says it is listening."""

    def __init__(self, ring3, socket, backing, queues, extra=(), size="64M"):
        self.log_path = socket + ".log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [ring3, "emu", "virtio-blk", "--socket", socket, "--size", size, "--backing", backing,
             "--queues", str(queues), *extra],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"ring3 emu virtio-blk exited with {self.proc.returncode}:\n"
                              f"{self.output()}")
            if b"listening on" in open(self.log_path, "rb").read():
                return
            time.sleep(0.02)
        self.kill()
        raise Failure(f"ring3 emu virtio-blk did not listen within 20 s:\n{self.output()}")

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
            raise Failure("ring3 emu virtio-blk did not stop within 20 s of SIGTERM:\n"
                          + self.output())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_verify(ring3, work, queues, mode):
    socket, backing = os.path.join(work, "blk.sock"), os.path.join(work, "disk.img")
    seed = 2000 + queues * 10 + (mode == "interrupt")
    disk = EmuDisk(ring3, socket, backing, queues)
    try:
        done = perf_write_verify(ring3, "vfio-user:" + socket, seed,
                                 ["--queues", str(queues), "--mode", mode])
        if done.returncode != 0:
            raise Failure(f"perf blk failed (exit {done.returncode})\n{disk.output()}")
        if "blk_write_qd32_iops:" not in done.stdout:
            raise Failure("perf blk printed no figure line")
    finally:
        status = disk.stop()
    out = disk.output()
    if status != 0:
        raise Failure(f"ring3 emu virtio-blk exited with {status}:\n{out}")
    # The device's own count: every block written once (4 KiB requests), nothing refused.
    if f"{SIZE // 4096} writes ({SIZE} bytes)" not in out or " 0 IOERR, 0 UNSUPP" not in out:
        raise Failure(f"the device did not count {SIZE // 4096} clean writes:\n{out}")
    check_backing(backing, seed, SIZE // BLOCK)
    print(f"emu virtio-blk verify: {queues} queue(s), {mode} mode: {SIZE // BLOCK} blocks "
          "written, read back and found in the backing file")


# What the driver must say for each fault (any of the words), besides failing.
FAULT_WORDS = {
    "corrupt": ["an id outside the queue"],
    "cfs": ["DEVICE_NEEDS_RESET"],
    "vanish": ["closed the connection"],
}


def test_fault(ring3, work, fault):
    kind = fault.split(":")[0]
    socket, backing = os.path.join(work, "blk.sock"), os.path.join(work, "disk.img")
    disk = EmuDisk(ring3, socket, backing, 1, ["--fault", fault])
    started = time.monotonic()
    try:
        done = perf_write_verify(ring3, "vfio-user:" + socket, 77, timeout=90)
    finally:
        alive = disk.proc.poll() is None
        disk.kill()
    took = time.monotonic() - started
    text = done.stdout + done.stderr
    if not alive:
        raise Failure(f"the device died during the run:\n{disk.output()}")
    if kind == "delay":
        # Late completions are still completions: the run must pass.
        if done.returncode != 0:
            raise Failure(f"a delay fault failed the run (exit {done.returncode})")
        print(f"emu virtio-blk fault {fault}: the run passed in {took:.1f} s")
        return
    if done.returncode != 1:
        raise Failure(f"fault {fault}: perf blk exited with {done.returncode} (1 expected)\n"
                      + disk.output())
    words = FAULT_WORDS[kind]
    if not any(w.lower() in text.lower() for w in words):
        raise Failure(f"fault {fault}: the error does not say what happened (looked for {words})")
    if took > FAULT_BOUND_S:
        raise Failure(f"fault {fault}: noticed only after {took:.1f} s (bound {FAULT_BOUND_S} s)")
    print(f"emu virtio-blk fault {fault}: detected in {took:.1f} s, exit {done.returncode}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ring3", required=True)
    sub = parser.add_subparsers(dest="test", required=True)
    verify = sub.add_parser("verify")
    verify.add_argument("--queues", type=int, default=1)
    verify.add_argument("--mode", choices=["poll", "interrupt", "adaptive"], default="poll")
    fault = sub.add_parser("fault")
    fault.add_argument("fault")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ring3-emu-blk-") as work:
        try:
            if args.test == "verify":
                test_verify(args.ring3, work, args.queues, args.mode)
            else:
                test_fault(args.ring3, work, args.fault)
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
