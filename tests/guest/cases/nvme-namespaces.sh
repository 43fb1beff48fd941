#!/bin/sh
# ring3-guest: config=iommu timeout=300 modules=none
# Issue 4 ("Done when" 3): two namespaces with different LBA sizes (QEMU nvme-ns, 512 and 4096
# bytes, 16 MiB each): `ring3 nvme identify` shows both with their block sizes and sizes, and
# `ring3 perf blk --nsid N --verify` writes and checks every block of each; checks/nvme-namespaces.py
# recomputes both backing files.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
dev=vfio:$nvme
load_vfio
must ring3 bind "$nvme" vfio-pci
capture identify ring3 nvme identify "$dev"
echo "$OUT"
expect_contains "$OUT" "namespaces           256 (NN), 2 active" "ring3 nvme identify"
expect_eq "$(namespace_field 1 "block size")" "512 bytes (LBA format 0)" "namespace 1 block size"
expect_eq "$(namespace_field 1 size)" "32768 blocks (16.0 MiB)" "namespace 1 size"
expect_eq "$(namespace_field 2 "block size")" "4096 bytes (LBA format 4)" "namespace 2 block size"
expect_eq "$(namespace_field 2 size)" "4096 blocks (16.0 MiB)" "namespace 2 size"

perf_blk "ns1 all-64k" "$dev" --nsid 1 --rw write --verify --size all --bs 64k --qd 32 --seed 4242001
expect_contains "$OUT" '"block_size":512' "the report of namespace 1"
expect_contains "$OUT" '"lba_count":32768' "the report of namespace 1"
perf_blk "ns2 all-64k" "$dev" --nsid 2 --rw write --verify --size all --bs 64k --qd 32 --seed 4242002
expect_contains "$OUT" '"block_size":4096' "the report of namespace 2"
expect_contains "$OUT" '"lba_count":4096' "the report of namespace 2"
# Requests of one 4 KiB block on namespace 2; one smaller than a block, and a namespace the
# controller does not have, are refused.
perf_blk "ns2 bs-4k" "$dev" --nsid 2 --rw write --verify --size 1m --bs 4k --qd 8 --seed 4242003
must_fail ring3 perf blk "$dev" --nsid 2 --rw write --verify --size 1m --bs 512 --seed 1
expect_contains "$OUT" "block size" "the refusal of --bs 512 on namespace 2"
must_fail ring3 perf blk "$dev" --nsid 3 --rw read --size 1m --time 1s
expect_contains "$OUT" "namespace 3" "the refusal of an inactive namespace"
