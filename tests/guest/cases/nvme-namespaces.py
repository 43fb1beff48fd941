"""nvme-namespaces' machine: the NVMe controller without a drive of its own and two namespaces on
it, nsid 1 with 512-byte LBAs and nsid 2 with 4096-byte LBAs, each on a 16 MiB raw file filled
with random bytes before the boot."""
MiB = 1 << 20


def configure(guest):
    guest.only("nvme0")
    guest.nvme_namespaces(
        guest.nvme_namespace(1, size=16 * MiB, block_size=512, fill="random"),
        guest.nvme_namespace(2, size=16 * MiB, block_size=4096, fill="random"))
