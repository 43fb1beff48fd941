"""virtio-blk-verify's machine: the virtio-blk device alone (modern-only, iommu_platform=on, two
request queues and the three MSI-X vectors that go with them, packed rings offered), its 64 MiB on a raw file that
the host fills with random bytes before the boot."""
MiB = 1 << 20


def configure(guest):
    guest.only("vblk0")
    blk = guest.device("vblk0")
    blk.props["num-queues"] = "2"
    blk.props["vectors"] = "3"
    blk.props["packed"] = "on"  # offered to the driver, which must stay with split rings
    blk.backing = 64 * MiB
    blk.fill = "random"
