// NVMe controller registers, NVM Express Base Specification 2.0 §3.1.3 ("Controller Registers"),
// as typed declarations (include/ring3/mmio/register.hpp). Fields high bit first, as the spec
// prints them.
#pragma once

#include <cstdint>

#include "ring3/mmio/register.hpp"

namespace ring3::nvme::reg {

using mmio::Register;

// §3.1.3.1 Controller Capabilities
struct Cap : Register<0x00, std::uint64_t> {
    using Mpsmax = Field<55, 52>;  // 2^(12 + MPSMAX) bytes
    using Mpsmin = Field<51, 48>;  // 2^(12 + MPSMIN) bytes
    using Css = Field<44, 37>;     // bit 0 (37): NVM command set
    using Nssrs = Field<36, 36>;
    using Dstrd = Field<35, 32>;  // doorbell stride: 2^(2 + DSTRD) bytes
    using To = Field<31, 24>;     // ready timeout, 500 ms units
    using Ams = Field<18, 17>;
    using Cqr = Field<16, 16>;  // queues must be physically contiguous
    using Mqes = Field<15, 0>;  // maximum queue entries, 0-based
};

// §3.1.3.2 Version
struct Vs : Register<0x08, std::uint32_t> {
    using Mjr = Field<31, 16>;
    using Mnr = Field<15, 8>;
    using Ter = Field<7, 0>;
};

// §3.1.3.3/4 Interrupt Mask Set / Clear (pin-based and single MSI only)
struct Intms : Register<0x0c, std::uint32_t> {};
struct Intmc : Register<0x10, std::uint32_t> {};

// §3.1.3.5 Controller Configuration (reserved: 31:25, 3:1)
struct Cc : Register<0x14, std::uint32_t, 0xfe00000e> {
    using Crime = Field<24, 24>;
    using Iocqes = Field<23, 20>;  // I/O CQ entry size, 2^n bytes (4: 16 bytes)
    using Iosqes = Field<19, 16>;  // I/O SQ entry size, 2^n bytes (6: 64 bytes)
    using Shn = Field<15, 14>;     // shutdown notification: 01b normal
    using Ams = Field<13, 11>;
    using Mps = Field<10, 7>;  // memory page size 2^(12 + MPS)
    using Css = Field<6, 4>;   // 000b: NVM command set
    using En = Field<0, 0>;
};

// §3.1.3.6 Controller Status (NSSRO is write-one-to-clear)
struct Csts : Register<0x1c, std::uint32_t, 0, 1u << 4> {
    using Pp = Field<5, 5>;
    using Nssro = Field<4, 4>;
    using Shst = Field<3, 2>;  // 10b: shutdown complete
    using Cfs = Field<1, 1>;   // controller fatal status
    using Rdy = Field<0, 0>;
};

// §3.1.3.8 Admin Queue Attributes (sizes 0-based)
struct Aqa : Register<0x24, std::uint32_t, 0xf000f000> {
    using Acqs = Field<27, 16>;
    using Asqs = Field<11, 0>;
};

// §3.1.3.9/10 Admin Submission / Completion Queue Base Address (4 KiB aligned)
struct Asq : Register<0x28, std::uint64_t, 0xfff> {};
struct Acq : Register<0x30, std::uint64_t, 0xfff> {};

// §3.1.3.25 (Table "Submission/Completion Queue y Doorbell"): doorbells start at 0x1000.
inline constexpr std::size_t kDoorbellBase = 0x1000;
constexpr std::size_t sq_tail_doorbell(unsigned queue, unsigned stride_bytes) {
    return kDoorbellBase + (2 * queue) * stride_bytes;
}
constexpr std::size_t cq_head_doorbell(unsigned queue, unsigned stride_bytes) {
    return kDoorbellBase + (2 * queue + 1) * stride_bytes;
}

}  // namespace ring3::nvme::reg
