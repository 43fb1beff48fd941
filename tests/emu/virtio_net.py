#!/usr/bin/env python3
"""`ring3 emu virtio-net` driven by `ring3 perf net` over vfio-user, judged on the host side by
tests/guest/checks (test_frames.py rebuilds every frame from its seed; net_host.py compares
captures with them), which share no code with ring3.

  tx    perf net --tx sends 100,000 frames of 60..1514 bytes; a datagram peer here receives them,
        and they must be exactly the generator's frames, in order (also the device's pcap capture)
  rx    this script sends 100,000 test frames into the device's datagram socket; perf net --rx
        must count them all: none lost, corrupt, reordered or duplicated
  pair  two devices wired back to back with --peer: perf net --tx on one while perf net --rx
        runs on the other in interrupt mode (MSI-X eventfds, used_event), 100,000 frames,
        nothing lost; the sender's capture checked too
  mq    a device with two queue pairs (MQ, control queue): perf net --tx --queues 2 sends
        100,000 frames from two threads; both queues carry traffic (the driver's per-queue
        counters and the device's per-queue count agree), and the peer and the capture hold
        each queue's frames in order, byte for byte
  fault --fault corrupt|vanish|cfs: a fault at frame 1000 fails perf net --tx (exit 1, no hang);
        the device then serves a clean run to the end

Every wait is bounded; a process still running at the end is killed."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

FRAMES = 100_000
SIZES = (60, 1514)
SEED = 0x5EED
DEVICE_MAC = "02:00:00:00:00:01"
PEER_MAC = "02:00:00:00:00:02"


class Checker:
    def __init__(self):
        self.failures = []

    def expect(self, condition, message):
        if not condition:
            self.failures.append(message)
            print(f"FAIL: {message}", flush=True)
        return condition


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out after {seconds} s waiting for {what}")


class Run:
    """Processes started by a case, and the directory they use; everything is stopped at exit."""

    def __init__(self, ring3):
        self.ring3 = ring3
        self.dir = tempfile.mkdtemp(prefix="r3vn-", dir="/tmp")
        self.processes = []
        self.emu_exits = {}  # a device's exit code (0 after SIGTERM; ASan's reports make it 1)

    def path(self, name):
        return os.path.join(self.dir, name)

    def emu(self, name, *options):
        socket_path = self.path(f"{name}.sock")
        log = open(self.path(f"{name}.log"), "w")
        process = subprocess.Popen([self.ring3, "emu", "virtio-net", "--socket", socket_path,
                                    *options], stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((name, process))
        wait_for(lambda: os.path.exists(socket_path) or process.poll() is not None, 10,
                 f"{name} to listen at {socket_path}")
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}: {self.log(name)}")
        return socket_path

    def perf(self, name, socket_path, *options):
        out = open(self.path(f"{name}.json"), "w")
        err = open(self.path(f"{name}.log"), "w")
        process = subprocess.Popen([self.ring3, "perf", "net", f"vfio-user:{socket_path}",
                                    "--json", "--count", str(FRAMES), "--seed", str(SEED),
                                    "--time", "90s", *options], stdout=out, stderr=err)
        self.processes.append((name, process))
        return process

    def report(self, c, name, process):
        try:
            process.wait(timeout=100)
        except subprocess.TimeoutExpired:
            process.kill()
            c.expect(False, f"{name} did not finish within 100 s")
        c.expect(process.returncode == 0, f"{name} exited with {process.returncode}: "
                                          f"{self.log(name)}")
        try:
            with open(self.path(f"{name}.json")) as f:
                return json.loads(f.read())
        except ValueError as e:
            c.expect(False, f"{name}: no JSON report ({e})")
            return None

    def log(self, name):
        try:
            with open(self.path(f"{name}.log")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def stop(self):
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if name.startswith("emu"):
                print(f"{name}: {self.log(name).splitlines()[-1:]}", flush=True)
                self.emu_exits[name] = process.returncode
        self.processes = []


def bound_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def write_pcap(path, frames):
    import struct
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for frame in frames:
            f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)))
            f.write(frame)


def check_rx_report(c, name, r):
    if r is None:
        return
    rx = r.get("rx", {})
    c.expect(r.get("ok") is True, f"{name}: report not ok: {r.get('problems')}")
    c.expect(rx.get("test_frames") == FRAMES and rx.get("lost") == 0 and rx.get("corrupt") == 0
             and rx.get("reordered") == 0 and rx.get("duplicates") == 0,
             f"{name}: {rx}")


def start_peer(run, received):
    """A datagram peer at run.path("peer") collecting up to FRAMES frames into `received` (for
    at most 110 s) on a thread of its own; returns the thread."""
    peer = bound_socket(run.path("peer"))

    def receive():
        peer.settimeout(0.5)
        deadline = time.monotonic() + 110
        while len(received) < FRAMES and time.monotonic() < deadline:
            try:
                received.append(peer.recv(65536))
            except socket.timeout:
                pass

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    return receiver


def case_tx(run, c, net_host):
    received = []
    receiver = start_peer(run, received)
    emu = run.emu("emu", "--peer", run.path("peer"), "--capture", run.path("tx.pcap"))
    started = time.monotonic()
    tx = run.perf("perf-tx", emu, "--tx", "--size", f"{SIZES[0]}-{SIZES[1]}")
    report = run.report(c, "perf-tx", tx)
    receiver.join(timeout=30)
    elapsed = time.monotonic() - started
    run.stop()
    if report is None:
        return
    write_pcap(run.path("peer.pcap"), received)
    n = net_host.check_capture(c, [report], run.path("peer.pcap"))
    print(f"tx: the peer received {n} frames in order, byte for byte ({elapsed:.1f} s; "
          f"{report.get('pps', 0):.0f} pps by perf net)", flush=True)
    n = net_host.check_capture(c, [report], run.path("tx.pcap"))
    print(f"tx: the device's capture holds the same {n} frames", flush=True)


def case_rx(run, c, test_frames):
    peer = bound_socket(run.path("peer"))
    emu = run.emu("emu", "--peer", run.path("peer"), "--mac", DEVICE_MAC)
    rx = run.perf("perf-rx", emu, "--rx")
    frames = test_frames.Frames(SEED, "02:00:00:00:00:09", DEVICE_MAC)
    sent = [0]

    def send():
        # A full device socket blocks this send: the device reads it only when the driver has
        # posted receive buffers, so nothing is dropped on the way.
        # Connected, so that waiting for room sleeps on the device's queue (poll(2) on an
        # unconnected datagram socket reports it writable at once, and the wait would spin).
        peer.connect(emu + ".dgram")
        peer.settimeout(30)
        for sequence in range(FRAMES):
            frame = frames.frame(0, sequence, frames.length(0, sequence, *SIZES))
            peer.send(frame)
            sent[0] += 1

    started = time.monotonic()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    report = run.report(c, "perf-rx", rx)
    sender.join(timeout=10)
    elapsed = time.monotonic() - started
    run.stop()
    c.expect(sent[0] == FRAMES, f"the peer sent {sent[0]} of {FRAMES} frames")
    check_rx_report(c, "perf net --rx", report)
    if report is not None:
        print(f"rx: {report['rx']['test_frames']} frames received, none lost, corrupt or "
              f"reordered ({elapsed:.1f} s)", flush=True)


def case_pair(run, c, net_host):
    a, b = run.path("a.dgram"), run.path("b.dgram")
    receiver = run.emu("emu-b", "--dgram", b, "--peer", a, "--mac", PEER_MAC)
    sender = run.emu("emu-a", "--dgram", a, "--peer", b, "--mac", DEVICE_MAC,
                     "--capture", run.path("a.pcap"))
    started = time.monotonic()
    rx = run.perf("perf-rx", receiver, "--rx", "--mode", "interrupt")
    tx = run.perf("perf-tx", sender, "--tx", "--size", f"{SIZES[0]}-{SIZES[1]}",
                  "--dst-mac", PEER_MAC)
    tx_report = run.report(c, "perf-tx", tx)
    rx_report = run.report(c, "perf-rx", rx)
    elapsed = time.monotonic() - started
    run.stop()
    check_rx_report(c, "perf net --rx on the second device", rx_report)
    if tx_report is not None:
        n = net_host.check_capture(c, [tx_report], run.path("a.pcap"))
        print(f"pair: {n} frames sent by one device and received whole by the other "
              f"({elapsed:.1f} s)", flush=True)


def check_streams(c, report, pcap_path, test_frames, what):
    """Every frame of `pcap_path` is one the run's queues sent: each queue's stream complete, in
    order, byte for byte (frames of different queues may interleave). Returns {stream: count}."""
    frames = test_frames.Frames(report["seed"], report["mac"])
    sent = {q["queue"]: q["packets"] for q in report["per_queue"]}
    next_sequence = {stream: 0 for stream in sent}
    wrong = 0
    for at, got in enumerate(test_frames.read_pcap(pcap_path)):
        parsed = frames.parse(got)
        stream = parsed[0] if parsed else None
        if stream not in next_sequence:
            wrong += 1
            if wrong <= 5:
                c.expect(False, f"{what}: frame {at} is not from any queue of the run: {parsed}")
            continue
        sequence = next_sequence[stream]
        want = frames.frame(stream, sequence,
                            frames.length(stream, sequence, report["size_min"], report["size_max"]))
        if got != want:
            wrong += 1
            if wrong <= 5:
                c.expect(False, f"{what}: frame {at} should be queue {stream}'s sequence "
                                f"{sequence} ({len(want)} bytes), is {parsed} ({len(got)} bytes)")
        next_sequence[stream] = sequence + 1
    c.expect(wrong == 0, f"{what}: {wrong} frame(s) out of order, foreign or different")
    c.expect(next_sequence == sent, f"{what}: frames per queue {next_sequence}, sent {sent}")
    return next_sequence


def case_mq(run, c, test_frames):
    received = []
    receiver = start_peer(run, received)
    emu = run.emu("emu", "--queues", "2", "--peer", run.path("peer"),
                  "--capture", run.path("tx.pcap"))
    tx = run.perf("perf-tx", emu, "--tx", "--queues", "2", "--size", f"{SIZES[0]}-{SIZES[1]}")
    report = run.report(c, "perf-tx", tx)
    receiver.join(timeout=30)
    run.stop()
    if report is None:
        return
    c.expect(report.get("ok") is True and report.get("packets") == FRAMES,
             f"perf net: ok {report.get('ok')}, {report.get('packets')} of {FRAMES} frames")
    per_queue = [q["packets"] for q in report.get("per_queue", [])]
    c.expect(len(per_queue) == 2 and all(n > 0 for n in per_queue),
             f"perf net's queues sent {per_queue}: both queue pairs must carry traffic")
    by_pair = None
    for line in run.log("emu").splitlines():
        if "tx frames by queue pair:" in line:
            by_pair = [int(n) for n in line.split(":")[-1].split()]
    c.expect(by_pair == per_queue,
             f"the device counted {by_pair} frames on its transmit queues, the driver {per_queue}")
    write_pcap(run.path("peer.pcap"), received)
    counts = check_streams(c, report, run.path("peer.pcap"), test_frames, "peer")
    check_streams(c, report, run.path("tx.pcap"), test_frames, "capture")
    print(f"mq: queue 0 sent {per_queue[0] if per_queue else '?'} and queue 1 "
          f"{per_queue[1] if len(per_queue) > 1 else '?'} frames; the device counted {by_pair}; "
          f"the peer and the capture hold every queue's frames in order ({counts})", flush=True)


def case_fault(run, c, kind):
    """A fault injected at frame 1000 of the device's life stops perf net --tx with an error
    (exit 1) within its stall/drain timeouts; the device then serves the next client, whose
    reset brings it back, and a clean run completes."""
    emu = run.emu("emu", "--fault", f"{kind}:1000")
    started = time.monotonic()
    faulted = run.perf("perf-fault", emu, "--tx", "--size", "60-1514")
    try:
        faulted.wait(timeout=60)
    except subprocess.TimeoutExpired:
        faulted.kill()
    elapsed = time.monotonic() - started
    c.expect(faulted.returncode == 1, f"{kind}: perf net exited with {faulted.returncode} "
                                      f"(1 expected): {run.log('perf-fault')}")
    # The driver says what stopped it: the device's NEEDS_RESET, or the device gone.
    cause = {"cfs": "DEVICE_NEEDS_RESET", "vanish": "closed the connection",
             "corrupt": "an id outside the queue"}[kind]
    c.expect(cause in run.log("perf-fault"),
             f"{kind}: perf net's errors do not name the cause ('{cause}'): {run.log('perf-fault')}")
    print(f"fault {kind}:1000: perf net failed as it should after {elapsed:.1f} s: "
          f"{run.log('perf-fault').splitlines()[-1:]}", flush=True)
    emu_process = run.processes[0][1]
    c.expect(emu_process.poll() is None, f"{kind}: the device exited: {run.log('emu')}")
    clean = run.perf("perf-clean", emu, "--tx", "--size", "60-1514")
    report = run.report(c, "perf-clean", clean)
    if report is not None:
        c.expect(report.get("ok") is True and report.get("packets") == FRAMES,
                 f"{kind}: the run after the fault: {report.get('packets')} frames, "
                 f"problems {report.get('problems')}, stopped {report.get('stopped')}")
        print(f"fault {kind}:1000: the next client sent {report.get('packets')} frames",
              flush=True)
    run.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["tx", "rx", "pair", "mq", "fault"])
    parser.add_argument("--fault", choices=["corrupt", "vanish", "cfs"], help="with case fault")
    parser.add_argument("--ring3", required=True)
    parser.add_argument("--checks", required=True, help="tests/guest/checks")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    sys.path.insert(0, args.checks)
    import net_host
    import test_frames
    run = Run(args.ring3)
    c = Checker()
    try:
        if args.case == "tx":
            case_tx(run, c, net_host)
        elif args.case == "rx":
            case_rx(run, c, test_frames)
        elif args.case == "mq":
            case_mq(run, c, test_frames)
        elif args.case == "fault":
            case_fault(run, c, args.fault or "corrupt")
        else:
            case_pair(run, c, net_host)
    finally:
        run.stop()
        for name, code in run.emu_exits.items():
            c.expect(code == 0, f"{name} exited with {code}: {run.log(name)[-2000:]}")
        if args.keep or c.failures:
            print(f"work directory kept: {run.dir}", flush=True)
        else:
            shutil.rmtree(run.dir, ignore_errors=True)
    if c.failures:
        print(f"{len(c.failures)} failure(s)", flush=True)
        return 1
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
