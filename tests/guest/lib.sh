# Helpers for guest test scripts (busybox ash). Source it: `. /tests/lib.sh`.
# A case script exits 0 to pass; any other status (or `fail`) fails the guest.
# The helpers keep their variables local, except $OUT (the output of the last must/must_fail/capture).
# Output on stdout/stderr goes to the console log; `emit` sends data to the host checker.

RING3_DATA=/dev/ttyS1  # the clean data channel (second serial port)

log() { echo "[guest] $*"; }

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

drain_tty() {  # wait until everything written to tty $1 has left the UART
  # stty applies settings with TCSADRAIN, which waits for the output queue to empty.
  stty -F "$1" "$(stty -F "$1" -g)" 2>/dev/null || sleep 1
}

# emit SECTION: copy stdin (text; a missing final newline is added) to the data channel between
# BEGIN/END marker lines.
emit() {
  {
    echo "==== BEGIN $1 ===="
    awk 1
    echo "==== END $1 ===="
  } >"$RING3_DATA"
  drain_tty "$RING3_DATA"
}

# run CMD...: echo the command, run it with its output on the console; returns its status.
run() {
  echo "+ $*"
  "$@"
}

# capture SECTION CMD...: run CMD, emit its stdout+stderr as SECTION, keep it in $OUT; returns
# CMD's status. The console gets the command line and its status (and the output if it failed).
capture() {
  local section=$1 rc=0
  shift
  "$@" >/tmp/capture.out 2>&1 || rc=$?
  OUT=$(cat /tmp/capture.out)
  emit "$section" </tmp/capture.out
  echo "+ $* -> exit $rc, $(wc -l </tmp/capture.out) lines emitted as '$section'"
  [ $rc -eq 0 ] || cat /tmp/capture.out
  return $rc
}

# must CMD...: run CMD (output on the console, kept in $OUT); fail unless it succeeds.
must() {
  local rc=0
  echo "+ $*"
  OUT=$("$@" 2>&1) || rc=$?
  [ -z "$OUT" ] || echo "$OUT"
  [ $rc -eq 0 ] || fail "'$*' exited with status $rc"
}

# must_fail CMD...: run CMD (output on the console, kept in $OUT); fail if it succeeds.
must_fail() {
  local rc=0
  echo "+ $*  (must fail)"
  OUT=$("$@" 2>&1) || rc=$?
  [ -z "$OUT" ] || echo "$OUT"
  [ $rc -ne 0 ] || fail "'$*' succeeded but must fail"
  echo "  (failed as expected, exit status $rc)"
}

expect_eq() {  # expect_eq ACTUAL EXPECTED WHAT
  [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"
  echo "ok: $3 = '$2'"
}

expect_contains() {  # expect_contains TEXT NEEDLE WHAT
  case $1 in
    *"$2"*) echo "ok: $3 contains '$2'" ;;
    *) fail "$3 does not contain '$2'; it is:
$1" ;;
  esac
}

expect_not_contains() {  # expect_not_contains TEXT NEEDLE WHAT
  case $1 in
    *"$2"*) fail "$3 contains '$2'; it is:
$1" ;;
    *) echo "ok: $3 does not contain '$2'" ;;
  esac
}

# all_devices: every PCI function's address (0000:00:01.0), in lspci's order.
all_devices() {
  ls /sys/bus/pci/devices | sort
}

# find_devices VENDOR:DEVICE (hex, e.g. 1b36:0010): the addresses of matching functions.
find_devices() {
  local want_vendor=0x${1%:*} want_device=0x${1#*:} d
  for d in $(all_devices); do
    [ "$(cat "/sys/bus/pci/devices/$d/vendor")" = "$want_vendor" ] &&
      [ "$(cat "/sys/bus/pci/devices/$d/device")" = "$want_device" ] && echo "$d"
  done
  return 0
}

# find_device VENDOR:DEVICE: the address of the first matching function; fails if there is none.
find_device() {
  local found
  found=$(find_devices "$1" | head -n1)
  [ -n "$found" ] || fail "no PCI device $1; lspci -Dn says:
$(lspci -Dn)"
  echo "$found"
}

# driver_of BDF: the bound driver's name, or "none".
driver_of() {
  if [ -e "/sys/bus/pci/devices/$1/driver" ]; then
    basename "$(readlink "/sys/bus/pci/devices/$1/driver")"
  else
    echo none
  fi
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.1 s until it succeeds; fail after SECONDS.
wait_for() {
  local limit=$1 what=$2 tries=$(($1 * 10))
  shift 2
  while ! "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    [ $tries -gt 0 ] || fail "timed out after ${limit}s waiting for $what"
    sleep 0.1
  done
  echo "ok: $what"
}

# load_vfio: vfio-pci plus the type1 IOMMU backend (busybox modprobe ignores vfio's softdep on it).
load_vfio() {
  must modprobe vfio-pci
  must modprobe vfio_iommu_type1
}
