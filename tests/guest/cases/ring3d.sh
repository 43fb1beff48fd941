#!/bin/sh
# ring3-guest: config=iommu timeout=240 modules=none
# Issue 9 (first part): ring3d, the I/O server, hands the NVMe to an unprivileged process.
#  1. ring3d binds the device its policy names to vfio-pci and listens; `ring3d --check` and a
#     policy with a typo (refused, naming file, line and key);
#  2. uid 1000 (no access to /dev/vfio: opening vfio: directly fails) writes and verifies 16 MiB
#     through `ring3 perf blk ring3d:BDF`; uid 1001 is refused, the message naming the rule;
#  3. while uid 1000 holds the device, a second claim is refused naming the owner, and
#     `ring3 ps` shows the owner; the holder is SIGKILLed, ring3d logs the device's return and
#     reset, and the device can be claimed (and verified) again;
#  4. ring3d SIGKILLed and restarted while uid 1000 runs a verify workload: the workload
#     completes; the restarted ring3d shows the claim (ring3 ps), refuses a second one naming the
#     owner, and takes the device back when the owner's process exits (a pidfd);
#  5. 10,000 bad requests over 8 connections (malformed JSON, oversized, fds attached, unknown
#     verbs and keys, wrong version, absent devices) are each refused; ring3d's RSS before and
#     after is printed; then a good claim still works.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
load_vfio
mkdir -p /etc/ring3 /run/ring3
sock=/run/ring3/ring3d.sock
export RING3D_SOCKET=$sock
probe=ring3_guest_broker_probe

# ---- 1. policy and start --------------------------------------------------------------------
cat >/etc/ring3/typo.toml <<EOF
[[device]]
id = "1b36:0010"
user = ["1000"]
EOF
must_fail ring3d --config /etc/ring3/typo.toml --check
expect_contains "$OUT" \
  "read policy /etc/ring3/typo.toml:3: unknown key 'user' in [[device]] (known: address, id, class, users, groups, backend, driver); did you mean 'users'?" \
  "ring3d on a policy with a typo"
cat >/etc/ring3/ring3d.toml <<EOF
# The emulated NVMe, for uid 1000 only.
[[device]]
id = "1b36:0010"
users = ["1000"]
EOF
must ring3d --config /etc/ring3/ring3d.toml --check
expect_contains "$OUT" "[[device]] #1 (/etc/ring3/ring3d.toml line 2: 1b36:0010)" "ring3d --check"
ring3d --config /etc/ring3/ring3d.toml >/tmp/ring3d.log 2>&1 &
ring3d_pid=$!
wait_for 20 "ring3d's socket" test -S "$sock"
cat /tmp/ring3d.log
expect_eq "$(driver_of "$nvme")" vfio-pci "the NVMe's driver once ring3d manages it"

# ---- 2. an unprivileged driver --------------------------------------------------------------
ulimit -l unlimited  # DMA pinning is charged to the claimant's RLIMIT_MEMLOCK
must_fail run_as 1000 ring3 perf blk "vfio:$nvme" --rw read --ios 1
expect_contains "$OUT" "ermission denied" "uid 1000 opening the VFIO group itself"
capture user-verify run_as 1000 ring3 perf blk "ring3d:$nvme" --rw write --verify --size 16m \
  --bs 64k --qd 16 --seed 4242 --json
expect_contains "$OUT" '"ok":true' "uid 1000's write/verify through ring3d"
expect_contains "$OUT" '"mismatches":0' "uid 1000's verify"
must_fail run_as 1001 ring3 perf blk "ring3d:$nvme" --rw read --ios 1
expect_contains "$OUT" \
  "ring3d: user 1001 is not allowed by [[device]] #1 (/etc/ring3/ring3d.toml line 2: 1b36:0010)" \
  "uid 1001's claim"

# ---- 3. exclusive claims, ps, and the owner's death -----------------------------------------
run_as 1000 ring3 perf blk "ring3d:$nvme" --rw read --time 60s --qd 4 >/tmp/holder.log 2>&1 &
holder=$!
wait_for 20 "the holder's claim" sh -c "ring3 ps | grep -q 'pid $holder'"
capture ps ring3 ps
expect_contains "$OUT" "pid $holder user 1000" "ring3 ps"
must_fail run_as 1000 ring3 perf blk "ring3d:$nvme" --rw read --ios 1
expect_contains "$OUT" "busy, owned by pid $holder (user 1000) since" "a second claim"
kill -9 "$holder"
wait "$holder" 2>/dev/null || true
wait_for 20 "ring3d taking the device back" grep -q "back from pid $holder" /tmp/ring3d.log
grep "back from pid $holder" /tmp/ring3d.log
capture ps-after ring3 ps --json
expect_contains "$OUT" '"owner":null' "ring3 ps after the owner died"
capture user-verify-again run_as 1000 ring3 perf blk "ring3d:$nvme" --rw read --verify \
  --size 16m --bs 64k --qd 16 --seed 4242 --json
expect_contains "$OUT" '"ok":true' "the written data read back through a new claim"
expect_contains "$OUT" '"mismatches":0' "the written data after the reset"

# ---- 4. ring3d killed and restarted under a running driver ----------------------------------
run_as 1000 ring3 perf blk "ring3d:$nvme" --rw randrw --verify --time 15s --size 16m --bs 4k \
  --qd 8 --seed 4343 --json >/tmp/survivor.json 2>/tmp/survivor.err &
survivor=$!
wait_for 20 "the survivor's claim" sh -c "ring3 ps | grep -q 'pid $survivor'"
kill -9 "$ring3d_pid"
wait "$ring3d_pid" 2>/dev/null || true
ring3d --config /etc/ring3/ring3d.toml >>/tmp/ring3d.log 2>&1 &
ring3d_pid=$!
wait_for 20 "ring3d answering again" sh -c "ring3 ps"
capture ps-recovered ring3 ps
expect_contains "$OUT" "pid $survivor user 1000" "ring3 ps after ring3d's restart"
must_fail run_as 1000 ring3 perf blk "ring3d:$nvme" --rw read --ios 1
expect_contains "$OUT" "busy, owned by pid $survivor (user 1000)" \
  "a second claim after ring3d's restart"
rc=0
wait "$survivor" || rc=$?
cat /tmp/survivor.err
cat /tmp/survivor.json
emit "survivor" </tmp/survivor.json
[ $rc -eq 0 ] || fail "the driver running across ring3d's restart failed (exit status $rc)"
expect_contains "$(cat /tmp/survivor.json)" '"ok":true' "the survivor's report"
expect_contains "$(cat /tmp/survivor.json)" '"mismatches":0' "the survivor's verify"
wait_for 20 "the restarted ring3d taking the device back" \
  grep -q "back from pid $survivor (its process exited)" /tmp/ring3d.log
grep "recovered\|back from pid $survivor" /tmp/ring3d.log

# ---- 5. bad requests ------------------------------------------------------------------------
capture flood run_as 1001 $probe flood "$sock" "$ring3d_pid" 8 10000
expect_contains "$OUT" "refused 10000 of 10000 bad requests over 8 connections" "the flood"
echo "$OUT" | grep VmRSS
capture status $probe request "$sock" '{"version":1,"verb":"status"}'
expect_contains "$OUT" '"ok":true' "ring3d's status after the flood"
kill -0 "$ring3d_pid" || fail "ring3d died during the flood"
capture good-claim-after-flood run_as 1000 ring3 perf blk "ring3d:$nvme" --rw read --ios 100 --json
expect_contains "$OUT" '"ok":true' "a good claim after the flood"

kill "$ring3d_pid"
wait "$ring3d_pid" || true
cat /tmp/ring3d.log
