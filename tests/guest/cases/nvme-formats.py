"""nvme-formats' machine: one NVMe controller with four namespaces of 16 MiB: nsid 1 plain
(512-byte LBAs, filled with random bytes), nsid 2 zoned (Zoned Namespace command set, 4 MiB
zones), nsid 3 with 8 bytes of metadata per block, nsid 4 with 8 bytes of metadata carrying
end-to-end protection information of type 1."""
MiB = 1 << 20


def configure(guest):
    guest.only("nvme0")
    plain = guest.nvme_namespace(1, size=16 * MiB, block_size=512, fill="random")
    zoned = guest.nvme_namespace(2, size=16 * MiB, block_size=4096)
    zoned.props.update({"zoned": "true", "zoned.zone_size": "4M"})
    metadata = guest.nvme_namespace(3, size=16 * MiB, block_size=512)
    metadata.props["ms"] = 8
    protected = guest.nvme_namespace(4, size=16 * MiB, block_size=512)
    protected.props.update({"ms": 8, "pi": 1})
    guest.nvme_namespaces(plain, zoned, metadata, protected)
