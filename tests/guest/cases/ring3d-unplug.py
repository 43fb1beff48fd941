"""ring3d-unplug's machine: the NVMe alone, which the guest may hot-unplug (device_del)."""


def configure(guest):
    guest.only("nvme0")
    guest.unpluggable = {"nvme0"}
