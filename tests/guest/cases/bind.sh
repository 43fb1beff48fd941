#!/bin/sh
# ring3-guest: config=iommu
# The NVMe controller from the kernel's nvme driver to vfio-pci and back.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
wait_for 30 "/dev/nvme0n1 at boot" test -b /dev/nvme0n1
expect_eq "$(driver_of "$nvme")" nvme "driver of $nvme at boot"

# A device owned by a kernel driver cannot be mapped: ring3 must say why and what to do.
must_fail ring3 bar dump "$nvme" 0 0x8:4 --width 32
expect_contains "$OUT" nvme "the error of 'ring3 bar dump' on a device bound to nvme"
expect_contains "$OUT" "ring3 bind" "the error of 'ring3 bar dump' on a device bound to nvme"

must ring3 bind "$nvme" vfio-pci
expect_eq "$(driver_of "$nvme")" vfio-pci "driver of $nvme after 'ring3 bind $nvme vfio-pci'"
[ -e "/dev/vfio/$(basename "$(readlink /sys/bus/pci/devices/$nvme/iommu_group)")" ] ||
  fail "no /dev/vfio/<group> for $nvme"

# NVMe VS register (offset 8): QEMU 7.2 implements NVMe 1.4.
must ring3 bar dump "$nvme" 0 0x8:4 --width 32
echo "$OUT" | grep -qx '00000008: 00010400' ||
  fail "'ring3 bar dump $nvme 0 0x8:4 --width 32' printed no line '00000008: 00010400'"
echo "ok: NVMe VS = 0x00010400"

must ring3 unbind "$nvme"
expect_eq "$(driver_of "$nvme")" none "driver of $nvme after 'ring3 unbind'"

must ring3 bind "$nvme" nvme
expect_eq "$(driver_of "$nvme")" nvme "driver of $nvme after 'ring3 bind $nvme nvme'"
wait_for 30 "/dev/nvme0n1 back with the nvme driver" test -b /dev/nvme0n1
