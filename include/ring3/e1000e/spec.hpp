// Intel 82574 data structures (82574 Family GbE Controller Datasheet): the legacy receive and
// transmit descriptors, device ids and ring limits. Each struct's size is asserted.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ring3::e1000e {

// §1.4 / the PCI ids QEMU gives its models.
inline constexpr std::uint16_t kVendorIntel = 0x8086;
inline constexpr std::uint16_t kDevice82574L = 0x10d3;   // QEMU `-device e1000e`
inline constexpr std::uint16_t kDevice82540EM = 0x100e;  // QEMU `-device e1000`: not driven

// §7.1.4 (receive) and §7.2.10.2 (transmit): descriptor rings are a multiple of 128 bytes (8
// descriptors), 16-byte aligned, at most 64 K descriptors (RDLEN/TDLEN are 20 bits of bytes).
inline constexpr std::uint32_t kRingAlignment = 128;
inline constexpr std::uint32_t kRingGranule = 8;  // descriptors per 128 bytes
inline constexpr std::uint32_t kMaxRingSize = 4096;
inline constexpr std::uint32_t kRxBufferSize = 2048;  // RCTL.BSIZE = 00, BSEX = 0 (§10.2.5.1)

// §3.2.3.3 (EEPROM map): words 0..2 hold the Ethernet address, low byte first in each word.
inline constexpr std::uint16_t kEepromMacWords = 3;

// §7.1.4.1: legacy receive descriptor. The driver writes the buffer address (and zeroes the
// rest); the device writes length, checksum, status, errors and the VLAN tag back.
struct RxDescriptor {
    std::uint64_t buffer;
    std::uint16_t length;    // bytes written into the buffer (CRC stripped with RCTL.SECRC)
    std::uint16_t checksum;  // packet checksum
    std::uint8_t status;
    std::uint8_t errors;
    std::uint16_t special;  // VLAN tag
};
static_assert(sizeof(RxDescriptor) == 16);
static_assert(offsetof(RxDescriptor, status) == 12);

// §7.1.4.2: receive status bits.
namespace rx_status {
inline constexpr std::uint8_t dd = 1u << 0;   // descriptor done
inline constexpr std::uint8_t eop = 1u << 1;  // end of packet
inline constexpr std::uint8_t ixsm = 1u << 2;
inline constexpr std::uint8_t vp = 1u << 3;
}  // namespace rx_status
// §7.1.4.3: receive errors (any of them: the frame is broken).
namespace rx_error {
inline constexpr std::uint8_t ce = 1u << 0;  // CRC or alignment
inline constexpr std::uint8_t se = 1u << 1;  // symbol
inline constexpr std::uint8_t seq = 1u << 2;
inline constexpr std::uint8_t cxe = 1u << 4;
inline constexpr std::uint8_t tcpe = 1u << 5;
inline constexpr std::uint8_t ipe = 1u << 6;
inline constexpr std::uint8_t rxe = 1u << 7;  // RX data error
// Errors that make the frame unusable (checksum errors only matter with offload, not used).
inline constexpr std::uint8_t frame = ce | se | seq | cxe | rxe;
}  // namespace rx_error

// §7.2.10.1: legacy transmit descriptor (CMD.DEXT = 0).
struct TxDescriptor {
    std::uint64_t buffer;
    std::uint16_t length;  // bytes of this buffer
    std::uint8_t cso;      // checksum offset
    std::uint8_t command;
    std::uint8_t status;  // the device sets DD once done (with CMD.RS)
    std::uint8_t css;     // checksum start
    std::uint16_t special;
};
static_assert(sizeof(TxDescriptor) == 16);
static_assert(offsetof(TxDescriptor, status) == 12);

// §7.2.10.1.2: transmit command bits.
namespace tx_command {
inline constexpr std::uint8_t eop = 1u << 0;   // end of packet
inline constexpr std::uint8_t ifcs = 1u << 1;  // insert FCS
inline constexpr std::uint8_t ic = 1u << 2;    // insert checksum
inline constexpr std::uint8_t rs = 1u << 3;    // report status (write DD back)
inline constexpr std::uint8_t dext = 1u << 5;  // extended descriptor
inline constexpr std::uint8_t vle = 1u << 6;
inline constexpr std::uint8_t ide = 1u << 7;  // interrupt delay enable
}  // namespace tx_command
// §7.2.10.1.3: transmit status bits.
namespace tx_status {
inline constexpr std::uint8_t dd = 1u << 0;
}  // namespace tx_status

}  // namespace ring3::e1000e
