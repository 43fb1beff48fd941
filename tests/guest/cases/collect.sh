#!/bin/sh
# ring3-guest: config=iommu
# For tests/guest/collect-configs: every device's sysfs config space (all of it, as root: 4096
# bytes for PCIe functions, 256 for conventional ones) and lspci's decoding of it, as hex text.
set -eu
. /tests/lib.sh

for d in $(all_devices); do
  f=/sys/bus/pci/devices/$d
  id="$(sed 's/^0x//' $f/vendor)_$(sed 's/^0x//' $f/device)"
  xxd -p "$f/config" | emit "config $d $id"
  capture "lspci $d" lspci -vv -s "$d"
done
