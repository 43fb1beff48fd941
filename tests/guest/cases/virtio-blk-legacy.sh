#!/bin/sh
# ring3-guest: config=iommu timeout=120 modules=none
# Bad input for the block drivers: a legacy-only virtio-blk (disable-modern=on: transitional id
# 1af4:1001, no virtio structure capabilities) and a device ring3 has no block driver for
# (e1000e), both on vfio-pci. `ring3 perf blk` must refuse each with a message that names the
# problem, exit with status 1 (an error, not a signal), and leave the device bound and usable.
set -eu
. /tests/lib.sh

# refuse NAME NEEDLE DEVICE: ring3 perf blk on DEVICE fails with status 1 and says NEEDLE.
refuse() {
  local name=$1 needle=$2 rc=0
  shift 2
  echo "+ ring3 perf blk $* --rw read --ios 10  (must fail)"
  OUT=$(ring3 perf blk "$@" --rw read --ios 10 2>&1) || rc=$?
  echo "$OUT"
  printf 'exit %s\n%s\n' "$rc" "$OUT" | emit "$name"
  expect_eq "$rc" 1 "exit status of ring3 perf blk on the $name device"
  expect_contains "$OUT" "$needle" "ring3 perf blk on the $name device"
}

legacy=$(find_device 1af4:1001)
lspci -vvs "$legacy" | grep -i -e "capabilities" -e "Region" || true
nic=$(find_device 8086:10d3)
load_vfio
must ring3 bind "$legacy" vfio-pci
must ring3 bind "$nic" vfio-pci

refuse legacy "is a legacy-only virtio device" "vfio:$legacy"
expect_contains "$OUT" "ring3 drives modern (VIRTIO 1.0+) devices only" "the legacy message"
refuse legacy-interrupt "is a legacy-only virtio device" "vfio:$legacy" --mode interrupt
refuse unknown "no block driver for [8086:10d3] class 02:00:00; ring3 drives NVMe" "vfio:$nic"
expect_contains "$OUT" "virtio-blk (1af4:1042, modern)" "the unknown-device message"

# Nothing was left half-open: both are still on vfio-pci and a second attempt says the same.
expect_eq "$(driver_of "$legacy")" vfio-pci "driver of $legacy after the refusals"
refuse legacy-again "is a legacy-only virtio device" "vfio:$legacy"
