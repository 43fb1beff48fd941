#!/bin/sh
# ring3-guest: config=iommu timeout=280 modules=none
# Issue 8: ring3's virtio-blk driver through VFIO (modern-only device, iommu_platform=on,
# num-queues=2, packed=on, 64 MiB on a file the host filled with random bytes). The device offers
# packed rings; the driver must not take them and work with split rings. `ring3 perf blk --verify`
# writes a tagged pattern over every block and reads it back (2M, split into chains at the
# driver's max transfer; 64k; then 4k requests); random mixed read/write runs with --verify (one
# queue polling, two queues on interrupts); then
# sequential writes, each on its own region, in interrupt mode (the queue's vfio-msix vector
# must count up), two queues in interrupt mode (two vectors), two queues polling, and adaptive;
# poll mode's steady state under seccomp strict mode (no system call) with no allocation.
# checks/virtio-blk-verify.py recomputes every block of the backing file from the runs' reports.
# Layout at power-off: [0,16m) interrupt, [16m,32m) 2 queues interrupt, [32m,40m) 2 queues poll,
# [40m,48m) adaptive, [48m,64m) the last full run (4k).
set -eu
. /tests/lib.sh

blk=$(find_device 1af4:1042)
dev=vfio:$blk
load_vfio
must ring3 bind "$blk" vfio-pci

# The feature negotiation, as the driver logs it.
capture features env RING3_LOG=info ring3 perf blk "$dev" --rw read --size 1m --ios 1
echo "$OUT" | grep "virtio features"
offered=$(echo "$OUT" | grep "virtio features offered")
negotiated=$(echo "$OUT" | grep "virtio features negotiated")
expect_contains "$offered" "RING_PACKED" "the features QEMU offers (packed=on)"
expect_not_contains "$negotiated" "RING_PACKED" "the negotiated features"
for f in VERSION_1 ACCESS_PLATFORM EVENT_IDX INDIRECT_DESC BLK_MQ BLK_FLUSH; do
  expect_contains "$negotiated" " $f" "the negotiated features"
done

seed=$((0x7b1c << 16))
next_seed() { seed=$((seed + 1)); }

for bs in 2M 64k 4k; do
  next_seed
  perf_blk "ns1 full-$bs" "$dev" --rw write --verify --size all --bs "$bs" --qd 32 --seed "$seed"
  expect_contains "$OUT" '"lba_count":131072' "the range of the $bs run"
  last_seed=$seed
  last_bs=$bs
done
printf 'seed %s\nbs %s\n' "$last_seed" "$last_bs" | emit verify-seed

# Random mixed runs (checked by the program itself: reads of slots it wrote must match); the
# sequential runs after them overwrite their regions, so the host can check every block.
next_seed
perf_blk "ns1 randrw" "$dev" --rw randrw --verify --bs 4k --qd 16 --offset 0 --size 16m \
  --ios 4000 --seed "$seed"
next_seed
perf_blk_msix "ns1 randrw-queues-2-interrupt" "$blk" 2 "$dev" --queues 2 --mode interrupt \
  --rw randrw --verify --bs 8k --qd 8 --offset 16m --size 16m --ios 4000 --seed "$seed"
expect_contains "$OUT" '"queues":2' "the report of the --queues 2 randrw run"

next_seed
perf_blk_msix "ns1 interrupt" "$blk" 1 "$dev" --mode interrupt --rw write --verify --bs 4k \
  --qd 32 --offset 0 --size 16m --seed "$seed"
next_seed
perf_blk_msix "ns1 queues-2-interrupt" "$blk" 2 "$dev" --queues 2 --mode interrupt --rw write \
  --verify --bs 16k --qd 16 --offset 16m --size 16m --seed "$seed"
next_seed
perf_blk "ns1 queues-2" "$dev" --queues 2 --rw write --verify --bs 16k --qd 32 --offset 32m \
  --size 8m --seed "$seed"
expect_contains "$OUT" '"queues":2' "the report of the --queues 2 run"
next_seed
perf_blk "ns1 adaptive" "$dev" --mode adaptive --rw write --verify --bs 64k --qd 32 \
  --offset 40m --size 8m --seed "$seed"

# Poll mode's steady state makes no system call and no allocation: the block-face test of
# ring3_guest_nvme_tests (it only uses open_block_device and the Queue) on this device, whose
# notify structure is mapped through VFIO. It reads, so the layout above stays.
RING3_NVME=$blk RING3_BACKEND=vfio run ring3_guest_nvme_tests --gtest_filter='NvmePollMode.*' ||
  fail "the poll-mode steady state on virtio-blk made a system call or an allocation"

# A third queue does not exist (num-queues=2): refused up front, not a crash.
must_fail ring3 perf blk "$dev" --queues 3 --rw read --ios 10
expect_contains "$OUT" "I/O queue(s)" "perf blk --queues 3"
