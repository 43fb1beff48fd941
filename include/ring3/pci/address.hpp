// pci::Address: a PCI function's bus/device/function address in a segment (domain).
// Canonical text form is lspci -D's: "0000:00:02.0". PCI Local Bus 3.0 §3.2.2.3.2 limits device
// numbers to 0-31 and functions to 0-7.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace ring3::pci {

struct Address {
    std::uint32_t domain = 0;  // sysfs allows 32-bit segments (VMD uses 0x10000 and above)
    std::uint8_t bus = 0;
    std::uint8_t device = 0;    // 0..31
    std::uint8_t function = 0;  // 0..7

    // Accepts "DDDD:BB:DD.F" and "BB:DD.F" (domain 0), hex digits in either case. Anything else
    // throws ring3::Error quoting the input and the expected form.
    static Address parse(std::string_view text);

    std::string to_string() const;  // "0000:00:02.0"

    friend auto operator<=>(const Address&, const Address&) = default;
};

}  // namespace ring3::pci
