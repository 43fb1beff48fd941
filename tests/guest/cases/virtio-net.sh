#!/bin/sh
# ring3-guest: config=iommu timeout=290 modules=none
# Issue 8: ring3's virtio-net driver through VFIO, on seven QEMU virtio-net NICs whose backends
# all stay on this host (cases/virtio-net.py). No kernel network driver is loaded.
#  1. features: VERSION_1, ACCESS_PLATFORM, EVENT_IDX, MAC, STATUS, CTRL_VQ and MQ negotiated (the
#     log); MQ on a one-queue backend gives one pair: --queues 2 is refused, saying so;
#  2. tx: 100,000 frames of 60..1514 bytes (poll mode), then 20,000 of 1514 (interrupt mode); the
#     host's filter-dump capture must hold exactly these, in order, byte for byte
#     (checks/virtio-net.py, which builds the frames itself);
#  3. rx: the host sends 100,000 frames of 60..1514 bytes into rx0 (poll mode), then 20,000 of
#     1514 bytes (interrupt mode): all received, in order, intact;
#  4. fwd: g0 -> [wire] -> a0 => ring3 fwd => b0 -> [wire] -> r0 (each wire a TCP connection on
#     127.0.0.1): g0 sends for 10 s, a0/b0 forward, r0 receives: nothing lost, dropped or
#     reordered;
#  5. a legacy-only virtio-net (disable-modern=on) is refused with the reason.
set -eu
. /tests/lib.sh

load_vfio
nics=$(lspci -Dn -d 1af4:1041 | awk '{print $1}' | sort)
set -- $nics
[ $# -eq 6 ] || fail "expected 6 modern virtio-net NICs, found $#: $nics"
tx=$1 rx=$2 g=$3 a=$4 b=$5 r=$6
for nic in $nics; do
  must ring3 bind "$nic" vfio-pci
done
legacy=$(find_device 1af4:1000)
must ring3 bind "$legacy" vfio-pci
# The NICs are on the command line in this order (tx0, rx0, g0, a0, b0, r0), each behind its own
# root port; their MAC addresses (the hook's) tell whether the order holds.
check_mac() {
  expect_contains "$(cat /tmp/perf-net.json)" "\"mac\":\"$2\"" "the MAC address of $1"
}

# ---- 1. features and queue pairs -----------------------------------------------------------
# (A receive run: nothing is sent, so the capture holds only the runs of part 2.)
capture features env RING3_LOG=info ring3 perf net "vfio:$tx" --rx --time 1s
offered=$(echo "$OUT" | grep "virtio features offered")
negotiated=$(echo "$OUT" | grep "virtio features negotiated")
for f in VERSION_1 ACCESS_PLATFORM EVENT_IDX NET_MAC NET_STATUS NET_CTRL_VQ NET_MQ; do
  expect_contains "$negotiated" " $f" "the negotiated features"
done
for f in NET_MRG_RXBUF NET_CTRL_RX NET_CTRL_GUEST_OFFLOADS; do
  expect_contains "$offered" " $f" "the offered features"
  expect_not_contains "$negotiated" " $f" "the negotiated features (not used)"
done
expect_contains "$OUT" "1 of 1 queue pair(s)" "the driver's queue pairs (mq=on, one-queue backend)"
must_fail ring3 perf net "vfio:$tx" --tx --queues 2 --count 10
expect_contains "$OUT" "has 1 queue pair(s)" "perf net --queues 2"

# ---- 2. tx into the capture -----------------------------------------------------------------
perf_net tx-poll "vfio:$tx" --tx --count 100000 --size 60-1514 --seed 1415053313 ||
  fail "perf net --tx (poll) failed"
check_mac tx0 52:54:00:00:00:10
expect_eq "$(json_number tx_packets /tmp/perf-net.json)" 100000 "tx_packets of the poll run"
perf_net tx-interrupt "vfio:$tx" --tx --mode interrupt --count 20000 --size 1514 \
  --seed 1415053314 || fail "perf net --tx (interrupt) failed"
expect_eq "$(json_number tx_packets /tmp/perf-net.json)" 20000 "tx_packets of the interrupt run"

# ---- 3. rx from the host --------------------------------------------------------------------
perf_net_start rx-poll "vfio:$rx" --rx --count 100000 --time 150s --seed 1381498881
perf_net_wait_running rx-poll
host_action feed rx-poll
perf_net_finish rx-poll || fail "perf net --rx (poll) failed"
check_mac rx0 52:54:00:00:00:11
out=$(cat /tmp/perf-net.json)
expect_contains "$out" '"test_frames":100000' "the poll receiver's test frames"
for k in lost corrupt reordered duplicates; do
  expect_contains "$out" "\"$k\":0" "the poll receiver's $k"
done
perf_net_start rx-interrupt "vfio:$rx" --rx --mode interrupt --count 20000 --time 100s \
  --seed 1381498882
perf_net_wait_running rx-interrupt
host_action feed rx-interrupt
perf_net_finish rx-interrupt || fail "perf net --rx (interrupt) failed"
out=$(cat /tmp/perf-net.json)
expect_contains "$out" '"test_frames":20000' "the interrupt receiver's test frames"
for k in lost corrupt reordered duplicates; do
  expect_contains "$out" "\"$k\":0" "the interrupt receiver's $k"
done
irq_counts vfio-msix "$rx"

# ---- 4. fwd between two ports ---------------------------------------------------------------
perf_net_start fwd-rx "vfio:$r" --rx --mode adaptive --time 40s --seed 1180106753
rx_pid=$PERF_PID
perf_net_start fwd "vfio:$a" --fwd "vfio:$b" --time 32s
fwd_pid=$PERF_PID
perf_net_wait_running fwd-rx
perf_net_wait_running fwd
perf_net fwd-tx "vfio:$g" --tx --time 10s --size 60-1514 --seed 1180106753 ||
  fail "perf net --tx into the forwarder failed"
sent=$(json_number tx_packets /tmp/perf-net.json)
perf_net_finish fwd "$fwd_pid" || fail "perf net --fwd failed"
forwarded=$(json_number packets /tmp/perf-net.json)
expect_contains "$(cat /tmp/perf-net.json)" '"dropped":0' "the forwarder's dropped frames"
perf_net_finish fwd-rx "$rx_pid" || fail "perf net --rx behind the forwarder failed"
out=$(cat /tmp/perf-net.json)
expect_contains "$out" "\"test_frames\":$sent" "frames received behind the forwarder (g0 sent $sent)"
expect_eq "$forwarded" "$sent" "frames forwarded (g0 sent $sent)"
for k in lost corrupt reordered duplicates stale; do
  expect_contains "$out" "\"$k\":0" "the receiver behind the forwarder: $k"
done
echo "fwd: $sent frames sent, $forwarded forwarded, all received in order"

# ---- 5. a legacy-only NIC -------------------------------------------------------------------
must_fail ring3 perf net "vfio:$legacy" --tx --count 1
expect_contains "$OUT" "legacy" "perf net on a legacy-only virtio-net"
