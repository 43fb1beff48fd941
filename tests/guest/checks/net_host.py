"""Host-side machinery shared by the NIC cases (virtio-net, e1000e), none of it ring3's code:
  - in a case's hook (cases/<nic>.py): free_port(), a Feeder that sends test frames into a NIC
    over a `socket` netdev on 127.0.0.1 when the guest asks ("feed NAME"), and a sink for a
    `dgram` netdev whose frames QEMU's filter-dump captures;
  - in a checker (checks/<nic>.py): check_capture() (a filter-dump capture holds exactly the frames
    of some tx runs, in order, byte for byte) and check_feeds() (the host fed the receive runs and
    the guest's reports agree: none lost, corrupt or reordered).
Frames are rebuilt by test_frames.py from each run's seed, sizes and MAC addresses."""
import json
import os
import socket
import struct
import threading

import test_frames


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def dgram_sink(keep):
    """A UDP socket on 127.0.0.1 that reads nothing (frames end in its receive buffer, or are
    dropped there), and a free port for the netdev's own end: returns (netdev_port, sink_port)."""
    local, sink_port = free_port(), free_port()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", sink_port))
    keep.append(sink)
    return local, sink_port


def dgram_netdev(netdev_id, local_port, sink_port):
    return (f"dgram,id={netdev_id},local.type=inet,local.host=127.0.0.1,local.port={local_port},"
            f"remote.type=inet,remote.host=127.0.0.1,remote.port={sink_port}")


class Feeder:
    """Accepts QEMU's connection (a `socket,connect=127.0.0.1:PORT` netdev) and sends each feed's
    frames (the socket netdev's framing over TCP: a 32-bit big-endian length before each frame)
    when the guest asks for it. `feeds`: name -> (seed, count, smallest, largest); frames go from
    02:00:00:00:00:09 to `destination_mac`. QEMU reads the socket only while the NIC has receive
    buffers, so nothing is lost before the guest's receiver is ready."""

    def __init__(self, guest, feeds, destination_mac, keep):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(60)
        self.port = self.listener.getsockname()[1]
        self.guest = guest
        self.feeds = feeds
        self.destination_mac = destination_mac
        self.keep = keep
        self.lock = threading.Lock()
        self.connection = None
        keep.append(self)
        for name in feeds:
            guest.feeders[name] = self.feed(name)

    def netdev(self, netdev_id):
        return f"socket,id={netdev_id},connect=127.0.0.1:{self.port}"

    def _connection(self):
        with self.lock:
            if self.connection is None:
                self.connection, _ = self.listener.accept()
            return self.connection

    def _send(self, name):
        seed, count, low, high = self.feeds[name]
        frames = test_frames.Frames(seed, "02:00:00:00:00:09", self.destination_mac)
        connection = self._connection()
        chunk = []
        for sequence in range(count):
            frame = frames.frame(0, sequence, frames.length(0, sequence, low, high))
            chunk.append(struct.pack(">I", len(frame)) + frame)
            if len(chunk) == 256 or sequence == count - 1:
                connection.sendall(b"".join(chunk))
                chunk = []
        with open(self.guest.path("feeds.log"), "a") as f:
            f.write(f"{name}: {count} frames sent, seed {seed:#x}\n")

    def feed(self, name):
        def start():
            thread = threading.Thread(target=self._send, args=(name,), daemon=True)
            thread.start()
            self.keep.append(thread)
            seed, count, low, high = self.feeds[name]
            return f"sending {count} frames of {low}-{high} bytes, seed {seed:#x}"
        return start


def report(c, sections, name):
    """The JSON report the guest emitted as section "perf net NAME", or None (a failure noted)."""
    from datachannel import section
    try:
        return json.loads(section(sections, f"perf net {name}"))
    except (KeyError, ValueError, SystemExit) as e:
        c.expect(False, f"no readable report 'perf net {name}': {e}")
        return None


def check_capture(c, runs, pcap_path):
    """The capture holds exactly the frames of `runs` (perf net --tx reports), in order, byte
    for byte, and covers 60..1514 bytes when a run asked for that range. Returns the frame count."""
    expected_total = 0
    for r in runs:
        c.expect(r.get("ok") is True, f"tx run seed {r.get('seed')}: not ok")
        c.expect(r["packets"] == r["stop"]["count"],
                 f"tx run seed {r['seed']}: sent {r['packets']} of {r['stop']['count']}")
        expected_total += r["packets"]
    try:
        captured = test_frames.read_pcap(pcap_path)
    except (OSError, ValueError) as e:
        c.expect(False, f"{os.path.basename(pcap_path)}: {e}")
        captured = []
    c.expect(len(captured) == expected_total,
             f"the capture holds {len(captured)} frames, the runs sent {expected_total}")
    at, wrong = 0, 0
    for r in runs:
        frames = test_frames.Frames(r["seed"], r["mac"])
        for sequence in range(r["packets"]):
            length = frames.length(0, sequence, r["size_min"], r["size_max"])
            want = frames.frame(0, sequence, length)
            got = captured[at] if at < len(captured) else None
            if got != want:
                wrong += 1
                if wrong <= 5:
                    seen = "nothing" if got is None else \
                        f"{len(got)} bytes, test frame {frames.parse(got)}"
                    c.expect(False, f"captured frame {at}: expected seed {r['seed']} sequence "
                                    f"{sequence} ({length} bytes), got {seen}")
            at += 1
    c.expect(wrong == 0, f"{wrong} captured frame(s) differ from what the runs sent")
    sizes = sorted({len(f) for f in captured})
    if sizes and any(r["size_min"] <= 100 and r["size_max"] == 1514 for r in runs):
        c.expect(sizes[0] <= 100 and sizes[-1] == 1514,
                 f"frame sizes {sizes[0]}..{sizes[-1]}: the range 60-1514 was not covered")
    return len(captured)


def check_feeds(c, sections, workdir, counts):
    """The host sent every feed in `counts` (name -> frames) and each receive run's report says
    it got them all: none lost, corrupt or reordered."""
    try:
        with open(os.path.join(workdir, "feeds.log")) as f:
            feeds = f.read()
    except OSError:
        feeds = ""
    for name, count in counts.items():
        c.expect(f"{name}: {count} frames sent" in feeds,
                 f"the host did not send {name} ({feeds!r})")
        r = report(c, sections, name)
        if r is not None:
            rx = r.get("rx", {})
            c.expect(rx.get("test_frames") == count and rx.get("lost") == 0 and
                     rx.get("corrupt") == 0 and rx.get("reordered") == 0,
                     f"{name}: {rx}")
