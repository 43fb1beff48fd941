// NVMe command and data structure layouts (NVM Express Base Specification 2.0, NVM Command Set
// Specification 1.0). Only what the driver uses; offsets checked by static_assert.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ring3::nvme {

// §4.2 Submission Queue Entry: 64 bytes.
struct SubmissionEntry {
    std::uint8_t opcode;
    std::uint8_t flags;  // bits 1:0 FUSE, bits 7:6 PSDT (00b PRP, 01b SGL with contiguous buffer)
    std::uint16_t command_id;
    std::uint32_t nsid;
    std::uint32_t cdw2;
    std::uint32_t cdw3;
    std::uint64_t metadata;
    std::uint64_t dptr[2];  // PRP1 PRP2, or one SGL descriptor (§4.3.2)
    std::uint32_t cdw10;
    std::uint32_t cdw11;
    std::uint32_t cdw12;
    std::uint32_t cdw13;
    std::uint32_t cdw14;
    std::uint32_t cdw15;
};
static_assert(sizeof(SubmissionEntry) == 64);
static_assert(offsetof(SubmissionEntry, dptr) == 24);
static_assert(offsetof(SubmissionEntry, cdw10) == 40);

inline constexpr std::uint8_t kPsdtSgl = 0x40;  // flags bits 7:6 = 01b

// §4.6 Completion Queue Entry: 16 bytes.
struct CompletionEntry {
    std::uint32_t dw0;
    std::uint32_t dw1;
    std::uint16_t sq_head;
    std::uint16_t sq_id;
    std::uint16_t command_id;
    std::uint16_t status;  // bit 0 phase tag; bits 15:1 status field (§4.6.1)
};
static_assert(sizeof(CompletionEntry) == 16);

// §4.6.1 Status field (the 15 bits above the phase tag).
struct StatusField {
    std::uint16_t raw = 0;  // bits 15:1 of the CQE's status word, shifted down by one
    unsigned code() const noexcept { return raw & 0xff; }           // SC
    unsigned type() const noexcept { return (raw >> 8) & 0x7; }     // SCT
    bool more() const noexcept { return (raw >> 13) & 1; }          // M
    bool do_not_retry() const noexcept { return (raw >> 14) & 1; }  // DNR
    bool ok() const noexcept { return code() == 0 && type() == 0; }
    // SCT << 8 | SC, the form block::Status::device_code carries.
    std::uint16_t code_and_type() const noexcept {
        return static_cast<std::uint16_t>(type() << 8 | code());
    }
};
// "Generic Command Status: Invalid Field in Command (02h)", or "status SCT 7 SC 0x81".
std::string status_name(std::uint16_t code_and_type);

// §4.3.2 SGL Data Block descriptor (type 0h, subtype 0h).
struct SglDescriptor {
    std::uint64_t address;
    std::uint32_t length;
    std::uint8_t reserved[3];
    std::uint8_t type;  // bits 7:4 type, 3:0 subtype
};
static_assert(sizeof(SglDescriptor) == 16);

// §5 Admin command opcodes.
namespace admin {
inline constexpr std::uint8_t delete_io_sq = 0x00;
inline constexpr std::uint8_t create_io_sq = 0x01;
inline constexpr std::uint8_t get_log_page = 0x02;
inline constexpr std::uint8_t delete_io_cq = 0x04;
inline constexpr std::uint8_t create_io_cq = 0x05;
inline constexpr std::uint8_t identify = 0x06;
inline constexpr std::uint8_t abort = 0x08;
inline constexpr std::uint8_t set_features = 0x09;
inline constexpr std::uint8_t get_features = 0x0a;
inline constexpr std::uint8_t async_event_request = 0x0c;
}  // namespace admin

// NVM Command Set 1.0 §3 I/O command opcodes.
namespace io {
inline constexpr std::uint8_t flush = 0x00;
inline constexpr std::uint8_t write = 0x01;
inline constexpr std::uint8_t read = 0x02;
inline constexpr std::uint8_t write_zeroes = 0x08;
inline constexpr std::uint8_t dataset_management = 0x09;
}  // namespace io

// §5.17 Identify: CNS values.
namespace cns {
inline constexpr std::uint32_t namespace_ = 0x00;
inline constexpr std::uint32_t controller = 0x01;
inline constexpr std::uint32_t active_namespaces = 0x02;
inline constexpr std::uint32_t namespace_descriptors = 0x03;  // §5.17.2.3
}  // namespace cns

// §5.17.2.3 Namespace Identification Descriptor types, and the I/O command sets (CSI) the
// Command Set Identifier descriptor names (Base 2.0 Figure 286).
namespace descriptor {
inline constexpr std::uint8_t command_set = 0x04;
}  // namespace descriptor
namespace csi {
inline constexpr std::uint8_t nvm = 0x00;
inline constexpr std::uint8_t key_value = 0x01;
inline constexpr std::uint8_t zoned = 0x02;
}  // namespace csi
const char* command_set_name(std::uint8_t csi) noexcept;

// §5.27.1 Feature identifiers.
namespace feature {
inline constexpr std::uint32_t interrupt_coalescing = 0x08;
inline constexpr std::uint32_t number_of_queues = 0x07;
inline constexpr std::uint32_t async_event_configuration = 0x0b;
}  // namespace feature

// §5.16 Log page identifiers.
namespace log_page {
inline constexpr std::uint8_t error_information = 0x01;
inline constexpr std::uint8_t smart_health = 0x02;
}  // namespace log_page

}  // namespace ring3::nvme
