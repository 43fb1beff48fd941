#!/bin/sh
# ring3-guest: config=iommu timeout=240 modules=none
# Issue 9, surprise removal: the NVMe, claimed through ring3d by uid 1000 and under a
# write/verify workload, is hot-unplugged (QMP device_del). The kernel asks VFIO for the device
# back; ring3d logs the revocation, quiesces the device and tells the owner; the owner's driver
# fails its requests naming the reason and exits with an error (no hang, no crash); the unplug
# completes: the device is gone from sysfs and `ring3 ls`, and `ring3 ps` says it was removed.
set -eu
. /tests/lib.sh

nvme=$(find_device 1b36:0010)
load_vfio
mkdir -p /etc/ring3 /run/ring3
export RING3D_SOCKET=/run/ring3/ring3d.sock
log=/tmp/ring3d.log
ON_FAIL_SHOW=$log
cat >/etc/ring3/ring3d.toml <<EOF
[[device]]
id = "1b36:0010"
users = [1000]
EOF
ring3d --config /etc/ring3/ring3d.toml >$log 2>&1 &
ring3d_pid=$!
wait_for 20 "ring3d" sh -c "ring3 ps"
ulimit -l unlimited

run_as 1000 ring3 perf blk "ring3d:$nvme" --rw randrw --verify --time 120s --size 16m --bs 4k \
  --qd 8 --mode interrupt --seed 5151 --json >/tmp/owner.json 2>/tmp/owner.err &
owner=$!
wait_for 30 "the owner's claim" sh -c "ring3 ps | grep -q 'pid $owner'"
sleep 2
host_action device_del nvme0
wait_for 60 "ring3d's revocation" grep -q "revoking the claim of pid $owner" $log
rc=0
wait_for 60 "the owner to give up" sh -c "! kill -0 $owner"
wait "$owner" || rc=$?
echo "owner exit status: $rc"
cat /tmp/owner.err
[ $rc -ne 0 ] || fail "the owner of the removed device reported success"
[ $rc -lt 128 ] || fail "the owner died of signal $((rc - 128)) instead of failing with errors"
expect_contains "$(cat /tmp/owner.err)" "the device is gone (ring3d revoked the claim: the kernel asked for the device back (hot-unplug or unbind))" \
  "the owner's error"
wait_for 60 "the unplug to complete" sh -c "! test -e /sys/bus/pci/devices/$nvme"
capture ls ring3 ls
expect_not_contains "$OUT" "$nvme" "ring3 ls after the unplug"
capture ps ring3 ps
expect_contains "$OUT" "removed: the kernel asked for it back" "ring3 ps after the unplug"
grep "$nvme" $log
kill -0 "$ring3d_pid" || fail "ring3d died"
kill "$ring3d_pid"
wait "$ring3d_pid" || true
