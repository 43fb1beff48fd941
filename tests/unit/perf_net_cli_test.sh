#!/bin/sh
# `ring3 perf net` refuses bad arguments before it touches a device, naming the option and the
# limit (no privileges needed: the TAP is never opened).   perf_net_cli_test.sh RING3
set -u
ring3=$1
failures=0
expect_error() {  # expect_error MESSAGE ARGS...: ring3 perf net ARGS fails and prints MESSAGE
  want=$1
  shift
  out=$("$ring3" perf net "$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "FAIL: 'perf net $*' succeeded"; failures=$((failures + 1)); return
  fi
  case $out in
    *"$want"*) echo "ok: 'perf net $*' -> exit $rc: $want" ;;
    *) echo "FAIL: 'perf net $*' said: $out"; echo "  expected: $want"; failures=$((failures + 1)) ;;
  esac
}
expect_error "perf net --size 40: below 60 bytes, the shortest test frame" tap:r3x --tx --size 40
expect_error "perf net --size 60-1515: above 1514 bytes" tap:r3x --tx --size 60-1515
expect_error "perf net --size 9-x: not a frame size" tap:r3x --tx --size 9-x
expect_error "perf net --size 100-60: the range's minimum is above its maximum" tap:r3x --tx --size 100-60
expect_error "perf net tap:r3x: give exactly one of --tx, --rx and --fwd PEER" tap:r3x
expect_error "--tx excludes --rx" tap:r3x --tx --rx
expect_error "perf net --queues 0: must be at least 1" tap:r3x --tx --queues 0
expect_error "perf net --queues 65: at most 64" tap:r3x --tx --queues 65
expect_error "perf net --burst 257: must be 1..256" tap:r3x --tx --burst 257
expect_error "perf net --time 10h: not a duration" tap:r3x --rx --time 10h
expect_error "perf net --count 0: must be at least 1" tap:r3x --tx --count 0
expect_error "perf net --mode spin: one of poll, interrupt, adaptive" tap:r3x --tx --mode spin
expect_error "perf net --dst-mac zz: not a MAC address" tap:r3x --tx --dst-mac zz
expect_error "open TAP tap:0123456789abcdef: an interface name has at most 15 characters" \
  tap:0123456789abcdef --tx --count 1
"$ring3" perf net --help >/tmp/perf-net-help.$$ 2>&1
for option in --tx --rx --fwd --size --time --count --queues --mode --burst --depth --dst-mac \
              --seed --json --quiet; do
  grep -q -- "$option" /tmp/perf-net-help.$$ || { echo "FAIL: --help lacks $option"; failures=$((failures + 1)); }
done
rm -f /tmp/perf-net-help.$$
[ $failures -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "all passed"
