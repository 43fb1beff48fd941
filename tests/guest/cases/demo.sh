#!/bin/sh
# ring3-guest: config=iommu append=quiet
# `make demo`: what ring3 sees in a machine with an NVMe drive and an e1000e NIC.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
e1000e=$(find_device 8086:10d3)
echo
echo "================ ring3 ls ================"
ring3 ls
echo
echo "================ ring3 show $nvme (NVMe) ================"
ring3 show "$nvme"
echo
echo "================ ring3 show $e1000e (e1000e) ================"
ring3 show "$e1000e"
echo

# Hand both devices to VFIO and drive them from user space.
load_vfio >/dev/null
ring3 bind "$nvme" vfio-pci
ring3 bind "$e1000e" vfio-pci
echo
echo "================ ring3 nvme identify vfio:$nvme ================"
ring3 nvme identify "vfio:$nvme"
echo
echo "================ ring3 irq-test vfio:$e1000e --count 200 ================"
ring3 irq-test "vfio:$e1000e" --count 200
echo
echo "================ ring3 perf blk vfio:$nvme --rw randread --qd 32 --time 3s ================"
ring3 perf blk "vfio:$nvme" --rw randread --bs 4k --qd 32 --time 3s --mode poll

