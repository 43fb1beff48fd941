#!/bin/sh
# ring3-guest: config=iommu timeout=300
# The device layer through VFIO with the emulated IOMMU (issue: device access). The C++ checks are
# tests/guest/programs/device_test.cpp; this script puts the devices in each suite's state.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
e1000e=$(find_device 8086:10d3)
export RING3_NVME=$nvme RING3_E1000E=$e1000e RING3_NVME_SERIAL=ring3-nvme0
wait_for 30 "/dev/nvme0n1 at boot" test -b /dev/nvme0n1

# Devices on their kernel drivers: opening them explains how to hand them over.
must ring3_guest_device_tests --gtest_filter='KernelBound.*'

load_vfio
must ring3 bind "$nvme" vfio-pci
must ring3 bind "$e1000e" vfio-pci

must ring3_guest_device_tests --gtest_filter='Vfio.*-Vfio.UnbindWhileOpenIsHandedBackThroughTheRequestIrq'

# An unprivileged user who owns the group reads config space and registers through VFIO (sysfs
# would give such a user 64 bytes of config space and no BARs at all).
group=$(basename "$(readlink /sys/bus/pci/devices/$nvme/iommu_group)")
chown 65534:65534 "/dev/vfio/$group"
as_nobody() { run_as 65534 "$@"; }
must as_nobody ring3 show "$nvme"
expect_contains "$OUT" "(through VFIO)" "ring3 show as uid 65534"
expect_contains "$OUT" "cap 0x11 MSI-X" "ring3 show as uid 65534"
must as_nobody ring3 bar dump "$nvme" 0 0x8:4 --width 32
expect_eq "$OUT" "00000008: 00010400" "NVMe VS through VFIO as uid 65534"
chown 0:0 "/dev/vfio/$group"

# 1000 software-set causes routed to MSI-X vector 0, each waited for through the eventfd.
capture irq-test-vfio ring3 irq-test "vfio:$e1000e" --count 1000
echo "$OUT"
expect_contains "$OUT" "irq_received: 1000/1000" "ring3 irq-test through VFIO"

# NVMe admin completions on vector 0 (MSI-X), each waited for through the interrupt fd.
capture irq-test-nvme-vfio ring3 irq-test "vfio:$nvme" --count 200
echo "$OUT"
expect_contains "$OUT" "irq_received: 200/200" "ring3 irq-test of the NVMe through VFIO"

# A group with one member on vfio-pci and another on uio_pci_generic is not viable. q35's SATA
# and SMBus functions (00:1f.2, 00:1f.3) share an IOMMU group.
sata=$(find_device 8086:2922)
smbus=$(find_device 8086:2930)
[ "$(readlink /sys/bus/pci/devices/$sata/iommu_group)" = \
  "$(readlink /sys/bus/pci/devices/$smbus/iommu_group)" ] ||
  fail "SATA $sata and SMBus $smbus are not in one IOMMU group"
must modprobe uio_pci_generic
must ring3 bind "$sata" vfio-pci
must ring3 bind "$smbus" uio_pci_generic
RING3_GROUP_VFIO=$sata RING3_GROUP_OTHER=$smbus \
  must ring3_guest_device_tests --gtest_filter='NonViable.*'

# Last, as it takes the e1000e away from vfio-pci: the kernel's request to release the device.
must ring3_guest_device_tests --gtest_filter='Vfio.UnbindWhileOpenIsHandedBackThroughTheRequestIrq'
expect_eq "$(driver_of "$e1000e")" none "driver of $e1000e after the unbind"
