"""e1000e-net's machine: two e1000e NICs (82574L) and one e1000 (82540EM), nothing else. Every
backend stays on this host (checks/net_host.py has the machinery, shared with virtio-net):
  tx0      a dgram netdev from 127.0.0.1 to a UDP socket of this hook on 127.0.0.1 that reads
           nothing, with QEMU's filter-dump writing every frame that passes to tx.pcap;
  rx0      a socket netdev connected over TCP to a listener of this hook on 127.0.0.1, which sends
           test frames when the guest asks ("feed rx-poll", "feed rx-interrupt");
  e1000    an 82540EM with no netdev: ring3 must refuse it by name.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "checks"))
import net_host  # noqa: E402

MACS = {"tx0": "52:54:00:00:10:10", "rx0": "52:54:00:00:10:11"}
# The frames the host sends to rx0: name -> (seed, count, smallest, largest).
# (the guest gives its receiver the same seeds: 0x52581001 = 1381502977, 0x52581002 = 1381502978)
FEEDS = {"rx-poll": (0x52581001, 100000, 60, 1514), "rx-interrupt": (0x52581002, 20000, 1514, 1514)}
_keep = []  # sockets and threads that must live as long as the guest


def configure(guest):
    guest.only()
    tx_port, sink_port = net_host.dgram_sink(_keep)
    feeder = net_host.Feeder(guest, FEEDS, MACS["rx0"], _keep)
    guest.extra_args += ["-netdev", net_host.dgram_netdev("n-tx0", tx_port, sink_port),
                         "-netdev", feeder.netdev("n-rx0"),
                         "-object", f"filter-dump,id=dump-tx0,netdev=n-tx0,"
                                    f"file={guest.path('tx.pcap')}"]
    for nic in MACS:  # PCI order: the guest finds them by it
        guest.devices.append(guest.Device("e1000e", nic, {"mac": MACS[nic], "netdev": f"n-{nic}"}))
    guest.devices.append(guest.Device("e1000", "e1000old"))
