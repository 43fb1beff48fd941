"""python's machine: QEMU's edu device (1234:11e8, conventional PCI, one MSI vector) and the NVMe
controller with a serial of this case's own, which checks/python.py compares with what
python/examples/nvme_identify.py printed."""
SERIAL = "ring3-py-nvme0"


def configure(guest):
    guest.only("nvme0")
    guest.device("nvme0").props["serial"] = SERIAL
    guest.devices.append(guest.Device("edu", "edu0"))
