// The storage of an emulated block device (ring3 emu nvme, ring3 emu virtio-blk): `size` bytes
// of anonymous memory, or a regular file (created, or extended to `size`) mapped shared so that
// a host-side checker reads what the driver wrote.
#pragma once

#include <cstdint>
#include <string>

#include "ring3/core/mapping.hpp"

namespace ring3::emu {

// `backing` empty: memory whose untouched pages cost nothing, named `what` in errors. Throws
// ring3::Error naming the file when it cannot be opened, is not a regular file or cannot grow.
Mapping map_disk(std::uint64_t size, const std::string& backing, const char* what);

}  // namespace ring3::emu
