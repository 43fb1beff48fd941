#!/bin/sh
# ring3-guest: config=noiommu
# Without an IOMMU (and Debian's kernel has no no-IOMMU VFIO) vfio-pci cannot take a device:
# ring3 must say so and leave the device usable; uio_pci_generic can take it.
set -eu
. /tests/lib.sh

[ -z "$(ls /sys/kernel/iommu_groups)" ] || fail "IOMMU groups exist: this case needs a guest without an IOMMU"
nvme=$(find_device 1b36:0010)
expect_eq "$(driver_of "$nvme")" nvme "driver of $nvme at boot"

# 1. ring3 sees there is no IOMMU group and refuses before touching the device.
must_fail ring3 bind "$nvme" vfio-pci
expect_contains "$OUT" vfio-pci "the error of 'ring3 bind $nvme vfio-pci'"
expect_contains "$OUT" probe "the error of 'ring3 bind $nvme vfio-pci'"
expect_eq "$(driver_of "$nvme")" nvme "driver of $nvme after the refused bind"

# 2. The kernel's own refusal: make ring3 believe vfio's no-IOMMU mode is on (a file on a tmpfs
# over /sys/module/vfio), so it really unbinds nvme and asks vfio-pci to probe, which fails
# (EINVAL) although the write to drivers_probe succeeds. ring3 must notice from the driver link.
load_vfio
mount -t tmpfs fake-vfio /sys/module/vfio
mkdir /sys/module/vfio/parameters
echo Y >/sys/module/vfio/parameters/enable_unsafe_noiommu_mode
must_fail ring3 bind "$nvme" vfio-pci
umount /sys/module/vfio
expect_contains "$OUT" vfio-pci "the error of 'ring3 bind $nvme vfio-pci' after a failed probe"
expect_contains "$OUT" probe "the error of 'ring3 bind $nvme vfio-pci' after a failed probe"
expect_eq "$(driver_of "$nvme")" none "driver of $nvme after the failed probe"
expect_contains "$(dmesg)" "vfio-pci: probe of $nvme failed" "the kernel log"
expect_eq "$(cat /sys/bus/pci/devices/$nvme/driver_override)" "(null)" "driver_override of $nvme after the failed probe"

must ring3 bind "$nvme" uio_pci_generic
expect_eq "$(driver_of "$nvme")" uio_pci_generic "driver of $nvme after 'ring3 bind $nvme uio_pci_generic'"
wait_for 5 "/dev/uio0" test -c /dev/uio0
