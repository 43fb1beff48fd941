"""ring3d's machine: the NVMe alone (64 MiB)."""


def configure(guest):
    guest.only("nvme0")
