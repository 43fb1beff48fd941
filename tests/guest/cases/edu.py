"""edu's machine: QEMU's teaching device (1234:11e8) alone, on the root bus (it is conventional
PCI), behind the IOMMU."""


def configure(guest):
    guest.only()
    guest.devices.append(guest.Device("edu", "edu0", {}, root_port=False))
