// Status code names: NVM Express Base Specification 2.0 §4.6.1.2 (Generic Command Status, SCT 0),
// §4.6.1.2.2 (Command Specific Status, SCT 1), §4.6.1.2.3 (Media and Data Integrity Errors,
// SCT 2), §4.6.1.2.4 (Path Related Status, SCT 3); NVM Command Set 1.0 §4.1.1 for the I/O ones.
#include <fmt/core.h>

#include "ring3/nvme/spec.hpp"

namespace ring3::nvme {
namespace {

struct Name {
    unsigned code;
    const char* text;
};

constexpr Name kGeneric[] = {
    {0x00, "Successful Completion"},
    {0x01, "Invalid Command Opcode"},
    {0x02, "Invalid Field in Command"},
    {0x03, "Command ID Conflict"},
    {0x04, "Data Transfer Error"},
    {0x05, "Commands Aborted due to Power Loss Notification"},
    {0x06, "Internal Error"},
    {0x07, "Command Abort Requested"},
    {0x08, "Command Aborted due to SQ Deletion"},
    {0x09, "Command Aborted due to Failed Fused Command"},
    {0x0a, "Command Aborted due to Missing Fused Command"},
    {0x0b, "Invalid Namespace or Format"},
    {0x0c, "Command Sequence Error"},
    {0x0d, "Invalid SGL Segment Descriptor"},
    {0x0e, "Invalid Number of SGL Descriptors"},
    {0x0f, "Data SGL Length Invalid"},
    {0x10, "Metadata SGL Length Invalid"},
    {0x11, "SGL Descriptor Type Invalid"},
    {0x12, "Invalid Use of Controller Memory Buffer"},
    {0x13, "PRP Offset Invalid"},
    {0x14, "Atomic Write Unit Exceeded"},
    {0x15, "Operation Denied"},
    {0x16, "SGL Offset Invalid"},
    {0x18, "Host Identifier Inconsistent Format"},
    {0x19, "Keep Alive Timer Expired"},
    {0x1a, "Keep Alive Timeout Invalid"},
    {0x1b, "Command Aborted due to Preempt and Abort"},
    {0x1c, "Sanitize Failed"},
    {0x1d, "Sanitize In Progress"},
    {0x1e, "SGL Data Block Granularity Invalid"},
    {0x1f, "Command Not Supported for Queue in CMB"},
    {0x20, "Namespace is Write Protected"},
    {0x21, "Command Interrupted"},
    {0x22, "Transient Transport Error"},
    {0x80, "LBA Out of Range"},
    {0x81, "Capacity Exceeded"},
    {0x82, "Namespace Not Ready"},
    {0x83, "Reservation Conflict"},
    {0x84, "Format In Progress"},
};

constexpr Name kCommandSpecific[] = {
    {0x00, "Completion Queue Invalid"},
    {0x01, "Invalid Queue Identifier"},
    {0x02, "Invalid Queue Size"},
    {0x03, "Abort Command Limit Exceeded"},
    {0x05, "Asynchronous Event Request Limit Exceeded"},
    {0x06, "Invalid Firmware Slot"},
    {0x07, "Invalid Firmware Image"},
    {0x08, "Invalid Interrupt Vector"},
    {0x09, "Invalid Log Page"},
    {0x0a, "Invalid Format"},
    {0x0c, "Invalid Queue Deletion"},
    {0x0d, "Feature Identifier Not Saveable"},
    {0x0e, "Feature Not Changeable"},
    {0x0f, "Feature Not Namespace Specific"},
    {0x80, "Conflicting Attributes"},
    {0x81, "Invalid Protection Information"},
    {0x82, "Attempted Write to Read Only Range"},
};

constexpr Name kMedia[] = {
    {0x80, "Write Fault"},
    {0x81, "Unrecovered Read Error"},
    {0x82, "End-to-end Guard Check Error"},
    {0x83, "End-to-end Application Tag Check Error"},
    {0x84, "End-to-end Reference Tag Check Error"},
    {0x85, "Compare Failure"},
    {0x86, "Access Denied"},
    {0x87, "Deallocated or Unwritten Logical Block"},
};

template <std::size_t N>
const char* lookup(const Name (&table)[N], unsigned code) {
    for (const auto& entry : table) {
        if (entry.code == code) {
            return entry.text;
        }
    }
    return nullptr;
}

}  // namespace

std::string status_name(std::uint16_t code_and_type) {
    const unsigned type = (code_and_type >> 8) & 0x7;
    const unsigned code = code_and_type & 0xff;
    const char* name = nullptr;
    const char* kind = nullptr;
    switch (type) {
        case 0:
            kind = "Generic Command Status";
            name = lookup(kGeneric, code);
            break;
        case 1:
            kind = "Command Specific Status";
            name = lookup(kCommandSpecific, code);
            break;
        case 2:
            kind = "Media and Data Integrity Error";
            name = lookup(kMedia, code);
            break;
        case 3:
            kind = "Path Related Status";
            break;
        case 7:
            kind = "Vendor Specific";
            break;
        default:
            break;
    }
    if (name != nullptr) {
        return fmt::format("{}: {} ({:02x}h)", kind, name, code);
    }
    return fmt::format("status SCT {} SC {:#04x}", type, code);
}

const char* command_set_name(std::uint8_t csi) noexcept {
    switch (csi) {
        case csi::nvm:
            return "NVM";
        case csi::key_value:
            return "Key Value";
        case csi::zoned:
            return "Zoned Namespace";
        default:
            return "unknown";
    }
}

}  // namespace ring3::nvme
