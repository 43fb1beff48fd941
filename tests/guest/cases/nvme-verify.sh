#!/bin/sh
# ring3-guest: config=iommu timeout=240 modules=none
# Issue 4 ("Done when" 1 and 2): `ring3 perf blk --verify` through VFIO writes a tagged pattern over
# every block of the 64 MiB namespace at 4k, 8k (PRP2), 64k (PRP list) and 2M (split at MDTS), reads
# it back and checks it; then interrupt mode (the device's vfio-msix counts must grow while it runs),
# adaptive mode and two queues, each on its own region. The host filled the backing file with
# random bytes; checks/nvme-verify.py recomputes every block of it from the runs' reports.
# Layout at power-off: [0,16m) interrupt, [16m,24m) adaptive, [24m,32m) 2 queues poll,
# [32m,48m) 2 queues interrupt, [48m,64m) the last full run (2M).
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
dev=vfio:$nvme
load_vfio
must ring3 bind "$nvme" vfio-pci
capture identify ring3 nvme identify "$dev"
echo "$OUT"
expect_contains "$OUT" "block size           512 bytes" "ring3 nvme identify"
expect_contains "$OUT" "size                 131072 blocks" "ring3 nvme identify"

# Every block, sequentially, once per request size; a new seed each time.
seed=$((0x5eed << 16))
full() {  # full BS [more perf options]
  local bs=$1 extra
  shift
  extra="$*"
  seed=$((seed + 1))
  perf_blk "ns1 full-$bs${extra:+ $extra}" "$dev" --rw write --verify --size all --bs "$bs" \
    --qd 32 --seed "$seed" "$@"
  expect_contains "$OUT" '"lba_count":131072' "the range of the $bs run"
  last_seed=$seed
  last_bs=$bs
}
full 4k
full 8k
full 64k
if ring3 perf blk --help 2>&1 | grep -q -- '--no-sgl'; then
  full 64k --no-sgl  # PRP lists although the controller offers SGLs
else
  log "ring3 perf blk has no --no-sgl option: no run with SGLs off (runs use SGLs where offered)"
fi
full 2M
printf 'seed %s\nbs %s\n' "$last_seed" "$last_bs" | emit verify-seed

# Interrupt mode: the device's MSI-X vectors (vfio-msix lines in /proc/interrupts, which come
# with the vectors and go when the device is closed) must count up from before the run to during
# it; with two queues, two vectors.
msix_run() {  # msix_run NAME MIN_VECTORS PERF_ARGS...
  local name=$1 min=$2 grown
  shift 2
  irq_counts vfio-msix "$nvme" | sed 's/^/0 /' >/tmp/irq.samples
  perf_blk_start "$name" "$@"
  sample_while "$PERF_PID" /tmp/irq.samples irq_counts vfio-msix "$nvme"
  perf_blk_finish "$name"
  irq_growth /tmp/irq.samples >/tmp/irq.growth
  echo "vfio-msix vectors of $nvme (name, count before the run, last count seen during it):"
  cat /tmp/irq.growth
  emit "irq $name" </tmp/irq.growth
  grown=$(awk '$3 > $2' /tmp/irq.growth | wc -l)
  [ "$grown" -ge "$min" ] ||
    fail "$name: $grown vfio-msix vector(s) of $nvme counted up during the run, expected $min"
  echo "ok: $grown vfio-msix vector(s) of $nvme counted up during the run"
}
seed=$((seed + 1))
msix_run "ns1 interrupt" 1 "$dev" --mode interrupt --rw write --verify --bs 4k --qd 32 \
  --offset 0 --size 16m --seed "$seed"
seed=$((seed + 1))
perf_blk "ns1 adaptive" "$dev" --mode adaptive --rw write --verify --bs 64k --qd 32 \
  --offset 16m --size 8m --seed "$seed"
seed=$((seed + 1))
perf_blk "ns1 queues-2" "$dev" --queues 2 --rw write --verify --bs 16k --qd 32 \
  --offset 24m --size 8m --seed "$seed"
expect_contains "$OUT" '"queues":2' "the report of the --queues 2 run"
seed=$((seed + 1))
msix_run "ns1 queues-2-interrupt" 2 "$dev" --queues 2 --mode interrupt --rw write --verify \
  --bs 4k --qd 16 --offset 32m --size 16m --seed "$seed"
