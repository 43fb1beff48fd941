"""bench-broker's machine: two NVMe controllers, 64 MiB each (the first for claims and direct
opens, the second for the supervised writer that is killed)."""
MiB = 1 << 20


def configure(guest):
    guest.only("nvme0")
    guest.devices.append(guest.Device("nvme", "nvme1", {"serial": "ring3-nvme1"},
                                      backing=64 * MiB))
