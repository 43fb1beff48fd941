#!/bin/sh
# ring3-guest: config=noiommu timeout=300
# The device layer through uio_pci_generic without an IOMMU: INTx, DMA at physical addresses of
# pinned hugepages. The C++ checks are tests/guest/programs/device_test.cpp.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
e1000e=$(find_device 8086:10d3)
export RING3_NVME=$nvme RING3_E1000E=$e1000e RING3_NVME_SERIAL=ring3-nvme0
[ -z "$(ls /sys/kernel/iommu_groups)" ] || fail "IOMMU groups exist: this case needs no IOMMU"

echo 32 >/proc/sys/vm/nr_hugepages
expect_eq "$(cat /proc/sys/vm/nr_hugepages)" 32 "hugepages reserved"

must modprobe uio_pci_generic
must ring3 bind "$nvme" uio_pci_generic
must ring3 bind "$e1000e" uio_pci_generic

must ring3_guest_device_tests --gtest_filter='Uio.*'

# INTx through /dev/uioN: 1000 causes, each cleared and the line re-armed.
capture irq-test-uio ring3 irq-test "uio:$e1000e" --count 1000
echo "$OUT"
expect_contains "$OUT" "irq_received: 1000/1000" "ring3 irq-test through UIO"

# NVMe admin completions on vector 0 (INTx), each waited for through the interrupt fd.
capture irq-test-nvme-uio ring3 irq-test "uio:$nvme" --count 200
echo "$OUT"
expect_contains "$OUT" "irq_received: 200/200" "ring3 irq-test of the NVMe through UIO"
