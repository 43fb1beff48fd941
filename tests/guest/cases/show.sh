#!/bin/sh
# ring3-guest: config=iommu
# `ring3 show` of every device against `lspci -vv`; judged on the host by checks/show.py.
set -eu
. /tests/lib.sh

all_devices | emit sysfs-devices
capture lspci-n lspci -Dn
for d in $(all_devices); do
  capture "ring3-show $d" ring3 show "$d"
  capture "lspci-vv $d" lspci -vv -s "$d"
done
