#!/bin/sh
# ring3-guest: config=noiommu timeout=200 modules=none
# virtio-blk without an IOMMU, through uio_pci_generic: DMA at physical addresses of pinned
# hugepages (the device's ACCESS_PLATFORM "platform" is then the identity), polling, two queues.
# UIO gives no MSI-X, so interrupt mode is refused up front with the reason. checks/virtio-blk-uio.py
# recomputes the written regions of the backing file and checks every other MiB still holds the
# host's random fill.
set -eu
. /tests/lib.sh

blk=$(find_device 1af4:1042)
dev=uio:$blk
[ -z "$(ls /sys/kernel/iommu_groups)" ] || fail "IOMMU groups exist: this case needs no IOMMU"
echo 64 >/proc/sys/vm/nr_hugepages
expect_eq "$(cat /proc/sys/vm/nr_hugepages)" 64 "2 MiB hugepages reserved"
must modprobe uio_pci_generic
must ring3 bind "$blk" uio_pci_generic

perf_blk "ns1 uio-poll" "$dev" --mode poll --rw write --verify --size 16m --bs 64k --qd 32 \
  --seed 7710001
expect_contains "$OUT" '"mode":"poll"' "the report of the poll run"
perf_blk "ns1 uio-queues-2" "$dev" --queues 2 --rw write --verify --offset 32m --size 8m \
  --bs 4k --qd 16 --seed 7710002
expect_contains "$OUT" '"queues":2' "the report of the two-queue run"

must_fail ring3 perf blk "$dev" --mode interrupt --rw read --ios 10
expect_contains "$OUT" "interrupt mode needs at least 2 (use --mode poll)" \
  "perf blk --mode interrupt through UIO"
