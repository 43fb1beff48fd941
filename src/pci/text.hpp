// Text helpers shared by bind.cpp and in_use.cpp. Internal to ring3_pci.
#pragma once

#include <string>
#include <string_view>

namespace ring3::pci {

// Without trailing newlines and spaces and leading spaces: a sysfs attribute's value as the kernel
// prints it ("(null)\n" -> "(null)"), or a value before it is written ("vfio-pci\n").
inline std::string trim(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.remove_suffix(1);
    }
    while (!text.empty() && text.front() == ' ') {
        text.remove_prefix(1);
    }
    return std::string(text);
}

}  // namespace ring3::pci
