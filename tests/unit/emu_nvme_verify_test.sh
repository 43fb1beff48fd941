#!/bin/sh
# The NVMe driver against `ring3 emu nvme` over vfio-user, no root and no QEMU (issue #11, done-when
# 1): `perf blk --verify` with 1, 4 and 8 queues in poll and interrupt mode, then the backing file
# is checked on the host by tests/guest/checks/block_pattern.py, which shares no code with the
# driver or the emulator. Last, SIGTERM stops the emulator and removes its socket.
#   emu_nvme_verify_test.sh RING3 BLOCK_PATTERN_PY
set -u
ring3=$1
checker=$2
dir=$(mktemp -d /tmp/ring3-emu-verify.XXXXXX)
sock=$dir/nvme.sock
image=$dir/disk.img
log=$dir/emu.log
failures=0
emu_pid=
cleanup() {
  [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

"$ring3" emu nvme --socket "$sock" --size 8M --backing "$image" --queues 8 2>"$log" &
emu_pid=$!
tries=0
until grep -q "listening on $sock" "$log"; do
  tries=$((tries + 1))
  if [ $tries -gt 100 ] || ! kill -0 "$emu_pid" 2>/dev/null; then
    echo "FAIL: the emulator did not start:"; cat "$log"; exit 1
  fi
  sleep 0.05
done

seed=11
for case in "1 poll" "4 interrupt" "8 poll" "8 interrupt"; do
  set -- $case
  seed=$((seed + 1))
  out=$(timeout 60 "$ring3" perf blk --rw write --verify --bs 16k --qd 8 --queues "$1" \
        --mode "$2" --seed $seed "vfio-user:$sock" 2>&1)
  rc=$?
  case $out in
    *"verify passed"*) ;;
    *) rc=1 ;;
  esac
  if [ $rc -ne 0 ]; then
    echo "FAIL: perf blk --verify, $1 queue(s), $2 mode:"; echo "$out"; failures=$((failures + 1))
    continue
  fi
  if python3 "$checker" --block-size 512 --seed $seed "$image" >"$dir/check.txt" 2>&1; then
    echo "ok: $1 queue(s), $2 mode: driver verify passed, host check of the backing file passed"
  else
    echo "FAIL: host check after $1 queue(s), $2 mode:"; cat "$dir/check.txt"
    failures=$((failures + 1))
  fi
done

kill -TERM "$emu_pid"
wait "$emu_pid"
rc=$?
emu_pid=
if [ $rc -ne 0 ] || [ -e "$sock" ]; then
  echo "FAIL: after SIGTERM the emulator exited $rc and the socket is $( [ -e "$sock" ] && echo there || echo gone)"
  failures=$((failures + 1))
else
  echo "ok: SIGTERM: exit 0, socket removed"
fi
exit $failures
