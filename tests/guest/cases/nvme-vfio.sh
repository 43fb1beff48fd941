#!/bin/sh
# ring3-guest: config=iommu timeout=300
# ring3's NVMe driver through VFIO: identify and SMART from the tool, then the driver's tests in
# ring3_guest_nvme_tests (tests/guest/programs/nvme_test.cpp): identify, write/read/verify at 4k,
# 8k (PRP2), 64k (PRP list), 2M (split at MDTS) with PRPs and SGLs in poll, interrupt and adaptive
# mode (Sizes/*), bad input (NvmeErrors.*), and poll mode's steady state without allocation or
# system call (NvmePollMode.*). Fault injection and events are nvme-faults'.
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
run ring3_guest_nvme_tests --gtest_filter='Nvme.*:Sizes/*:NvmeErrors.*:NvmePollMode.*' ||
  fail "ring3_guest_nvme_tests failed"
