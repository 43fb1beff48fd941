"""nvme-verify's machine: the NVMe controller alone, its 64 MiB namespace (512-byte LBAs) on a raw
file that the host fills with random bytes before the boot (no block can match the pattern by
accident; checks/nvme_backing.py also finds writes outside the runs' ranges by the fill's digests)."""
MiB = 1 << 20


def configure(guest):
    guest.only("nvme0")
    nvme = guest.device("nvme0")
    nvme.backing = 64 * MiB
    nvme.fill = "random"
