#!/bin/sh
# ring3-guest: config=iommu timeout=300 modules=none
# Issue 7 ("Done when" 4): namespaces the block face cannot drive as plain blocks are named and
# refused. `ring3 nvme identify` shows each namespace's command set, metadata and protection
# (nsid 2 zoned, nsid 3 with 8-byte metadata, nsid 4 with protection type 1); `ring3 perf blk`
# on each of them is refused with the reason, before any I/O; nsid 1 (plain) still writes and
# verifies, and checks/nvme-formats.py recomputes its backing file.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
dev=vfio:$nvme
load_vfio
must ring3 bind "$nvme" vfio-pci
capture identify ring3 nvme identify "$dev"
echo "$OUT"
expect_contains "$OUT" "namespaces           256 (NN), 4 active" "ring3 nvme identify"
expect_eq "$(namespace_field 1 "command set")" "NVM (CSI 00h)" "namespace 1 command set"
expect_eq "$(namespace_field 1 "block device")" "yes" "namespace 1 as a block device"
expect_eq "$(namespace_field 2 "command set")" "Zoned Namespace (CSI 02h)" "namespace 2 command set"
expect_eq "$(namespace_field 3 metadata)" "8 bytes per block, separate buffer" "namespace 3 metadata"
expect_eq "$(namespace_field 3 protection)" "none" "namespace 3 protection"
expect_eq "$(namespace_field 4 protection)" "type 1" "namespace 4 protection"
for ns in 2 3 4; do
  expect_contains "$(namespace_field $ns "block device")" "no: it " "namespace $ns as a block device"
done

must_fail ring3 perf blk "$dev" --nsid 2 --rw randwrite --size 1m --time 2s
expect_contains "$OUT" "namespace 2" "the refusal of the zoned namespace"
expect_contains "$OUT" "Zoned Namespace command set (CSI 02h), where writes must go to a zone's write pointer" \
  "the refusal of the zoned namespace"
must_fail ring3 perf blk "$dev" --nsid 3 --rw randread --size 1m --time 2s
expect_contains "$OUT" "8 bytes of metadata per 512-byte block (a separate metadata buffer" \
  "the refusal of the namespace with metadata"
must_fail ring3 perf blk "$dev" --nsid 4 --rw randread --size 1m --time 2s
expect_contains "$OUT" "end-to-end protection information (type 1" \
  "the refusal of the protected namespace"
# The refusals came before any I/O: the zoned namespace took no write.
perf_blk "ns1 all-64k" "$dev" --nsid 1 --rw write --verify --size all --bs 64k --qd 32 --seed 7007001
expect_contains "$OUT" '"ok":true' "the verified run on namespace 1"
