"""What the block-device emu tests share (nvme_emu.py, virtio_blk_emu.py): running a command
with a bound, `ring3 perf blk --rw write --verify` over the first SIZE bytes, and the host-side
check of the backing file by block_pattern.py, which shares no code with ring3."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "..", "guest", "checks", "block_pattern.py")
SIZE = 16 << 20
BLOCK = 512


class Failure(Exception):
    pass


def run(cmd, timeout):
    print("+", " ".join(cmd), flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"{cmd[0]} {cmd[1]} did not finish within {timeout} s "
                      f"(stdout: {e.stdout!r}, stderr: {e.stderr!r})")
    sys.stdout.write(done.stdout)
    sys.stdout.write(done.stderr)
    if done.returncode < 0:
        raise Failure(f"{' '.join(cmd[:3])} died of signal {-done.returncode}")
    return done


def check_backing(backing, seed, blocks):
    done = run([sys.executable, CHECKER, backing, "--block-size", str(BLOCK), "--seed", str(seed),
                "--count", str(blocks)], 120)
    if done.returncode != 0 or f"verified {blocks} blocks" not in done.stdout:
        raise Failure(f"the backing file does not hold the pattern (exit {done.returncode})")


def perf_write_verify(ring3, spec, seed, extra=(), timeout=120):
    return run([ring3, "perf", "blk", spec, "--rw", "write", "--bs", "4k", "--qd", "32",
                "--size", str(SIZE), "--verify", "--seed", str(seed), "--quiet", *extra], timeout)
