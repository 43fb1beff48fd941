# Helpers for guest test scripts (busybox ash). Source it: `. /tests/lib.sh`.
# A case script exits 0 to pass; any other status (or `fail`) fails the guest.
# The helpers keep their variables local, except $OUT (the output of the last must/must_fail/capture).
# Output on stdout/stderr goes to the console log; `emit` sends data to the host checker.

RING3_DATA=/dev/ttyS1  # the clean data channel (second serial port)

log() { echo "[guest] $*"; }

fail() {
  echo "FAIL: $*" >&2
  if [ -n "${ON_FAIL_SHOW:-}" ] && [ -f "$ON_FAIL_SHOW" ]; then
    echo "---- the last 60 lines of $ON_FAIL_SHOW ----" >&2
    tail -n 60 "$ON_FAIL_SHOW" >&2
  fi
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

# ---- host actions ----------------------------------------------------------------------------------

# host_action ACTION ARGS...: asks run-guest, on the host, to perform a whitelisted QMP action now
# (e.g. `host_action qom-set nvme0 smart_critical_warning 1`). run-guest watches the console for
# the line `RING3-HOST-ACTION ...` and logs what it did; there is no answer to the guest: wait for
# the action's effect. A program may print the marker line itself (flushed, at the start of a line,
# on the console: not under `must` or `capture`, which hold the output until the program ends).
host_action() {
  echo "RING3-HOST-ACTION $*"
  drain_tty /dev/console
}

# ---- interrupts --------------------------------------------------------------------------------------

# irq_counts WORD...: one line "IRQ COUNT NAME" for each /proc/interrupts line that contains every
# WORD (COUNT summed over the CPUs, NAME the last column, e.g. vfio-msix[1](0000:01:00.0)).
irq_counts() {
  awk -v words="$*" 'NR > 1 {
      n = split(words, w, " ")
      for (i = 1; i <= n; i++) if (index($0, w[i]) == 0) next
      s = 0
      for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i
      print $1, s, $NF
    }' /proc/interrupts
}

# irq_total WORD...: the sum of irq_counts' counts (0 when no line matches).
irq_total() {
  irq_counts "$@" | awk '{ s += $2 } END { print s + 0 }'
}

# alive PID: the process runs (exists and is not a zombie waiting for `wait`).
alive() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)
  [ -n "$state" ] && [ "$state" != Z ]
}

# sample_while PID FILE CMD...: every 0.1 s while process PID is alive, appends CMD's output lines
# to FILE, each prefixed with the sample's number (1, 2, ...). For counters that exist only while a
# program runs (VFIO's interrupt lines come with the vectors and go when it closes the device).
sample_while() {
  local pid=$1 file=$2 n=0
  shift 2
  while alive "$pid"; do
    n=$((n + 1))
    "$@" | sed "s/^/$n /" >>"$file"
    sleep 0.1
  done
}

# irq_growth FILE: from irq_counts samples in FILE ("SAMPLE IRQ COUNT NAME" lines; sample 0 taken
# before the program started, then sample_while's), one line per interrupt: "NAME BEFORE LAST",
# its count in sample 0 (0 if it did not exist yet) and in the last sample that had it.
irq_growth() {
  awk '$1 == 0 { before[$4] = $3; next }
       { seen[$4] = 1; last[$4] = $3 }
       END { for (k in seen) print k, (k in before) ? before[k] : 0, last[k] }' "$1" | sort
}

# ---- block workloads ---------------------------------------------------------------------------------

# perf_blk_start NAME ARGS...: starts `ring3 perf blk ARGS... --json` in the background ($PERF_PID).
perf_blk_start() {
  local name=$1
  shift
  echo "+ ring3 perf blk $* --json   ['$name']"
  ring3 perf blk "$@" --json >/tmp/perf.json 2>/tmp/perf.err &
  PERF_PID=$!
}

# perf_blk_finish NAME: waits for it, emits its JSON report as section "perf NAME" and fails unless
# it succeeded (exit 0 and "ok":true in the report).
perf_blk_finish() {
  local name=$1 rc=0
  wait "$PERF_PID" || rc=$?
  OUT=$(cat /tmp/perf.json)
  cat /tmp/perf.err
  echo "$OUT"
  if [ -s /tmp/perf.json ]; then emit "perf $name" </tmp/perf.json; fi
  [ $rc -eq 0 ] || fail "ring3 perf blk ['$name'] exited with status $rc"
  expect_contains "$OUT" '"ok":true' "the report of ['$name']"
}

# perf_blk NAME ARGS...: ring3 perf blk ARGS... --json in the foreground, as above. Name runs
# "ns<nsid> <label>" for checks/nvme-backing.py, which recomputes the backing files from them.
perf_blk() {
  perf_blk_start "$@"
  perf_blk_finish "$1"
}

# perf_blk_msix NAME BDF MIN_VECTORS PERF_ARGS...: perf_blk in the background while sampling the
# device's vfio-msix lines in /proc/interrupts (they come with the vectors and go when the device
# is closed); fails unless at least MIN_VECTORS of them counted up from before the run to during
# it. The growth is emitted as section "irq NAME".
perf_blk_msix() {
  local name=$1 bdf=$2 min=$3 grown
  shift 3
  irq_counts vfio-msix "$bdf" | sed 's/^/0 /' >/tmp/irq.samples
  perf_blk_start "$name" "$@"
  sample_while "$PERF_PID" /tmp/irq.samples irq_counts vfio-msix "$bdf"
  perf_blk_finish "$name"
  irq_growth /tmp/irq.samples >/tmp/irq.growth
  echo "vfio-msix vectors of $bdf (name, count before the run, last count seen during it):"
  cat /tmp/irq.growth
  emit "irq $name" </tmp/irq.growth
  grown=$(awk '$3 > $2' /tmp/irq.growth | wc -l)
  [ "$grown" -ge "$min" ] ||
    fail "$name: $grown vfio-msix vector(s) of $bdf counted up during the run, expected $min"
  echo "ok: $grown vfio-msix vector(s) of $bdf counted up during the run"
}

# namespace_field NSID FIELD: FIELD's value in the "namespace NSID" paragraph of the
# `ring3 nvme identify` output in $OUT.
namespace_field() {
  echo "$OUT" | awk -v ns="namespace $1" -v field="$2" '
    /^namespace / { inside = ($0 == ns) }
    inside && index($0, "  " field " ") == 1 { sub("^  " field " +", ""); print; exit }'
}

# ---- ring3 perf net ------------------------------------------------------------------------------

# json_number KEY FILE: the last value of "KEY":N in a JSON report (the top-level one when the
# key appears per queue too, as "port" comes after "per_queue").
json_number() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"; }

# perf_net NAME ARGS...: ring3 perf net ARGS --json, report emitted as section "perf net NAME".
perf_net() {
  local name=$1 rc=0
  shift
  echo "+ ring3 perf net $* --json   ['$name']"
  ring3 perf net "$@" --json >/tmp/perf-net.json 2>/tmp/perf-net.err || rc=$?
  cat /tmp/perf-net.err
  cat /tmp/perf-net.json
  emit "perf net $name" </tmp/perf-net.json
  return $rc
}
# perf_net_start NAME ARGS...: the same in the background ($PERF_PID; its output in files of its
# own, so several can run at once); perf_net_finish NAME [PID] waits for it, prints and emits its
# report, and leaves it in /tmp/perf-net.json too.
perf_net_files() { echo "/tmp/perf-net-$(echo "$1" | tr -c 'A-Za-z0-9\n' '_')"; }
perf_net_start() {
  local name=$1 files
  shift
  files=$(perf_net_files "$name")
  echo "+ ring3 perf net $* --json &   ['$name']"
  ring3 perf net "$@" --json >"$files.json" 2>"$files.err" &
  PERF_PID=$!
}
perf_net_finish() {
  local rc=0 files
  files=$(perf_net_files "$1")
  wait "${2:-$PERF_PID}" || rc=$?
  cat "$files.err"
  cat "$files.json"
  cp "$files.json" /tmp/perf-net.json
  emit "perf net $1" <"$files.json"
  return $rc
}
# perf_net_wait_running NAME: until the background run NAME printed its first progress line.
perf_net_wait_running() {
  wait_for 30 "perf net '$1' running" grep -q '1s\]' "$(perf_net_files "$1").err"
}
