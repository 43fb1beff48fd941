"""ring3: PCI device drivers as user-space processes, from Python.

    import ring3
    dev = ring3.open("vfio:0000:01:00.0")   # or "uio:BDF", "ring3d:BDF", a bare BDF
    bar = dev.map_bar(0)
    bar.write32(0x04, 0x1234); print(hex(bar.read32(0x04)))
    buf = dev.dma_alloc(4096)              # buf.iova for the device, memoryview(buf) for you
    irq, = dev.enable_irqs("msi", 1)
    irq.wait(1.0)                          # or: await irq.wait_async()

Errors from ring3 are ring3.Error (an OSError) carrying ring3's message; bad arguments are
ValueError. See python/README.md.
"""
from ._ring3 import Bar, Device, DmaBuffer, Error, Interrupt, open  # noqa: F401

__all__ = ["Bar", "Device", "DmaBuffer", "Error", "Interrupt", "open"]


async def _wait_async(self):
    """Waits for the vector in the running asyncio loop (loop.add_reader on its fd); returns how
    many interrupts arrived since the last wait. For UIO INTx, call rearm() after handling."""
    import asyncio  # here: importing asyncio costs more than the rest of ring3's import

    loop = asyncio.get_running_loop()
    arrived = self.drain()
    if arrived:
        return arrived
    future = loop.create_future()
    fd = self.fileno()

    def readable():
        count = self.drain()
        if count and not future.done():
            future.set_result(count)

    loop.add_reader(fd, readable)
    try:
        return await future
    finally:
        loop.remove_reader(fd)


Interrupt.wait_async = _wait_async
