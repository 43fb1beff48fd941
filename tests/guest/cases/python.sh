#!/bin/sh
# ring3-guest: config=iommu timeout=300 modules=nvme python=yes
# The Python bindings (python/) on QEMU's devices, through VFIO: ring3's errors as ring3.Error
# with ring3's message; the API's checks (BAR bounds and alignment, values, DMA buffers as
# buffers); python/examples/edu.py, a complete driver for QEMU's edu device (liveness, 1000
# factorials each awaited by its MSI, 100 DMA round trips RAM -> device -> RAM compared byte for
# byte, then factorials with asyncio); python/examples/nvme_identify.py, which brings the NVMe
# controller up by hand: model, serial and firmware equal the kernel nvme driver's (read before
# the device moves to vfio-pci) and, on the host (checks/python.py), QEMU's.
set -eu
. /tests/lib.sh

examples=/usr/share/ring3/examples
edu=$(find_device 1234:11e8)
nvme=$(find_device 1b36:0010)
must python3 -c 'import sys, ring3; print(sys.version.split()[0], ring3.__file__)'
run time python3 -c 'import ring3'  # start-up cost, for the log
load_vfio

# ---- errors carry ring3's message ----
cat >/tmp/errors.py <<'PY'
import sys
import ring3
for spec, needle in [("vfio:zz:00.0", "parse PCI address 'zz:00.0': bad bus"),
                     ("vfio:0000:00:1f.7", "0000:00:1f.7"),
                     (f"vfio:{sys.argv[1]}", sys.argv[1])]:
    try:
        ring3.open(spec)
    except ring3.Error as e:
        assert isinstance(e, OSError) and e.errno, repr(e)
        assert needle in str(e), f"{spec}: {e!r} lacks {needle!r}"
        print(f"{spec}: ring3.Error errno {e.errno}: {e}")
    else:
        raise SystemExit(f"{spec}: opened, but must raise ring3.Error")
PY
# The NVMe is still on the kernel's nvme driver: VFIO cannot open it and ring3 says why.
must python3 /tmp/errors.py "$nvme"

# ---- the API's own checks, on the edu device ----
must ring3 bind "$edu" vfio-pci
cat >/tmp/api.py <<'PY'
import sys
import ring3
dev = ring3.open(sys.argv[1])
assert (dev.vendor_id, dev.device_id, dev.bdf) == (0x1234, 0x11E8, sys.argv[1].split(":", 1)[1])
assert dev.config_read16(0) == 0x1234 and dev.config_read32(0) == 0x11E81234
bar = dev.map_bar(0)
assert bar.size == 1 << 20 and bar.mapped, bar
bar.write32(0x04, 0x0F0F0F0F)
assert bar.read32(0x04) == 0xF0F0F0F0
def raises(kind, call, needle=""):
    try:
        call()
    except kind as e:
        assert needle in str(e), f"{e!r} lacks {needle!r}"
        print(f"ok: {kind.__name__}: {e}")
    else:
        raise SystemExit(f"no {kind.__name__} from {call}")
raises(ring3.Error, lambda: bar.read32(bar.size), "BAR0")
raises(ring3.Error, lambda: bar.read64(bar.size - 4), "BAR0")
raises(ring3.Error, lambda: bar.write32(2, 0), "BAR0")
raises(ValueError, lambda: bar.write32(0x04, 1 << 32), "32 bits")
raises(ValueError, lambda: dev.map_bar(6), "0..5")
raises(ring3.Error, lambda: dev.map_bar(1), "BAR1")
raises(ValueError, lambda: dev.config_read32(2), "aligned")
raises(ValueError, lambda: dev.dma_alloc(0))
raises(ValueError, lambda: dev.enable_irqs("msi-x"), "'msix'")
buf = dev.dma_alloc(8192)
view = memoryview(buf)
assert view.nbytes == 8192 and not view.readonly and buf.iova % 4096 == 0
view[100:104] = b"ring"
assert bytes(buf)[100:104] == b"ring" and bytes(view[96:104]) == b"\0\0\0\0ring"
assert view.cast("I")[25] == int.from_bytes(b"ring", "little")
del dev, bar  # the buffer keeps the device and its arena alive
view[0] = 1
assert bytes(buf)[0] == 1
print(f"api ok: {buf!r}")
PY
must python3 /tmp/api.py "vfio:$edu"

# ---- the edu driver ----
must python3 "$examples/edu.py" "vfio:$edu" --factorials 1000 --dma 100
expect_contains "$OUT" "1000 factorials ok (1000 interrupts)" "edu.py"
expect_contains "$OUT" "100 DMA round trips ok (200 interrupts)" "edu.py"
must python3 "$examples/edu.py" "vfio:$edu" --factorials 200 --dma 0 --asyncio
expect_contains "$OUT" "200 factorials ok (200 interrupts, asyncio)" "edu.py --asyncio"

# ---- NVMe identify by hand, against the kernel driver's view ----
ctrl=/sys/bus/pci/devices/$nvme/nvme
wait_for 20 "the kernel's nvme controller" ls "$ctrl"
sysfs=$ctrl/$(ls "$ctrl" | head -n1)
field() { sed 's/[[:space:]]*$//' "$sysfs/$1"; }  # sysfs keeps the fields' space padding
model=$(field model)
serial=$(field serial)
firmware=$(field firmware_rev)
must ring3 bind "$nvme" vfio-pci
capture identify python3 "$examples/nvme_identify.py" "vfio:$nvme" || fail "nvme_identify.py failed"
for line in "model    $model" "serial   $serial" "firmware $firmware"; do
  echo "$OUT" | grep -qxF "$line" || fail "nvme_identify.py did not print the line '$line'; it printed:
$OUT"
  echo "ok: nvme_identify.py printed '$line'"
done
