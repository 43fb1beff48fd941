"""ring3d-supervise's machine: two NVMe controllers, 64 MiB each. nvme0 (the supervised writer's)
is filled with random bytes first, so no block holds the pattern by accident."""
MiB = 1 << 20


def configure(guest):
    guest.only("nvme0")
    guest.device("nvme0").fill = "random"
    guest.devices.append(guest.Device("nvme", "nvme1", {"serial": "ring3-nvme1"},
                                      backing=64 * MiB))
