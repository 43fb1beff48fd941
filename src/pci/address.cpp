#include "ring3/pci/address.hpp"

#include <fmt/core.h>

#include <optional>

#include "ring3/core/error.hpp"

namespace ring3::pci {
namespace {

std::optional<std::uint32_t> parse_hex(std::string_view digits, std::size_t min_len,
                                       std::size_t max_len) {
    if (digits.size() < min_len || digits.size() > max_len) {
        return std::nullopt;
    }
    std::uint32_t value = 0;
    for (const char c : digits) {
        unsigned digit = 0;
        if (c >= '0' && c <= '9') {
            digit = static_cast<unsigned>(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            digit = static_cast<unsigned>(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            digit = static_cast<unsigned>(c - 'A' + 10);
        } else {
            return std::nullopt;
        }
        value = value * 16 + digit;
    }
    return value;
}

}  // namespace

Address Address::parse(std::string_view text) {
    const auto fail = [&](std::string_view why) -> Error {
        return Error::invalid(
            "parse PCI address", fmt::format("'{}'", text),
            fmt::format("{}; expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:00:02.0", why));
    };

    std::string_view rest = text;
    Address address;
    const auto first_colon = rest.find(':');
    if (first_colon == std::string_view::npos) {
        throw fail("no ':'");
    }
    if (rest.find(':', first_colon + 1) != std::string_view::npos) {
        const auto domain = parse_hex(rest.substr(0, first_colon), 4, 8);
        if (!domain) {
            throw fail("bad domain (4 to 8 hex digits)");
        }
        address.domain = *domain;
        rest.remove_prefix(first_colon + 1);
    }

    const auto colon = rest.find(':');
    const auto dot = rest.find('.');
    if (colon == std::string_view::npos || dot == std::string_view::npos || dot < colon) {
        throw fail("missing bus, device or function");
    }
    const auto bus = parse_hex(rest.substr(0, colon), 2, 2);
    if (!bus) {
        throw fail("bad bus (2 hex digits)");
    }
    const auto device = parse_hex(rest.substr(colon + 1, dot - colon - 1), 2, 2);
    if (!device || *device > 0x1f) {
        throw fail("bad device (2 hex digits, 00-1f)");
    }
    const auto function = parse_hex(rest.substr(dot + 1), 1, 1);
    if (!function || *function > 7) {
        throw fail("bad function (one digit, 0-7)");
    }
    address.bus = static_cast<std::uint8_t>(*bus);
    address.device = static_cast<std::uint8_t>(*device);
    address.function = static_cast<std::uint8_t>(*function);
    return address;
}

std::string Address::to_string() const {
    return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", domain, bus, device, function);
}

}  // namespace ring3::pci
