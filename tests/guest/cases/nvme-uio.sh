#!/bin/sh
# ring3-guest: config=noiommu timeout=300 modules=none
# Issue 4 ("Done when" 7): without an IOMMU, through uio_pci_generic, the verify workload passes
# with DMA at physical addresses of pinned hugepages, polling and with INTx interrupts (their count
# on the uio_pci_generic line grows). checks/nvme-uio.py recomputes the written regions of the
# backing file and checks that every other MiB still holds the host's random fill.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
dev=uio:$nvme
[ -z "$(ls /sys/kernel/iommu_groups)" ] || fail "IOMMU groups exist: this case needs no IOMMU"
echo 64 >/proc/sys/vm/nr_hugepages
expect_eq "$(cat /proc/sys/vm/nr_hugepages)" 64 "2 MiB hugepages reserved"
must modprobe uio_pci_generic
must ring3 bind "$nvme" uio_pci_generic
capture identify ring3 nvme identify "$dev"
echo "$OUT"
expect_contains "$OUT" "serial number        ring3-nvme0" "ring3 nvme identify through UIO"

perf_blk "ns1 uio-poll" "$dev" --mode poll --rw write --verify --size 16m --bs 64k --qd 32 \
  --seed 7700001
expect_contains "$OUT" '"mode":"poll"' "the report of the poll run"

intx=$(irq_total uio_pci_generic)
perf_blk "ns1 uio-interrupt" "$dev" --mode interrupt --rw write --verify --offset 16m --size 16m \
  --bs 64k --qd 32 --seed 7700002
expect_contains "$OUT" '"mode":"interrupt"' "the report of the interrupt run"
after=$(irq_total uio_pci_generic)
echo "INTx (uio_pci_generic) interrupts: $intx before the interrupt-mode run, $after after it"
printf 'before %s\nafter %s\n' "$intx" "$after" | emit "irq uio"
[ "$after" -gt "$intx" ] || fail "the INTx count of uio_pci_generic did not grow in interrupt mode"
grep uio_pci_generic /proc/interrupts
