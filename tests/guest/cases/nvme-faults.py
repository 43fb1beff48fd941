"""nvme-faults' machine: the NVMe controller without a drive of its own; namespace 1 on a 16 MiB
raw file, namespace 2 on a null-co drive whose every request takes 8 s, well above the 2 s I/O
timeout the driver test sets (tests/guest/programs/nvme_test.cpp, NvmeFaults.*). The guest's
NvmeEvents test asks the host for `qom-set nvme0 smart_critical_warning 1` (a host action)."""
MiB = 1 << 20
SLOW_LATENCY_NS = 8_000_000_000


def configure(guest):
    guest.only("nvme0")
    guest.nvme_namespaces(
        guest.nvme_namespace(1, size=16 * MiB, block_size=512),
        guest.nvme_namespace(2, drive=guest.slow_drive(16 * MiB, SLOW_LATENCY_NS), block_size=512))
