#!/bin/sh
# Each fault `ring3 emu nvme --fault` injects is detected by the NVMe driver over vfio-user and
# surfaced as an error by `ring3 perf blk` (issue #11, done-when 3): no crash (no signal exit),
# no hang past the I/O timeout (bounded by `timeout`), an error named in the output. A delay
# alone is no error: that run must succeed.
#   emu_nvme_faults_test.sh RING3
set -u
ring3=$1
dir=$(mktemp -d /tmp/ring3-emu-faults.XXXXXX)
sock=$dir/nvme.sock
failures=0
emu_pid=
cleanup() {
  [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

start_emu() {  # start_emu FAULT
  rm -f "$dir/emu.log"
  "$ring3" emu nvme --socket "$sock" --size 16M --fault "$1" --once 2>"$dir/emu.log" &
  emu_pid=$!
  tries=0
  until grep -q "listening on" "$dir/emu.log" 2>/dev/null; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ]; then echo "FAIL: the emulator did not start"; cat "$dir/emu.log"; exit 1; fi
    sleep 0.05
  done
}
stop_emu() {
  kill "$emu_pid" 2>/dev/null
  wait "$emu_pid" 2>/dev/null
  emu_pid=
}

for fault in drop:40 corrupt:40 cfs:40 vanish:40 delay:2000; do
  start_emu "$fault"
  out=$(timeout 40 "$ring3" perf blk --rw randread --ios 200 --qd 4 --io-timeout 500 \
        "vfio-user:$sock" 2>&1)
  rc=$?
  stop_emu
  if [ $rc -eq 124 ] || [ $rc -ge 128 ]; then
    echo "FAIL: $fault: perf blk hung or crashed (exit $rc):"; echo "$out"
    failures=$((failures + 1))
    continue
  fi
  case $fault in
    delay:*)
      case $out in
        *" 0 errors"*) if [ $rc -eq 0 ]; then echo "ok: $fault: completed, late"; continue; fi ;;
      esac
      echo "FAIL: $fault: a delay is no error (exit $rc):"; echo "$out"; failures=$((failures + 1)) ;;
    *)
      case $out in
        *"error:"*|*"failed"*) echo "ok: $fault: surfaced as an error (exit $rc)" ;;
        *) echo "FAIL: $fault: not detected:"; echo "$out"; failures=$((failures + 1)) ;;
      esac ;;
  esac
done
exit $failures
