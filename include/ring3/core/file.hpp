// Whole-file reads of small files: sysfs attributes, /proc files, pci.ids. Errors follow the one
// convention (ring3::Error naming the file): "open /sys/.../vendor: Permission denied".
#pragma once

#include <optional>
#include <string>

namespace ring3 {

// The whole file. Throws when it cannot be opened ("open PATH: ...", ENOENT when it does not
// exist) or read ("read PATH: ...").
std::string read_file(const std::string& path);

// The whole file, or nullopt when it does not exist (ENOENT, or ENOTDIR: a component of the path
// is not a directory); any other failure throws as read_file does.
std::optional<std::string> read_optional_file(const std::string& path);

}  // namespace ring3
