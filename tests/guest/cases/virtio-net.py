"""virtio-net's machine: seven virtio-net NICs, no other device. Every backend stays on this host:
  tx0      a dgram netdev from 127.0.0.1 to a UDP socket of this hook on 127.0.0.1 that reads
           nothing (frames end in its receive buffer, or are dropped there), with QEMU's
           filter-dump writing every frame that passes to tx.pcap in the work directory; mq=on with
           6 vectors (QEMU gives a NIC as many queue pairs as its backend has queues: one here);
  rx0      a socket netdev connected over TCP to a listener of this hook on 127.0.0.1, which sends
           test frames (checks/test_frames.py: built here, not by ring3) when the guest asks
           ("feed rx-poll", "feed rx-interrupt"); QEMU reads the socket only while the NIC has
           receive buffers, so nothing is lost before ring3 is ready;
  g0, a0   a wire: socket netdevs over TCP on 127.0.0.1, a0 listening, g0 connected to it;
  b0, r0   another such wire, r0 listening, b0 connected (a TCP stream keeps the order and, when
           the receiving NIC has no buffers, holds the sender back; QEMU's hub instead queues
           such frames and may let later ones overtake them). Frames flow from the connecting
           side to the listening one only: QEMU 7.2 leaves an accepted socket blocking, and a
           send on it that fills the stream would block QEMU's main loop, and with it the guest;

  legacy0  disable-modern=on (a legacy-only device), no netdev.
"""
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "checks"))
import test_frames  # noqa: E402

MACS = {"tx0": "52:54:00:00:00:10", "rx0": "52:54:00:00:00:11", "g0": "52:54:00:00:00:12",
        "a0": "52:54:00:00:00:13", "b0": "52:54:00:00:00:14", "r0": "52:54:00:00:00:15"}
# The frames the host sends to rx0: name -> (seed, count, smallest, largest).
FEEDS = {"rx-poll": (0x52580001, 100000, 60, 1514), "rx-interrupt": (0x52580002, 20000, 1514, 1514)}
_keep = []  # sockets and threads that must live as long as the guest


def _free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Feeder:
    """Accepts QEMU's connection and sends each feed's frames (the socket netdev's framing over
    TCP: a 32-bit big-endian length before each frame) when the guest asks for it."""

    def __init__(self, guest):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(60)
        self.port = self.listener.getsockname()[1]
        self.guest = guest
        self.lock = threading.Lock()
        self.connection = None

    def _connection(self):
        with self.lock:
            if self.connection is None:
                self.connection, _ = self.listener.accept()
            return self.connection

    def _send(self, name):
        seed, count, low, high = FEEDS[name]
        frames = test_frames.Frames(seed, "02:00:00:00:00:09", MACS["rx0"])
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
            _keep.append(thread)
            seed, count, low, high = FEEDS[name]
            return f"sending {count} frames of {low}-{high} bytes, seed {seed:#x}"
        return start


def configure(guest):
    guest.only()
    virtio = {"disable-legacy": "on", "iommu_platform": "on"}
    tx_port, sink_port = _free_port(), _free_port()
    wire1, wire2 = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_STREAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", sink_port))
    _keep.append(sink)
    feeder = Feeder(guest)
    _keep.append(feeder)
    for name in FEEDS:
        guest.feeders[name] = feeder.feed(name)

    netdevs = {
        "tx0": f"dgram,id=n-tx0,local.type=inet,local.host=127.0.0.1,local.port={tx_port},"
               f"remote.type=inet,remote.host=127.0.0.1,remote.port={sink_port}",
        "rx0": f"socket,id=n-rx0,connect=127.0.0.1:{feeder.port}",
        # listeners before the sockets that connect to them
        "a0": f"socket,id=n-a0,listen=127.0.0.1:{wire1}",
        "r0": f"socket,id=n-r0,listen=127.0.0.1:{wire2}",
        "g0": f"socket,id=n-g0,connect=127.0.0.1:{wire1}",
        "b0": f"socket,id=n-b0,connect=127.0.0.1:{wire2}",
    }
    for nic in MACS:  # PCI order: the guest finds them by it
        props = dict(virtio, mac=MACS[nic], netdev=f"n-{nic}")
        if nic == "tx0":
            props.update({"mq": "on", "vectors": "6"})
        guest.devices.append(guest.Device("virtio-net-pci", nic, props))
    for netdev in netdevs.values():
        guest.extra_args += ["-netdev", netdev]
    guest.extra_args += ["-object", f"filter-dump,id=dump-tx0,netdev=n-tx0,"
                                    f"file={guest.path('tx.pcap')}"]
    guest.devices.append(guest.Device("virtio-net-pci", "legacy0",
                                        {"disable-modern": "on", "disable-legacy": "off"}))
