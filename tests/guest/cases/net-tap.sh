#!/bin/sh
# ring3-guest: config=noiommu timeout=300 modules=tun
# The TAP NetPort and `ring3 perf net`, inside a network namespace made for this test (its only
# interfaces: lo and the TAPs made here; no route out). The kernel is the other side:
#  1. tx: ring3 writes 10000 test frames into a TAP; the kernel counts them as received on the
#     interface (rx_packets), and an AF_PACKET socket there (ring3_guest_net_probe capture, which
#     shares no code with ring3) finds every one valid, sequence 0..9999, no duplicate; a TAP
#     that is down refuses them (tx_errors, the run fails);
#  2. rx: the kernel transmits 10000 test frames on the TAP (AF_PACKET socket) and `perf net
#     --rx` receives them all, in order, intact, as many as the interface's tx_packets says;
#     again in interrupt mode with 1514-byte frames; frames of another seed are caught as corrupt;
#  3. a multi-queue TAP (IFF_MULTI_QUEUE): two queues, adaptive mode, sizes 60-1514: two streams
#     of 2000 frames each arrive whole;
#  4. fwd between two TAPs: what the kernel sends on one arrives on the other, all 3000 frames,
#     MAC addresses swapped;
#  5. over uio_pci_generic: virtio-net sends 10000 frames in poll mode, interrupt mode is refused
#     (no MSI-X through UIO); the e1000e sends 10000 frames in poll mode and 2000 in interrupt
#     mode, on INTx (its driver falls back to it without MSI-X).
set -eu
. /tests/lib.sh

if [ "${RING3_NET_NETNS:-}" != 1 ]; then
  # A new network namespace, and a mount namespace for a sysfs that shows it.
  RING3_NET_NETNS=1 exec unshare --net --mount sh "$0"
fi
mount -t sysfs sysfs /sys
[ -c /dev/net/tun ] || fail "/dev/net/tun is missing (module tun not loaded?)"
expect_eq "$(ls /sys/class/net | tr '\n' ' ')" "lo " "interfaces in the test's network namespace"
expect_eq "$(ip route 2>&1)" "" "routes in the test's network namespace"
# No IPv6 chatter (router solicitations, DAD) on the TAPs: the counts below are ours alone.
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6

probe=ring3_guest_net_probe
counter() { cat "/sys/class/net/$1/statistics/$2"; }
# ---- 1. tx -----------------------------------------------------------------------------------
must $probe mktap r3tap0
must ip link set r3tap0 up
rx_before=$(counter r3tap0 rx_packets)
$probe capture r3tap0 10000 120 >/tmp/capture.out 2>&1 &
capture_pid=$!
wait_for 10 "the capture socket on r3tap0" grep -q ready /tmp/capture.out
perf_net tx tap:r3tap0 --tx --count 10000 || fail "perf net --tx failed"
out=$(cat /tmp/perf-net.json)
expect_contains "$out" '"ok":true' "the tx report"
expect_eq "$(json_number packets /tmp/perf-net.json)" 10000 "frames ring3 sent"
expect_eq "$(json_number tx_packets /tmp/perf-net.json)" 10000 "tx_packets of ring3's queue"
expect_eq "$(json_number tx_errors /tmp/perf-net.json)" 0 "tx_errors of ring3's queue"
rc=0
wait $capture_pid || rc=$?
cat /tmp/capture.out
emit "capture tx" </tmp/capture.out
[ $rc -eq 0 ] || fail "the capture on r3tap0 did not see 10000 valid test frames"
expect_contains "$(cat /tmp/capture.out)" "stream 0: 10000 frames, sequences 0..9999" "the capture"
expect_eq "$(($(counter r3tap0 rx_packets) - rx_before))" 10000 "rx_packets of r3tap0 (the kernel's count)"

# A TAP that is down takes no frames: each write fails, and the run with it.
must ip link set r3tap0 down
if perf_net tx-down tap:r3tap0 --tx --count 100; then fail "perf net --tx into a TAP that is down passed"; fi
expect_contains "$(cat /tmp/perf-net.err)" "the link of tap:r3tap0 is down" "the warning"
expect_eq "$(json_number tx_errors /tmp/perf-net.json)" 100 "tx_errors into a TAP that is down"
must ip link set r3tap0 up

# ---- 2. rx -----------------------------------------------------------------------------------
tx_before=$(counter r3tap0 tx_packets)
perf_net_start rx tap:r3tap0 --rx --count 10000 --time 120s
wait_for 10 "ring3 attached to r3tap0 (carrier)" grep -qx 1 /sys/class/net/r3tap0/carrier
must $probe send r3tap0 10000 1 64
perf_net_finish rx || fail "perf net --rx failed"
out=$(cat /tmp/perf-net.json)
expect_contains "$out" '"ok":true' "the rx report"
for field in lost reordered duplicates corrupt stale; do
  expect_eq "$(json_number "$field" /tmp/perf-net.json)" 0 "$field frames (rx)"
done
expect_eq "$(json_number test_frames /tmp/perf-net.json)" 10000 "test frames received"
delivered=$(($(counter r3tap0 tx_packets) - tx_before))
expect_eq "$(json_number rx_packets /tmp/perf-net.json)" "$delivered" \
  "frames ring3 read = tx_packets of r3tap0 (the kernel's count)"
expect_eq "$(counter r3tap0 tx_dropped)" 0 "tx_dropped of r3tap0"

perf_net_start rx-interrupt tap:r3tap0 --rx --mode interrupt --seed 7 --count 2000 --time 120s
wait_for 10 "ring3 attached to r3tap0 (carrier)" grep -qx 1 /sys/class/net/r3tap0/carrier
must $probe send r3tap0 2000 7 1514
perf_net_finish rx-interrupt || fail "perf net --rx --mode interrupt failed"
out=$(cat /tmp/perf-net.json)
expect_contains "$out" '"mode":"interrupt"' "the interrupt-mode rx report"
expect_contains "$out" '"ok":true' "the interrupt-mode rx report"
expect_eq "$(json_number test_frames /tmp/perf-net.json)" 2000 "1514-byte test frames received"
expect_eq "$(json_number bytes /tmp/perf-net.json)" $((2000 * 1514)) "bytes received"

perf_net_start rx-wrong-seed tap:r3tap0 --rx --seed 8 --count 100 --time 5s
wait_for 10 "ring3 attached to r3tap0 (carrier)" grep -qx 1 /sys/class/net/r3tap0/carrier
must $probe send r3tap0 100 9 200
if perf_net_finish rx-wrong-seed; then fail "perf net --rx accepted frames of another seed"; fi
expect_eq "$(json_number corrupt /tmp/perf-net.json)" 100 "frames of another seed found corrupt"
expect_contains "$(cat /tmp/perf-net.json)" "check word wrong" "the problems reported"
must $probe rmtap r3tap0

# ---- 3. a multi-queue TAP ----------------------------------------------------------------------
must $probe mktap r3mq0 multi
must ip link set r3mq0 up
rx_before=$(counter r3mq0 rx_packets)
$probe capture r3mq0 4000 120 >/tmp/capture.out 2>&1 &
capture_pid=$!
wait_for 10 "the capture socket on r3mq0" grep -q ready /tmp/capture.out
perf_net tx-mq tap:r3mq0 --tx --queues 2 --mode adaptive --size 60-1514 --count 4000 ||
  fail "perf net --tx --queues 2 failed"
expect_contains "$(cat /tmp/perf-net.json)" '"ok":true' "the multi-queue tx report"
rc=0
wait $capture_pid || rc=$?
cat /tmp/capture.out
emit "capture tx-mq" </tmp/capture.out
[ $rc -eq 0 ] || fail "the capture on r3mq0 did not see 4000 valid test frames"
expect_contains "$(cat /tmp/capture.out)" "stream 0: 2000 frames, sequences 0..1999" "the capture"
expect_contains "$(cat /tmp/capture.out)" "stream 1: 2000 frames, sequences 0..1999" "the capture"
expect_eq "$(($(counter r3mq0 rx_packets) - rx_before))" 4000 "rx_packets of r3mq0"
must_fail ring3 perf net tap:r3mq0 --tx --queues 1 --count 1
expect_contains "$OUT" "is not a single-queue TAP" "the error of a single-queue open of r3mq0"
must $probe rmtap r3mq0 multi

# ---- 4. forwarding between two TAPs -------------------------------------------------------------
# The kernel sends on r3a; ring3 reads r3a's fd and writes each frame, MAC addresses swapped, into
# r3b's fd; the kernel receives it on r3b, where the capture checks it.
must $probe mktap r3a
must $probe mktap r3b
must ip link set r3a up
must ip link set r3b up
$probe capture r3b 3000 120 >/tmp/capture.out 2>&1 &
capture_pid=$!
wait_for 10 "the capture socket on r3b" grep -q ready /tmp/capture.out
echo "+ ring3 perf net tap:r3a --fwd tap:r3b --count 3000 --time 120s &"
ring3 perf net tap:r3a --fwd tap:r3b --count 3000 --time 120s >/tmp/fwd.out 2>/tmp/fwd.err &
fwd_pid=$!
wait_for 10 "ring3 attached to r3a (carrier)" grep -qx 1 /sys/class/net/r3a/carrier
wait_for 10 "ring3 attached to r3b (carrier)" grep -qx 1 /sys/class/net/r3b/carrier
must $probe send r3a 3000 1 128
rc=0
wait $fwd_pid || rc=$?
cat /tmp/fwd.err /tmp/fwd.out
emit "perf net fwd" </tmp/fwd.out
[ $rc -eq 0 ] || fail "perf net --fwd failed"
expect_contains "$(cat /tmp/fwd.out)" "forwarded 3,000 packets (384,000 bytes)" "the fwd report"
expect_contains "$(tail -n1 /tmp/fwd.out)" "net_fwd_pps: " "the fwd report's last line"
rc=0
wait $capture_pid || rc=$?
cat /tmp/capture.out
emit "capture fwd" </tmp/capture.out
[ $rc -eq 0 ] || fail "the capture on r3b did not see 3000 valid test frames"
expect_contains "$(cat /tmp/capture.out)" "stream 0: 3000 frames, sequences 0..2999" "the capture"
expect_contains "$(cat /tmp/capture.out)" \
  "first test frame: destination 02:00:00:00:00:09, source ff:ff:ff:ff:ff:ff" \
  "the capture (MAC addresses swapped)"
must $probe rmtap r3a
must $probe rmtap r3b

# ---- 5. PCI NICs over uio_pci_generic --------------------------------------------------------
# virtio-net is driven (poll mode; DMA at physical addresses), the e1000e too, also on INTx.
must modprobe uio_pci_generic
echo 32 >/proc/sys/vm/nr_hugepages
vnet=$(find_device 1af4:1041)
must ring3 bind "$vnet" uio_pci_generic
perf_net uio-tx "uio:$vnet" --tx --count 10000 --size 60-1514 || fail "perf net --tx over UIO failed"
expect_contains "$(cat /tmp/perf-net.json)" '"ok":true' "the report of perf net --tx over UIO"
expect_eq "$(json_number tx_packets /tmp/perf-net.json)" 10000 "tx_packets over UIO"
must_fail ring3 perf net "uio:$vnet" --tx --mode interrupt --count 1
expect_contains "$OUT" "interrupt mode needs at least 2 (use --mode poll)" \
  "perf net --mode interrupt over UIO"
e1000e=$(find_device 8086:10d3)
must ring3 bind "$e1000e" uio_pci_generic
perf_net uio-e1000e-tx "uio:$e1000e" --tx --count 10000 --size 60-1514 ||
  fail "perf net --tx on the e1000e over UIO failed"
expect_eq "$(json_number tx_packets /tmp/perf-net.json)" 10000 "tx_packets of the e1000e over UIO"
capture uio-e1000e-intx env RING3_LOG=info ring3 perf net "uio:$e1000e" --tx --mode interrupt \
  --count 2000 --size 1514 || fail "perf net --tx --mode interrupt on the e1000e over UIO failed"
expect_contains "$OUT" "interrupts INTx" "the e1000e driver's log over UIO"
