#!/bin/sh
# ring3-guest: config=iommu
# `ring3 ls` against lspci and sysfs; judged on the host by checks/ls.py.
set -eu
. /tests/lib.sh

[ -n "$(ls /sys/kernel/iommu_groups)" ] || fail "no IOMMU groups: is the guest's IOMMU on?"
all_devices | emit sysfs-devices
for d in $(all_devices); do
  group=none
  [ -e /sys/bus/pci/devices/$d/iommu_group ] &&
    group=$(basename "$(readlink /sys/bus/pci/devices/$d/iommu_group)")
  echo "$d $(driver_of "$d") $group"
done | emit sysfs-drivers
capture ring3-ls-json ring3 ls --json
capture ring3-ls ring3 ls
capture lspci-n lspci -Dn
capture lspci lspci -D
capture lspci-vmm lspci -D -vmm
