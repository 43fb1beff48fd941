// Intel 82574 GbE controller (QEMU's `e1000e`, 8086:10d3) registers, as typed declarations
// (Intel 82574 Family GbE Controller Datasheet, rev. 3.x, chapter 10 "Driver Programming
// Interface"). Offsets are in BAR0 (the memory-mapped register space, §10.1.1). Only registers
// ring3 uses are declared. Every register is 32 bits wide and accessed as such (§10.1.1.1).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "ring3/mmio/register.hpp"

namespace ring3::e1000e::reg {

// BAR0 must hold at least the statistics block (§10.1.1: 128 KiB memory space).
inline constexpr std::size_t kRegisterSpace = 0x20000;

// §10.2.2.1: Device Control Register.
struct Ctrl : mmio::Register<0x00000, std::uint32_t> {
    using PhyRst = Field<31, 31>;  // PHY reset
    using Vme = Field<30, 30>;     // VLAN mode enable
    using Rst = Field<26, 26>;     // device reset; self-clearing (§4.6.2)
    using FrcDplx = Field<12, 12>;
    using FrcSpd = Field<11, 11>;
    using Speed = Field<9, 8>;
    using Slu = Field<6, 6>;   // set link up (§4.6.4: with auto-negotiation, the MAC follows)
    using Asde = Field<5, 5>;  // auto-speed detection
    using GioMasterDisable = Field<2, 2>;
    using Fd = Field<0, 0>;
};

// §10.2.2.2: Device Status Register (read-only).
struct Status : mmio::Register<0x00008, std::uint32_t> {
    using GioMasterEnable = Field<19, 19>;  // 0: no master request pending
    using PhyRa = Field<10, 10>;            // PHY reset asserted
    using Speed = Field<7, 6>;              // 00 10 Mb/s, 01 100 Mb/s, 1x 1000 Mb/s
    using TxOff = Field<4, 4>;
    using Lu = Field<1, 1>;  // link up
    using Fd = Field<0, 0>;  // full duplex
};

// §10.2.2.4: EEPROM Read Register. Software writes Addr with Start set; the device sets Done and
// puts the 16-bit word in Data.
struct Eerd : mmio::Register<0x00014, std::uint32_t> {
    using Data = Field<31, 16>;
    using Addr = Field<15, 2>;
    using Done = Field<1, 1>;
    using Start = Field<0, 0>;
};

// §10.2.2.5: Extended Device Control Register.
struct CtrlExt : mmio::Register<0x00018, std::uint32_t> {
    using PbaSupport = Field<31, 31>;  // MSI-X pending-bit array support
    using DrvLoad = Field<28, 28>;     // driver loaded (tells firmware a driver owns the NIC)
    using Iame = Field<27, 27>;        // interrupt acknowledge auto-mask enable
    using Eiame = Field<24, 24>;       // extended interrupt auto-mask enable (MSI-X)
};

// §10.2.4: interrupt registers. ICR, ICS, IMS and IMC share one bit layout (the Cause fields
// below): ICR reads causes (write 1s to clear; a read clears it too unless MSI-X is on, §10.2.4.1),
// ICS sets causes, IMS enables them, IMC disables them.
struct Cause {
    using IntAsserted = mmio::Field<31, 31>;
    using Other = mmio::Field<24, 24>;  // MSI-X: any non-queue cause (LSC, RXO, ...)
    using TxQ1 = mmio::Field<23, 23>;
    using TxQ0 = mmio::Field<22, 22>;  // MSI-X: transmit queue 0 wrote back a descriptor
    using RxQ1 = mmio::Field<21, 21>;
    using RxQ0 = mmio::Field<20, 20>;  // MSI-X: receive queue 0 wrote back a descriptor
    using TxdLow = mmio::Field<15, 15>;
    using Rxt0 = mmio::Field<7, 7>;  // receiver timer (a frame arrived)
    using Rxo = mmio::Field<6, 6>;   // receiver overrun
    using Rxdmt0 = mmio::Field<4, 4>;
    using Lsc = mmio::Field<2, 2>;   // link status change
    using Txqe = mmio::Field<1, 1>;  // transmit queue empty
    using Txdw = mmio::Field<0, 0>;  // transmit descriptor written back
};
struct Icr : mmio::Register<0x000c0, std::uint32_t> {};
struct Ics : mmio::Register<0x000c8, std::uint32_t> {};
struct Ims : mmio::Register<0x000d0, std::uint32_t> {};
struct Imc : mmio::Register<0x000d8, std::uint32_t> {};
// §10.2.4.4: Extended Interrupt Auto Clear: causes (RxQ0/1, TxQ0/1, Other) cleared from ICR when
// their MSI-X message is sent.
struct Eiac : mmio::Register<0x000dc, std::uint32_t> {};

// §10.2.4.2: Interrupt Throttling Register: the minimum gap between interrupts, in 256 ns units
// (0: no throttling). §10.2.4.10: EITR0..4 do the same per MSI-X vector.
struct Itr : mmio::Register<0x000c4, std::uint32_t> {
    using Interval = Field<15, 0>;
};
struct Eitr : mmio::RegisterArray<0x000e8, 4, std::uint32_t> {};
inline constexpr unsigned kEitrCount = 5;
inline constexpr std::uint32_t kItrUnitNs = 256;

// How long to wait, after masking every cause (IMC), before an interrupt mode is switched off:
// a throttling timer started by the last interrupt may still run. The datasheet needs no wait,
// but QEMU's model (7.2) starts one for max(interval, 500) units after every MSI-X message and
// aborts the whole machine if it expires once MSI-X is off (its timer asserts that MSI-X is
// still on). The 10 ms beyond the interval cover a QEMU main loop that runs its timers late.
constexpr std::chrono::nanoseconds interrupt_settle_time(std::uint32_t interval_units) {
    constexpr std::uint32_t kQemuFloorUnits = 500;
    return std::chrono::nanoseconds(std::int64_t{std::max(interval_units, kQemuFloorUnits)} *
                                    kItrUnitNs) +
           std::chrono::milliseconds(10);
}

// §10.2.4.9: Interrupt Vector Allocation Register: per cause a 4-bit entry, bit 3 valid, bits
// 2:0 the MSI-X vector.
struct Ivar : mmio::Register<0x000e4, std::uint32_t> {
    using TxIntEveryWb = Field<31, 31>;  // a TxQ interrupt on every write-back, not just RS
    using OtherValid = Field<19, 19>;
    using OtherVector = Field<18, 16>;
    using TxQ1Valid = Field<15, 15>;
    using TxQ1Vector = Field<14, 12>;
    using TxQ0Valid = Field<11, 11>;
    using TxQ0Vector = Field<10, 8>;
    using RxQ1Valid = Field<7, 7>;
    using RxQ1Vector = Field<6, 4>;
    using RxQ0Valid = Field<3, 3>;
    using RxQ0Vector = Field<2, 0>;
};

// §10.2.5.1: Receive Control Register.
struct Rctl : mmio::Register<0x00100, std::uint32_t> {
    using Secrc = Field<26, 26>;  // strip the Ethernet CRC
    using Bsex = Field<25, 25>;   // buffer size extension (x16)
    using Dpf = Field<22, 22>;    // discard pause frames
    using Bsize = Field<17, 16>;  // with Bsex 0: 00 2048, 01 1024, 10 512, 11 256 bytes
    using Bam = Field<15, 15>;    // accept broadcast
    using Mo = Field<13, 12>;
    using Dtyp = Field<11, 10>;  // descriptor type: 00 legacy, 01 packet split
    using Rdmts = Field<9, 8>;
    using Lbm = Field<7, 6>;  // loopback mode: 00 none
    using Lpe = Field<5, 5>;  // long packet enable
    using Mpe = Field<4, 4>;  // multicast promiscuous
    using Upe = Field<3, 3>;  // unicast promiscuous
    using Sbp = Field<2, 2>;  // store bad packets
    using En = Field<1, 1>;
};

// §10.2.5.5: Receive Filter Control (the extended-descriptor switch).
struct Rfctl : mmio::Register<0x05008, std::uint32_t> {
    using Exsten = Field<15, 15>;  // extended status: extended receive descriptors
};

// §10.2.5.6-§10.2.5.14: receive queue 0 (the 82574 has two; ring3 uses queue 0).
struct Rdbal : mmio::Register<0x02800, std::uint32_t> {};  // 16-byte aligned
struct Rdbah : mmio::Register<0x02804, std::uint32_t> {};
struct Rdlen : mmio::Register<0x02808, std::uint32_t> {};  // bytes, a multiple of 128
struct Rdh : mmio::Register<0x02810, std::uint32_t> {};
struct Rdt : mmio::Register<0x02818, std::uint32_t> {};
struct Rdtr : mmio::Register<0x02820, std::uint32_t> {};  // receive delay timer (1.024 us)
struct Rxdctl : mmio::Register<0x02828, std::uint32_t> {
    using Gran = Field<24, 24>;
    using Wthresh = Field<21, 16>;
    using Hthresh = Field<13, 8>;
    using Pthresh = Field<5, 0>;
};
struct Radv : mmio::Register<0x0282c, std::uint32_t> {};  // receive absolute delay timer

// §10.2.5.15-§10.2.5.16: Receive Address Low/High 0: the station MAC address, which the device
// loads from the EEPROM at reset. Address Valid marks the entry in use.
struct Ral0 : mmio::Register<0x05400, std::uint32_t> {};  // bytes 0..3 of the address
struct Rah0 : mmio::Register<0x05404, std::uint32_t> {
    using Av = Field<31, 31>;
    using Ras = Field<17, 16>;
    using High = Field<15, 0>;  // bytes 4..5
};

// §10.2.6.1: Transmit Control Register.
struct Tctl : mmio::Register<0x00400, std::uint32_t> {
    using Mulr = Field<28, 28>;
    using Rtlc = Field<24, 24>;
    using Cold = Field<21, 12>;  // collision distance (full duplex: 0x3f)
    using Ct = Field<11, 4>;     // collision threshold (0x0f)
    using Psp = Field<3, 3>;     // pad short packets
    using En = Field<1, 1>;
};
// §10.2.6.2: Transmit IPG (inter-packet gap).
struct Tipg : mmio::Register<0x00410, std::uint32_t> {
    using Ipgr2 = Field<29, 20>;
    using Ipgr1 = Field<19, 10>;
    using Ipgt = Field<9, 0>;
};

// §10.2.6.4-§10.2.6.11: transmit queue 0.
struct Tdbal : mmio::Register<0x03800, std::uint32_t> {};
struct Tdbah : mmio::Register<0x03804, std::uint32_t> {};
struct Tdlen : mmio::Register<0x03808, std::uint32_t> {};  // bytes, a multiple of 128
struct Tdh : mmio::Register<0x03810, std::uint32_t> {};
struct Tdt : mmio::Register<0x03818, std::uint32_t> {};
struct Tidv : mmio::Register<0x03820, std::uint32_t> {};  // transmit interrupt delay
struct Txdctl : mmio::Register<0x03828, std::uint32_t> {
    using Gran = Field<24, 24>;
    using Wthresh = Field<21, 16>;
    using Hthresh = Field<13, 8>;
    using Pthresh = Field<5, 0>;
};
struct Tadv : mmio::Register<0x0382c, std::uint32_t> {};

// §10.2.7: statistics. Every counter clears when read (§10.2.7: "read-on-clear"), so the driver
// reads each once per update and accumulates; 64-bit counters are a low/high pair, low first.
namespace stats {
struct Crcerrs : mmio::Register<0x04000, std::uint32_t> {};  // CRC errors
struct Rxerrc : mmio::Register<0x0400c, std::uint32_t> {};   // receive errors
struct Mpc : mmio::Register<0x04010, std::uint32_t> {};      // missed packets (FIFO full)
struct Colc : mmio::Register<0x04028, std::uint32_t> {};     // collisions
struct Gprc : mmio::Register<0x04074, std::uint32_t> {};     // good packets received
struct Bprc : mmio::Register<0x04078, std::uint32_t> {};     // broadcast packets received
struct Mprc : mmio::Register<0x0407c, std::uint32_t> {};     // multicast packets received
struct Gptc : mmio::Register<0x04080, std::uint32_t> {};     // good packets transmitted
struct Gorcl : mmio::Register<0x04088, std::uint32_t> {};    // good octets received, low
struct Gorch : mmio::Register<0x0408c, std::uint32_t> {};
struct Gotcl : mmio::Register<0x04090, std::uint32_t> {};  // good octets transmitted, low
struct Gotch : mmio::Register<0x04094, std::uint32_t> {};
struct Rnbc : mmio::Register<0x040a0, std::uint32_t> {};  // receive: no buffers
struct Ruc : mmio::Register<0x040a4, std::uint32_t> {};   // receive undersize
struct Roc : mmio::Register<0x040ac, std::uint32_t> {};   // receive oversize
struct Torl : mmio::Register<0x040c0, std::uint32_t> {};  // total octets received, low
struct Torh : mmio::Register<0x040c4, std::uint32_t> {};
struct Totl : mmio::Register<0x040c8, std::uint32_t> {};  // total octets transmitted, low
struct Toth : mmio::Register<0x040cc, std::uint32_t> {};
struct Tpr : mmio::Register<0x040d0, std::uint32_t> {};  // total packets received
struct Tpt : mmio::Register<0x040d4, std::uint32_t> {};  // total packets transmitted
}  // namespace stats

}  // namespace ring3::e1000e::reg
