// The small value types of the NetPort face (net_port.hpp).
#include "ring3/net/net_port.hpp"

#include <fmt/core.h>

namespace ring3::net {

std::string MacAddress::to_string() const {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", bytes[0], bytes[1], bytes[2],
                       bytes[3], bytes[4], bytes[5]);
}

namespace {

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

}  // namespace

std::optional<MacAddress> MacAddress::parse(std::string_view text) noexcept {
    // "xx:xx:xx:xx:xx:xx": 17 characters, separators all ':' or all '-'.
    if (text.size() != 17 || (text[2] != ':' && text[2] != '-')) {
        return std::nullopt;
    }
    MacAddress mac;
    for (std::size_t i = 0; i < 6; ++i) {
        const int high = hex_digit(text[i * 3]);
        const int low = hex_digit(text[i * 3 + 1]);
        if (high < 0 || low < 0 || (i < 5 && text[i * 3 + 2] != text[2])) {
            return std::nullopt;
        }
        mac.bytes[i] = static_cast<std::uint8_t>(high * 16 + low);
    }
    return mac;
}

bool MacAddress::is_zero() const noexcept {
    for (const auto b : bytes) {
        if (b != 0) {
            return false;
        }
    }
    return true;
}

QueueStats& QueueStats::operator+=(const QueueStats& other) noexcept {
    rx_packets += other.rx_packets;
    rx_bytes += other.rx_bytes;
    rx_drops += other.rx_drops;
    rx_errors += other.rx_errors;
    tx_packets += other.tx_packets;
    tx_bytes += other.tx_bytes;
    tx_drops += other.tx_drops;
    tx_errors += other.tx_errors;
    notifications += other.notifications;
    return *this;
}

}  // namespace ring3::net
