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
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "checks"))
import net_host  # noqa: E402

MACS = {"tx0": "52:54:00:00:00:10", "rx0": "52:54:00:00:00:11", "g0": "52:54:00:00:00:12",
        "a0": "52:54:00:00:00:13", "b0": "52:54:00:00:00:14", "r0": "52:54:00:00:00:15"}
# The frames the host sends to rx0: name -> (seed, count, smallest, largest).
FEEDS = {"rx-poll": (0x52580001, 100000, 60, 1514), "rx-interrupt": (0x52580002, 20000, 1514, 1514)}
_keep = []  # sockets and threads that must live as long as the guest


def configure(guest):
    guest.only()
    virtio = {"disable-legacy": "on", "iommu_platform": "on"}
    tx_port, sink_port = net_host.dgram_sink(_keep)
    wire1 = net_host.free_port(socket.SOCK_STREAM)
    wire2 = net_host.free_port(socket.SOCK_STREAM)
    feeder = net_host.Feeder(guest, FEEDS, MACS["rx0"], _keep)

    netdevs = {
        "tx0": net_host.dgram_netdev("n-tx0", tx_port, sink_port),
        "rx0": feeder.netdev("n-rx0"),
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
