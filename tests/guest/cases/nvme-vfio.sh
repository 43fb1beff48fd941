#!/bin/sh
# ring3-guest: config=iommu timeout=300
# ring3's NVMe driver through VFIO: identify, write/read/verify at several sizes and wait modes.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
export RING3_NVME=$nvme RING3_BACKEND=vfio
load_vfio
must ring3 bind "$nvme" vfio-pci
must ring3 nvme identify "vfio:$nvme"
expect_contains "$OUT" "serial number        ring3-nvme0" "ring3 nvme identify"
must ring3 nvme smart "vfio:$nvme"
expect_contains "$OUT" "critical warning     0x00 (none)" "ring3 nvme smart"
must ring3_guest_nvme_tests
