#!/usr/bin/env python3
"""Brings up an NVMe controller by hand and prints its model, serial and firmware revision.

    nvme_identify.py SPEC          e.g. nvme_identify.py vfio:0000:01:00.0

Everything is done here in Python over ring3's primitives (BAR0, DMA buffers): reset, an admin
queue pair, one IDENTIFY CONTROLLER command, polled completion. Sections cited are of the NVM
Express Base Specification 2.0. ring3's C++ driver (src/drivers/nvme) does this properly; this is
the minimal honest version, for learning and prototyping."""
import struct
import sys
import time

import ring3

# §3.1.3 Controller registers (BAR0).
CAP, VS, CC, CSTS, AQA, ASQ, ACQ = 0x00, 0x08, 0x14, 0x1C, 0x24, 0x28, 0x30
DOORBELLS = 0x1000  # §3.1.3.25: SQ y tail at 0x1000 + 2y * stride, CQ y head at (2y + 1) * stride
CC_EN = 1 << 0
CC_IOSQES, CC_IOCQES = 6 << 16, 4 << 20  # §3.1.3.5: 2^6 = 64-byte SQEs, 2^4 = 16-byte CQEs
CSTS_RDY, CSTS_CFS = 1 << 0, 1 << 1
ADMIN_IDENTIFY, CNS_CONTROLLER = 0x06, 0x01  # §5 admin opcodes, §5.17.1 CNS values
QUEUE_ENTRIES = 16
PAGE = 4096  # CC.MPS = 0: memory pages of 4 KiB (CAP.MPSMIN is 0 on every controller we meet)


def wait_ready(bar, ready, cap_timeout):
    """§3.5.1, §3.5.2: CSTS.RDY follows CC.EN within CAP.TO (units of 500 ms)."""
    deadline = time.monotonic() + max(cap_timeout, 1) * 0.5
    while (bar.read32(CSTS) & CSTS_RDY) != ready:
        if bar.read32(CSTS) & CSTS_CFS:
            raise RuntimeError("controller fatal status (CSTS.CFS) during bring-up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"CSTS.RDY did not become {ready} within CAP.TO")
        time.sleep(0.001)


def text(data):
    return bytes(data).decode("ascii", "replace").strip(" \0")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    dev = ring3.open(sys.argv[1])
    bar = dev.map_bar(0)
    dev.bus_master = True  # the controller fetches commands and writes completions by DMA

    cap = bar.read64(CAP)  # §3.1.3.1
    cap_timeout = (cap >> 24) & 0xFF
    stride = 4 << ((cap >> 32) & 0xF)  # CAP.DSTRD
    if (cap >> 48) & 0xF != 0:
        raise SystemExit("controller does not take 4 KiB memory pages (CAP.MPSMIN)")
    version = bar.read32(VS)  # §3.1.3.2

    # §3.5.1 Memory-based controller initialization: disable, wait for RDY = 0, set up the admin
    # queue (AQA/ASQ/ACQ, §3.1.3.8-10), configure and enable, wait for RDY = 1.
    bar.write32(CC, 0)
    wait_ready(bar, 0, cap_timeout)
    sq = dev.dma_alloc(QUEUE_ENTRIES * 64, PAGE)  # page-aligned, physically contiguous
    cq = dev.dma_alloc(QUEUE_ENTRIES * 16, PAGE)
    data = dev.dma_alloc(PAGE, PAGE)
    bar.write32(AQA, (QUEUE_ENTRIES - 1) << 16 | (QUEUE_ENTRIES - 1))  # 0-based sizes
    bar.write64(ASQ, sq.iova)
    bar.write64(ACQ, cq.iova)
    bar.write32(CC, CC_IOSQES | CC_IOCQES | CC_EN)  # CSS = NVM, MPS = 4 KiB, AMS round robin
    wait_ready(bar, 1, cap_timeout)

    # §4.2 Submission Queue Entry: CDW0 (opcode, command id), NSID, PRP1 (one page: the data is
    # 4 KiB and page-aligned, so no PRP2), CDW10 = CNS. §5.17: Identify Controller.
    command_id = 1
    sqe = memoryview(sq)[0:64]
    sqe[:] = bytes(64)
    struct.pack_into("<IIQQQQI", sqe, 0, ADMIN_IDENTIFY | command_id << 16, 0, 0, 0,
                     data.iova, 0, CNS_CONTROLLER)
    # x86 keeps stores in order, the uncached doorbell write included: the controller sees the
    # entry before the doorbell (other architectures would need a write barrier here).
    bar.write32(DOORBELLS, 1)  # SQ 0 tail = 1

    # §4.6 Completion Queue Entry: poll the phase tag (bit 0 of the status word, 1 on the first
    # pass through a zeroed queue), then hand the entry back through the CQ 0 head doorbell.
    deadline = time.monotonic() + 5
    while struct.unpack_from("<H", cq, 14)[0] & 1 == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("IDENTIFY did not complete within 5 s")
    _, _, _, _, cid, status = struct.unpack_from("<IIHHHH", cq, 0)
    bar.write32(DOORBELLS + stride, 1)
    if cid != command_id or status >> 1 != 0:  # §4.6.1: status field above the phase tag
        raise SystemExit(f"IDENTIFY failed: command id {cid}, status {status >> 1:#x}")

    # §5.17.2.1 Identify Controller data structure: VID 1:0, SN 23:4, MN 63:24, FR 71:64.
    ident = memoryview(data)
    vendor = struct.unpack_from("<H", ident, 0)[0]
    print(f"controller {dev.name} vendor {vendor:04x} NVMe "
          f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}")
    print(f"model    {text(ident[24:64])}")
    print(f"serial   {text(ident[4:24])}")
    print(f"firmware {text(ident[64:72])}")

    bar.write32(CC, 0)  # §3.5.2 shutdown-free disable: leave the controller idle
    wait_ready(bar, 0, cap_timeout)
    dev.bus_master = False


if __name__ == "__main__":
    main()
