// What the NVMe driver's files share about admin data (internal to src/drivers/nvme): reading
// fields out of a page the controller wrote, and turning a failed admin completion into an error.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>

#include "ring3/nvme/queue_pair.hpp"

namespace ring3::nvme::detail {

// A field of a data structure the controller wrote (little-endian, maybe unaligned).
template <typename T>
T load(const std::byte* data, std::size_t offset) {
    T value;
    std::memcpy(&value, data + offset, sizeof value);
    return value;
}

// Throws ring3::Error (EIO) naming the command and the status when `entry` reports a failure.
void expect_success(const CompletionEntry& entry, const char* what, const std::string& device);

}  // namespace ring3::nvme::detail
