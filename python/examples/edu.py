#!/usr/bin/env python3
"""A complete driver for QEMU's educational device `edu` (PCI 1234:11e8), over ring3: liveness,
N factorials each awaited by its completion interrupt, M DMA round trips (RAM -> device buffer ->
RAM) compared byte for byte. Registers: QEMU's docs/specs/edu.rst.  e.g. edu.py vfio:0000:01:00.0"""
import argparse
import asyncio
import math
import os

import ring3

# BAR0 registers; only 32-bit accesses below 0x80, 32 or 64 bits from there on.
IDENT, LIVENESS, FACTORIAL, STATUS, IRQ_STATUS, IRQ_ACK = 0x00, 0x04, 0x08, 0x20, 0x24, 0x64
DMA_SRC, DMA_DST, DMA_COUNT, DMA_CMD = 0x80, 0x88, 0x90, 0x98
STATUS_IRQ_ON_FACTORIAL = 0x80                      # (bit 0, read-only: computing)
CAUSE_FACTORIAL, CAUSE_DMA = 0x001, 0x100           # what the device puts in IRQ_STATUS
DMA_START, DMA_DEVICE_TO_RAM, DMA_IRQ_WHEN_DONE = 0x1, 0x2, 0x4
DEVICE_BUFFER, DEVICE_BUFFER_SIZE = 0x40000, 4096   # the DMA engine's own 4 KiB of memory
DMA_MASK = (1 << 28) - 1                            # default dma_mask: 28-bit bus addresses


class Edu:
    def __init__(self, spec):
        self.dev = ring3.open(spec, dma_max_size=8 << 20)  # a small arena: low IOVAs
        if (self.dev.vendor_id, self.dev.device_id) != (0x1234, 0x11E8):
            raise SystemExit(f"{spec} is {self.dev.vendor_id:04x}:{self.dev.device_id:04x}, not edu")
        self.bar = self.dev.map_bar(0)
        self.dev.bus_master = True  # DMA and MSI are memory writes from the device
        self.kind = "msi" if self.dev.irq_count("msi") else "intx"
        (self.irq,) = self.dev.enable_irqs(self.kind, 1)
        self.bar.write32(STATUS, STATUS_IRQ_ON_FACTORIAL)
        self.ram = self.dev.dma_alloc(2 * DEVICE_BUFFER_SIZE)  # [out | back]
        if self.ram.iova + self.ram.size - 1 > DMA_MASK:
            raise SystemExit(f"DMA buffer at IOVA {self.ram.iova:#x} is beyond edu's 28-bit mask")
        self.interrupts = 0

    def handled(self, cause, arrived):
        """After a wake-up: the cause must be pending; acknowledge it (INTx: unmask again)."""
        if not arrived:
            raise TimeoutError(f"no interrupt for cause {cause:#x} within the timeout")
        pending = self.bar.read32(IRQ_STATUS)
        if not pending & cause:
            raise RuntimeError(f"interrupt without cause {cause:#x} (IRQ_STATUS {pending:#x})")
        self.bar.write32(IRQ_ACK, cause)
        if self.kind == "intx":
            self.dev.unmask_intx()
        self.interrupts += arrived

    def factorial(self, n):  # one at a time: the device ignores n while it computes
        self.bar.write32(FACTORIAL, n)
        self.handled(CAUSE_FACTORIAL, self.irq.wait(5.0))
        return self.bar.read32(FACTORIAL)

    async def factorial_async(self, n):
        self.bar.write32(FACTORIAL, n)
        self.handled(CAUSE_FACTORIAL, await asyncio.wait_for(self.irq.wait_async(), 5.0))
        return self.bar.read32(FACTORIAL)

    def dma(self, source, destination, count, direction):
        self.bar.write64(DMA_SRC, source)
        self.bar.write64(DMA_DST, destination)
        self.bar.write64(DMA_COUNT, count)
        self.bar.write64(DMA_CMD, DMA_START | direction | DMA_IRQ_WHEN_DONE)
        self.handled(CAUSE_DMA, self.irq.wait(5.0))  # the engine takes ~100 ms per transfer


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("spec")
    ap.add_argument("--factorials", type=int, default=100)
    ap.add_argument("--dma", type=int, default=10, help="round trips")
    ap.add_argument("--asyncio", action="store_true", help="await factorials with wait_async()")
    args = ap.parse_args()
    edu = Edu(args.spec)
    ident = edu.bar.read32(IDENT)
    print(f"edu {edu.dev.name}: version {ident >> 24}.{(ident >> 16) & 0xFF}, {edu.kind}, "
          f"DMA buffer IOVA {edu.ram.iova:#x}")
    for value in (0, 0xFFFFFFFF, 0x12345678, int.from_bytes(os.urandom(4), "little")):
        edu.bar.write32(LIVENESS, value)
        if edu.bar.read32(LIVENESS) != ~value & 0xFFFFFFFF:
            raise SystemExit(f"liveness: wrote {value:#x}, read {edu.bar.read32(LIVENESS):#x}")

    async def all_async():
        return [await edu.factorial_async(i % 20) for i in range(args.factorials)]
    results = (asyncio.run(all_async()) if args.asyncio
               else [edu.factorial(i % 20) for i in range(args.factorials)])
    for i, got in enumerate(results):  # the device multiplies in 32 bits
        if got != math.factorial(i % 20) & 0xFFFFFFFF:
            raise SystemExit(f"factorial({i % 20}) = {got:#x}, expected {math.factorial(i % 20):#x}")
    irqs_after_factorials = edu.interrupts

    view, size = memoryview(edu.ram), DEVICE_BUFFER_SIZE
    for trip in range(args.dma):
        # 1..4095 bytes: QEMU up to 7.2 stops the machine on a transfer ending at the buffer's last
        # byte (an off-by-one in its bounds check, QEMU issue 1254).
        count = 1 + (trip * 997) % (size - 1)
        data = os.urandom(count)
        view[:count], view[size:size + count] = data, bytes(count)
        edu.dma(edu.ram.iova, DEVICE_BUFFER, count, 0)  # RAM -> device buffer
        edu.dma(DEVICE_BUFFER, edu.ram.iova + size, count, DMA_DEVICE_TO_RAM)
        if bytes(view[size:size + count]) != data:
            raise SystemExit(f"DMA round trip {trip}: {count} bytes came back different")
    print(f"edu: liveness ok; {args.factorials} factorials ok ({irqs_after_factorials} interrupts"
          f"{', asyncio' if args.asyncio else ''}); {args.dma} DMA round trips ok "
          f"({edu.interrupts - irqs_after_factorials} interrupts)")


if __name__ == "__main__":
    main()
