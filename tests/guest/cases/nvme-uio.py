"""nvme-uio's machine: the NVMe controller alone, its 64 MiB namespace on a raw file filled with
random bytes before the boot; no IOMMU (the case header's config=noiommu)."""
MiB = 1 << 20


def configure(guest):
    guest.only("nvme0")
    nvme = guest.device("nvme0")
    nvme.backing = 64 * MiB
    nvme.fill = "random"
