"""virtio-blk-uio's machine: the virtio-blk device alone (modern-only, iommu_platform=on, two
request queues), its 64 MiB on a raw file filled with random bytes before the boot; no IOMMU (the
case header's config=noiommu)."""
MiB = 1 << 20


def configure(guest):
    guest.only("vblk0")
    blk = guest.device("vblk0")
    blk.props["num-queues"] = "2"
    blk.backing = 64 * MiB
    blk.fill = "random"
