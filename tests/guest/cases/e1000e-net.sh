#!/bin/sh
# ring3-guest: config=iommu timeout=290 modules=none
# ring3's e1000e driver (82574L) through VFIO, on two QEMU e1000e NICs whose backends stay on this
# host (cases/e1000e-net.py), plus an e1000 (82540EM). No kernel network driver is loaded.
#  1. bring-up: the log names the MAC address (RAL0/RAH0, from QEMU's mac=) and the link: up,
#     1000 Mbit/s, full duplex; `ring3 irq-test` (the driver's register declarations) gets its
#     MSI-X interrupts, and ten short runs in a row leave QEMU alive;
#  2. tx: 100,000 frames of 60..1514 bytes (poll mode), then 20,000 of 1514 (interrupt mode); the
#     host's filter-dump capture must hold exactly these, in order, byte for byte
#     (checks/e1000e-net.py, which builds the frames itself);
#  3. rx: the host sends 100,000 frames of 60..1514 bytes into rx0 (poll mode), then 20,000 of
#     1514 bytes (interrupt mode): all received, in order, intact;
#  4. the 82540EM (QEMU e1000) is refused, naming the device and the 82574L.
set -eu
. /tests/lib.sh

load_vfio
nics=$(lspci -Dn -d 8086:10d3 | awk '{print $1}' | sort)
set -- $nics
[ $# -eq 2 ] || fail "expected 2 e1000e NICs, found $#: $nics"
tx=$1 rx=$2
old=$(find_device 8086:100e)
for nic in $nics $old; do
  must ring3 bind "$nic" vfio-pci
done
check_mac() {
  expect_contains "$(cat /tmp/perf-net.json)" "\"mac\":\"$2\"" "the MAC address of $1"
}

# ---- 1. bring-up, link, interrupts --------------------------------------------------------
capture bring-up env RING3_LOG=info ring3 perf net "vfio:$tx" --rx --time 1s
expect_contains "$OUT" "e1000e (82574L) 52:54:00:00:10:10" "the driver's log (MAC address)"
expect_contains "$OUT" "link up 1000 Mbit/s full duplex" "the driver's log (link)"
expect_contains "$OUT" "e1000e statistics:" "the driver's log (statistics at close)"
must_fail ring3 perf net "vfio:$tx" --tx --queues 2 --count 10
expect_contains "$OUT" "one queue pair" "perf net --queues 2"
capture irq-test ring3 irq-test "vfio:$tx" --count 200 || fail "ring3 irq-test failed"
expect_contains "$OUT" "irq_received: 200/200" "irq-test on the e1000e"
# QEMU 7.2's e1000e aborts the machine when a throttling timer, started by every MSI-X message,
# expires after MSI-X was switched off; irq-test and the driver wait it out (registers.hpp,
# interrupt_settle_time). Without that wait, the first few of these runs killed QEMU.
i=0
while [ $i -lt 10 ]; do
  ring3 irq-test "vfio:$tx" --count 2 >/dev/null || fail "ring3 irq-test --count 2 (run $i) failed"
  i=$((i + 1))
done

# ---- 2. tx into the capture -----------------------------------------------------------------
perf_net tx-poll "vfio:$tx" --tx --count 100000 --size 60-1514 --seed 1415053313 ||
  fail "perf net --tx (poll) failed"
check_mac tx0 52:54:00:00:10:10
expect_eq "$(json_number tx_packets /tmp/perf-net.json)" 100000 "tx_packets of the poll run"
perf_net tx-interrupt "vfio:$tx" --tx --mode interrupt --count 20000 --size 1514 \
  --seed 1415053314 || fail "perf net --tx (interrupt) failed"
expect_eq "$(json_number tx_packets /tmp/perf-net.json)" 20000 "tx_packets of the interrupt run"

# ---- 3. rx from the host --------------------------------------------------------------------
perf_net_start rx-poll "vfio:$rx" --rx --count 100000 --time 150s --seed 1381502977
perf_net_wait_running rx-poll
host_action feed rx-poll
perf_net_finish rx-poll || fail "perf net --rx (poll) failed"
check_mac rx0 52:54:00:00:10:11
out=$(cat /tmp/perf-net.json)
expect_contains "$out" '"test_frames":100000' "the poll receiver's test frames"
for k in lost corrupt reordered duplicates; do
  expect_contains "$out" "\"$k\":0" "the poll receiver's $k"
done
perf_net_start rx-interrupt "vfio:$rx" --rx --mode interrupt --count 20000 --time 100s \
  --seed 1381502978
perf_net_wait_running rx-interrupt
host_action feed rx-interrupt
perf_net_finish rx-interrupt || fail "perf net --rx (interrupt) failed"
out=$(cat /tmp/perf-net.json)
expect_contains "$out" '"test_frames":20000' "the interrupt receiver's test frames"
for k in lost corrupt reordered duplicates; do
  expect_contains "$out" "\"$k\":0" "the interrupt receiver's $k"
done
irq_counts vfio-msix "$rx"

# ---- 4. the 82540EM -------------------------------------------------------------------------
must_fail ring3 perf net "vfio:$old" --tx --count 1
expect_contains "$OUT" "$old" "perf net on the e1000 (names the device)"
expect_contains "$OUT" "82540EM" "perf net on the e1000"
expect_contains "$OUT" "only the 82574L (e1000e" "perf net on the e1000"
