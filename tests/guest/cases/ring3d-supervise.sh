#!/bin/sh
# ring3-guest: config=iommu timeout=300 modules=none
# Issue 9, supervision and sandbox: ring3d runs an NVMe writer as uid 1002 in its sandbox and
# restarts it when it dies.
#  1. the writer, started by ring3d, probes its sandbox: /etc/shadow, socket(AF_INET), ptrace of
#     ring3d, /sys/bus/pci and /dev/vfio are each refused; its I/O works (it writes 16 MiB in
#     passes, each acknowledged range reported after a completed flush);
#  2. uid 1000 claims the second NVMe through ring3d and runs a 20 s randrw verify on it;
#     a claim of the supervised device is refused ("reserved for its supervised driver");
#  3. the writer is SIGKILLed in the middle of a pass; ring3d logs the exit, quiesces and resets
#     the device and restarts the writer, which (generation 1) writes the next 16 MiB and exits;
#     `restart_to_first_io_ms` is the time from the kill to its first completed write;
#  4. `ring3 ps` shows the restart and the last exit; the second device's verify completes with
#     no error. Host (checks/ring3d-supervise.py): every range acknowledged before the kill
#     holds its pattern in nvme0's backing file, and generation 1's region its last pass.
set -eu
. /tests/lib.sh

load_vfio
nvmes=$(find_devices 1b36:0010)
nvme0=$(echo "$nvmes" | sed -n 1p)
nvme1=$(echo "$nvmes" | sed -n 2p)
[ -n "$nvme1" ] || fail "two NVMe controllers expected; lspci says: $(lspci -Dn)"
mkdir -p /etc/ring3 /run/ring3
echo 'root:*:20000:0:99999:7:::' >/etc/shadow
chmod 600 /etc/shadow
sock=/run/ring3/ring3d.sock
export RING3D_SOCKET=$sock
log=/tmp/ring3d.log
ON_FAIL_SHOW=$log  # fail() shows ring3d's log
cat >/etc/ring3/ring3d.toml <<EOF
# The writer drives the first NVMe, supervised; uid 1000 may claim the second.
[[device]]
address = "$nvme0"

[device.driver]
command = ["ring3_guest_writer", "ring3d:{device}", "--seed", "7000", "--region-mib", "16",
           "--passes", "0", "--restarted-passes", "2", "--mode", "interrupt", "--probe-sandbox"]
user = 1002
restart = "on-failure"
restart_delay_ms = 0
max_restarts = 3
memlock_mib = 256

[[device]]
address = "$nvme1"
users = [1000]
EOF
must ring3d --config /etc/ring3/ring3d.toml --check
ring3d --config /etc/ring3/ring3d.toml >$log 2>&1 &
ring3d_pid=$!

# ---- 1. the sandbox and the writer's I/O ----------------------------------------------------
wait_for 60 "the writer's first acknowledged range" grep -q "^ack gen=0 pass=0" $log
grep "driver started\|^sandbox:" $log
for what in "open /etc/shadow" "socket(AF_INET)" "ptrace(PTRACE_ATTACH, ring3d)" \
  "stat /sys/bus/pci/devices" "open /dev/vfio/vfio"; do
  grep -q "^sandbox: $what: denied" $log || fail "the sandbox did not refuse: $what"
done
expect_not_contains "$(cat $log)" "ALLOWED" "the sandbox probes"
capture ps ring3 ps
expect_contains "$OUT" "supervised driver: running pid" "ring3 ps with the supervised writer"
writer=$(sed -n 's/^writer gen=0 pid=\([0-9]*\) start.*/\1/p' $log)
[ -n "$writer" ] || fail "the writer did not say its pid"
expect_contains "$OUT" "pid $writer user 1002" "the writer's claim in ring3 ps"
must grep -q "NoNewPrivs:[[:space:]]*1" /proc/$writer/status
must grep -q "CapEff:[[:space:]]*0000000000000000" /proc/$writer/status
must grep -q "Seccomp:[[:space:]]*2" /proc/$writer/status
grep "NoNewPrivs\|CapEff\|CapBnd\|Seccomp" /proc/$writer/status
[ "$(readlink /proc/$writer/ns/net)" != "$(readlink /proc/self/ns/net)" ] ||
  fail "the writer shares ring3d's network namespace"
[ "$(readlink /proc/$writer/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] ||
  fail "the writer shares ring3d's mount namespace"
echo "writer's descriptors: $(ls /proc/$writer/fd | tr '\n' ' ')"

# ---- 2. a second device, another process; the supervised one is reserved --------------------
ulimit -l unlimited
run_as 1000 ring3 perf blk "ring3d:$nvme1" --rw randrw --verify --time 20s --size 16m --bs 4k \
  --qd 8 --seed 4444 --json >/tmp/other.json 2>/tmp/other.err &
other=$!
wait_for 30 "the other driver's claim" sh -c "ring3 ps | grep -q 'pid $other'"
must_fail run_as 1000 ring3 perf blk "ring3d:$nvme0" --rw read --ios 1
expect_contains "$OUT" "reserved for its supervised driver" "a claim of the supervised device"

# ---- 3. the kill, in the middle of a pass ---------------------------------------------------
wait_for 60 "the writer in its second pass" grep -q "^ack gen=0 pass=1" $log
capture kill ring3_guest_broker_probe kill "$writer"
killed_ns=$(echo "$OUT" | sed -n 's/.*realtime_ns=\([0-9]*\).*/\1/p')
wait_for 30 "the restarted writer's first completed write" grep -q "^first-io gen=1" $log
first_ns=$(sed -n 's/^first-io gen=1 realtime_ns=\([0-9]*\)$/\1/p' $log)
exec_ns=$(sed -n 's/^writer gen=1 pid=[0-9]* start realtime_ns=\([0-9]*\)$/\1/p' $log)
opened_ns=$(sed -n 's/^opened gen=1 realtime_ns=\([0-9]*\) .*/\1/p' $log)
grep "^opened gen=1" $log
echo "restart_to_first_io_ms: $(((first_ns - killed_ns) / 1000000))" \
  "(kill to the new writer's main: $(((exec_ns - killed_ns) / 1000000));" \
  "device claimed and initialised: $(((opened_ns - exec_ns) / 1000000));" \
  "first write: $(((first_ns - opened_ns) / 1000000)))"
grep "quiesced and reset in" $log
grep "pid $writer" $log
must grep -q "driver pid $writer killed by signal 9 (SIGKILL); restart 1 in 0 ms" $log
must grep -q "back from pid $writer" $log
wait_for 120 "the restarted writer to finish" grep -q "^writer gen=1 done" $log
wait_for 20 "ring3d to see it exit" grep -q "exit status 0; not restarted" $log

# ---- 4. ps, the other device ----------------------------------------------------------------
capture ps-after ring3 ps
expect_contains "$OUT" "supervised driver: stopped, restarts 1, last exit: exit status 0" \
  "ring3 ps after the restart"
capture ps-json ring3 ps --json
expect_contains "$OUT" '"restarts":1' "ring3 ps --json"
rc=0
wait "$other" || rc=$?
cat /tmp/other.err
[ $rc -eq 0 ] || fail "the other device's driver failed (exit status $rc)"
expect_contains "$(cat /tmp/other.json)" '"ok":true' "the other device's verify"
expect_contains "$(cat /tmp/other.json)" '"mismatches":0' "the other device's verify"
grep "^ack \|^writer \|^first-io " $log | emit writer

kill "$ring3d_pid"
wait "$ring3d_pid" || true
tail -n 20 $log
