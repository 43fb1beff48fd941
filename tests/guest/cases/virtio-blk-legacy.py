"""virtio-blk-legacy's machine: virtio-blk made legacy-only (disable-modern=on, so
disable-legacy=off and no iommu_platform, which needs the modern interface) behind its
pcie-root-port, and the e1000e (a device no block driver takes)."""
MiB = 1 << 20


def configure(guest):
    guest.only("vblk0", "e1000e0")
    blk = guest.device("vblk0")
    blk.props = {"disable-modern": "on", "disable-legacy": "off"}
    blk.backing = 1 * MiB
