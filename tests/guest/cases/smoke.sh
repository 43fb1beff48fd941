#!/bin/sh
# ring3-guest: config=iommu
# The harness's own check, independent of ring3: QEMU's devices are there and the data channel
# carries text intact (checks/smoke.py).
set -eu
. /tests/lib.sh

for id in 1b36:0010 8086:10d3 1af4:1041 1af4:1042; do
  bdf=$(find_device $id)
  log "$id at $bdf, driver $(driver_of "$bdf")"
done
capture lspci-n lspci -Dn
seq 1 2000 | emit numbers
