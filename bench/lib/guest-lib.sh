# Shared part of the benchmark guests' /init scripts (dash), packed as /bench/lib.sh by
# bench/lib/build-image. Sourcing it mounts the pseudo file systems, sends the output to the
# console and defines the helpers below. Results go to the host as sections on the data channel
# (ttyS1), read by bench/lib/guest_bench.py:
#   ==== BEGIN NAME ====
#   ...
#   ==== END NAME ====
# The verdict reaches QEMU through isa-debug-exit: 42 when every run finished (QEMU exits 85), 21
# on the first failure (QEMU exits 43), with the console line RING3-BENCH-DONE or RING3-BENCH-FAIL.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1

DATA=/dev/ttyS1

arg() {  # arg NAME DEFAULT: value of NAME=value on the kernel command line
  v=$(tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n1)
  echo "${v:-$2}"
}

drain() { stty -F "$1" "$(stty -F "$1" -g)" 2>/dev/null || sleep 1; }

emit() {  # emit SECTION < text: to the data channel between marker lines
  { echo "==== BEGIN $1 ===="; awk 1; echo "==== END $1 ===="; } >"$DATA"
  drain "$DATA"
}

finish() {  # finish CODE LINE
  echo "$2"
  drain /dev/console
  printf "\\$(printf %03o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
  echo "init: isa-debug-exit did not stop QEMU; powering off"
  echo o >/proc/sysrq-trigger
  sleep 10
}

fail() {
  echo "bench: FAIL: $*"
  finish 21 "RING3-BENCH-FAIL $*"
}

driver_of() {
  if [ -e "/sys/bus/pci/devices/$1/driver" ]; then
    basename "$(readlink "/sys/bus/pci/devices/$1/driver")"
  else
    echo none
  fi
}

wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD every 0.1 s
  # Locals: a caller's $limit (a run's time limit) must survive the wait.
  local wait_limit=$1 what=$2 tries
  shift 2
  tries=$((wait_limit * 10))
  while ! "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    [ $tries -gt 0 ] || fail "timed out after ${wait_limit}s waiting for $what"
    sleep 0.1
  done
}

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }  # seconds since $1

find_pci() {  # find_pci VENDOR DEVICE: the first PCI function with these IDs (0x1af4 0x1042)
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = "$1" ] && [ "$(cat "$d/device")" = "$2" ]; then
      basename "$d"
      return 0
    fi
  done
  return 1
}

status_text() {  # status_text RC LIMIT: ", killed after LIMIT s" when timeout(1) killed the run
  [ "$1" -eq 124 ] && echo ", killed after $2 s"
}

rebind() {  # rebind BDF DRIVER WHAT: ring3 bind, then check the driver link
  timeout -k 5 60 ring3 bind "$1" "$2" || fail "ring3 bind $1 $2 ($3)"
  [ "$(driver_of "$1")" = "$2" ] || fail "$1 is on $(driver_of "$1") after ring3 bind $2 ($3)"
}

# ---- block benchmarks (guest-nvme, guest-blk) ---------------------------------------------------
# They set: bdf (the device), blockdev (/dev/nvme0n1, /dev/vda), kdriver (the PCI driver to bind
# back to: nvme, virtio-pci), time, limit (each run's time limit), with_ring3 (0: bind round trip
# only), modes (QD:MODE,... for ring3; default poll), and may set scheduler (an I/O scheduler
# written to the block device's queue/scheduler before each fio run; the device is new after each
# rebind). A function after_ring3 QD REP, if the init defines one, runs after each ring3 run with
# the device still on vfio-pci.

run_fio() {  # run_fio QD REP: fio io_uring 4 KiB random reads on $blockdev, section kernel-qdQD-repREP
  [ "$(driver_of "$bdf")" = "$kdriver" ] || fail "$bdf is on $(driver_of "$bdf"), not $kdriver, before fio"
  wait_for 60 "$blockdev" test -b "$blockdev"
  if [ -n "${scheduler:-}" ]; then
    echo "$scheduler" >"/sys/block/${blockdev#/dev/}/queue/scheduler" ||
      fail "cannot set the I/O scheduler of $blockdev to $scheduler"
  fi
  echo "bench: $(now) kernel qd$1 rep$2: fio io_uring"
  rc=0
  timeout -k 5 "$limit" fio --name=kernel --filename="$blockdev" --ioengine=io_uring --direct=1 \
    --rw=randread --bs=4k --iodepth="$1" --numjobs=1 --time_based --runtime="$time" \
    --output-format=json >/tmp/fio.json 2>/tmp/fio.err || rc=$?
  cat /tmp/fio.err
  if [ $rc -ne 0 ]; then
    tail -n 20 /tmp/fio.json
    fail "fio (qd$1 rep$2) exited with status $rc$(status_text $rc "$limit")"
  fi
  emit "kernel-qd$1-rep$2" </tmp/fio.json
}

run_perf_blk() {  # run_perf_blk QD REP: vfio-pci, ring3 perf blk, back to $kdriver; section ring3-qdQD-repREP
  t0=$(now)
  rebind "$bdf" vfio-pci "qd$1 rep$2"
  t1=$(now)
  if [ "$with_ring3" = 1 ]; then
    echo "bench: $t1 ring3 qd$1 rep$2: ring3 perf blk vfio:$bdf (bind took $(since "$t0") s); starts at $(now)"
    rc=0
    mode=$(echo "$modes" | tr ',' '\n' | sed -n "s/^$1://p" | tail -n1)
    timeout -k 5 "$limit" ring3 perf blk "vfio:$bdf" --rw randread --bs 4k --qd "$1" \
      --time "${time}s" --mode "${mode:-poll}" --json >/tmp/ring3.json 2>/tmp/ring3.err || rc=$?
    echo "bench: $(now) ring3 perf blk exited ($rc)"
    cat /tmp/ring3.err
    if [ $rc -ne 0 ]; then
      tail -n 20 /tmp/ring3.json
      fail "ring3 perf (qd$1 rep$2) exited with status $rc$(status_text $rc "$limit")"
    fi
    emit "ring3-qd$1-rep$2" </tmp/ring3.json
    if command -v after_ring3 >/dev/null; then
      after_ring3 "$1" "$2"
    fi
  else
    echo "bench: $t1 ring3 qd$1 rep$2: bind/unbind only (bench.ring3=0)"
    echo '{"skipped": true}' | emit "ring3-qd$1-rep$2"
  fi
  t2=$(now)
  rebind "$bdf" "$kdriver" "qd$1 rep$2"
  wait_for 60 "$blockdev back on $kdriver" test -b "$blockdev"
  echo "bench: $(now) back on $kdriver (rebind took $(since "$t2") s)"
}
