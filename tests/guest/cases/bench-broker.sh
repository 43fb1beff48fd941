#!/bin/sh
# ring3-guest: config=iommu timeout=1500 modules=none
# The guest of bench/broker (not a test; bench/broker/run boots it and reads the figures):
#  1. ring3_guest_broker_bench: open -> first 4 KiB read through ring3d (a claim of the second
#     NVMe) and directly (vfio: on the first, which ring3d does not manage), alternating, 100
#     rounds; prints the medians direct_open_ms and broker_claim_ms;
#  2. a supervised writer on the third NVMe, SIGKILLed 10 times; each time the time from the
#     kill to the restarted writer's first completed write ("restart_ms gen=G: X").
set -eu
. /tests/lib.sh

rounds=$(sed -n 's/.*ring3.rounds=\([0-9]*\).*/\1/p' /proc/cmdline)
kills=$(sed -n 's/.*ring3.kills=\([0-9]*\).*/\1/p' /proc/cmdline)
rounds=${rounds:-100}
kills=${kills:-10}
load_vfio
nvmes=$(find_devices 1b36:0010)
direct=$(echo "$nvmes" | sed -n 1p)
claimed=$(echo "$nvmes" | sed -n 2p)
supervised=$(echo "$nvmes" | sed -n 3p)
[ -n "$supervised" ] || fail "three NVMe controllers expected"
must ring3 bind "$direct" vfio-pci
mkdir -p /etc/ring3 /run/ring3
export RING3D_SOCKET=/run/ring3/ring3d.sock
log=/tmp/ring3d.log
ON_FAIL_SHOW=$log
cat >/etc/ring3/ring3d.toml <<EOF
[[device]]
address = "$claimed"
users = [0]

[[device]]
address = "$supervised"

[device.driver]
command = ["ring3_guest_writer", "ring3d:{device}", "--seed", "9000", "--region-mib", "2",
           "--passes", "0", "--restarted-passes", "0", "--mode", "interrupt"]
user = 1002
restart = "on-failure"
restart_delay_ms = 0
max_restarts = 100
restart_window_s = 3600
memlock_mib = 256
EOF
RING3_LOG=${RING3D_LOG:-info} ring3d --config /etc/ring3/ring3d.toml >$log 2>&1 &
ring3d_pid=$!
wait_for 30 "ring3d" sh -c "ring3 ps"
ulimit -l unlimited

# ---- 1. claim vs direct open ----------------------------------------------------------------
run ring3_guest_broker_bench "$direct" "$claimed" --rounds "$rounds"

# ---- 2. restarts ----------------------------------------------------------------------------
gen=0
while [ $gen -lt "$kills" ]; do
  wait_for 60 "writer generation $gen's first write" grep -q "^first-io gen=$gen " $log
  sleep 0.5
  pid=$(sed -n "s/^writer gen=$gen pid=\([0-9]*\) start.*/\1/p" $log)
  killed_ns=$(ring3_guest_broker_probe kill "$pid" | sed -n 's/.*realtime_ns=\([0-9]*\).*/\1/p')
  next=$((gen + 1))
  wait_for 60 "writer generation $next's first write" grep -q "^first-io gen=$next " $log
  first_ns=$(sed -n "s/^first-io gen=$next realtime_ns=\([0-9]*\)$/\1/p" $log)
  echo "restart_ms gen=$next: $(((first_ns - killed_ns) / 1000000))"
  gen=$next
done
kill "$ring3d_pid"
wait "$ring3d_pid" || true
grep "quiesced and reset in" $log | tail -n 3
