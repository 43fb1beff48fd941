#!/bin/sh
# ring3-guest: config=iommu timeout=240 modules=none
# Issue 10 ("Done when" 1 and 3): the tutorial's C++ driver for QEMU's edu device
# (examples/out-of-tree/edu.cpp, docs/first-driver.md), built out of tree against a staged
# `cmake --install` by scripts/stage-install, runs through VFIO: 1000 factorials, each waited on by
# its MSI, and 100 DMA round trips of 4095 bytes (RAM -> device -> RAM) verified byte for byte. The MSI
# count in /proc/interrupts must grow by one per factorial and two per round trip.
set -eu
. /tests/lib.sh

command -v ring3-edu >/dev/null ||
  fail "ring3-edu is not in the image: scripts/stage-install (ctest install.stage) builds it"
load_vfio
edu=$(find_device 1234:11e8)
must ring3 bind "$edu" vfio-pci

# VFIO's MSI line exists only while the driver holds the vector: sample it while the driver runs.
irq_counts vfio-msi "$edu" | sed 's/^/0 /' >/tmp/edu-irqs
ring3-edu "vfio:$edu" 1000 100 >/tmp/edu.out 2>&1 &
pid=$!
sample_while "$pid" /tmp/edu-irqs irq_counts vfio-msi "$edu"
rc=0
wait "$pid" || rc=$?
OUT=$(cat /tmp/edu.out)
emit edu </tmp/edu.out
echo "$OUT"
[ $rc -eq 0 ] || fail "ring3-edu exited with status $rc"
expect_contains "$OUT" "is alive" "the liveness check"
expect_contains "$OUT" "factorials: 1000, each with its interrupt" "1000 factorials"
expect_contains "$OUT" "DMA round trips: 100 of 4095 bytes, verified" "100 DMA round trips"
# 1000 factorial interrupts, then two per round trip; the last sample is up to 0.1 s before the end.
growth=$(irq_growth /tmp/edu-irqs | awk '{ s += $3 - $2 } END { print s + 0 }')
echo "MSIs counted on the edu's vfio-msi line: $growth"
[ "$growth" -ge 1150 ] || fail "expected at least 1150 MSIs while ring3-edu ran, counted $growth"

# Bad input: a malformed BDF is refused with ring3's reason...
must_fail ring3-edu vfio:00:zz.0
expect_contains "$OUT" "ring3-edu: " "the error of a malformed BDF"
# ... and so is a count that is not one.
must_fail ring3-edu "vfio:$edu" 12x
expect_contains "$OUT" "'12x' is not a count of 0..1000000" "the error of a bad count"
