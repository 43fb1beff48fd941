"""bench-broker's machine: three NVMe controllers, 64 MiB each: the first opened directly, the
second claimed through ring3d, the third driven by the supervised writer that is killed."""
MiB = 1 << 20


def configure(guest):
    guest.only("nvme0")
    for n in (1, 2):
        guest.devices.append(guest.Device("nvme", f"nvme{n}", {"serial": f"ring3-nvme{n}"},
                                          backing=64 * MiB))
