#include "ring3/pci/address.hpp"

#include <gtest/gtest.h>

#include "ring3/core/error.hpp"

namespace ring3::pci {
namespace {

TEST(Address, ParsesFullAndShortForms) {
    const auto full = Address::parse("0000:00:02.0");
    EXPECT_EQ(full.domain, 0u);
    EXPECT_EQ(full.bus, 0);
    EXPECT_EQ(full.device, 2);
    EXPECT_EQ(full.function, 0);
    EXPECT_EQ(Address::parse("00:02.0"), full);
    const auto upper = Address::parse("ABCD:Ef:1F.7");
    EXPECT_EQ(upper.domain, 0xabcdu);
    EXPECT_EQ(upper.bus, 0xef);
    EXPECT_EQ(upper.device, 0x1f);
    EXPECT_EQ(upper.function, 7);
    EXPECT_EQ(upper.to_string(), "abcd:ef:1f.7");
    EXPECT_EQ(Address::parse("10000:01:00.0").domain, 0x10000u);
}

TEST(Address, OrdersNumerically) {
    EXPECT_LT(Address::parse("0000:00:1f.0"), Address::parse("0000:01:00.0"));
    EXPECT_LT(Address::parse("0000:00:02.7"), Address::parse("0000:00:03.0"));
    EXPECT_LT(Address::parse("0000:ff:00.0"), Address::parse("0001:00:00.0"));
}

std::string parse_error(std::string_view text) {
    try {
        Address::parse(text);
    } catch (const Error& e) {
        EXPECT_EQ(e.errnum(), EINVAL);
        return e.what();
    }
    return "no error";
}

TEST(Address, RejectsMalformedInputQuotingIt) {
    const std::string form = "; expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:00:02.0";
    EXPECT_EQ(parse_error(""), "parse PCI address '': no ':'" + form);
    EXPECT_EQ(parse_error("0000:00:20.0"),
              "parse PCI address '0000:00:20.0': bad device (2 hex digits, 00-1f)" + form);
    EXPECT_EQ(parse_error("00:02.8"),
              "parse PCI address '00:02.8': bad function (one digit, 0-7)" + form);
    EXPECT_EQ(parse_error("0:00:02.0"),
              "parse PCI address '0:00:02.0': bad domain (4 to 8 hex digits)" + form);
    EXPECT_EQ(parse_error("000g:00:02.0"),
              "parse PCI address '000g:00:02.0': bad domain (4 to 8 hex digits)" + form);
    EXPECT_EQ(parse_error("00:2.0"),
              "parse PCI address '00:2.0': bad device (2 hex digits, 00-1f)" + form);
    EXPECT_EQ(parse_error("00:02"),
              "parse PCI address '00:02': missing bus, device or function" + form);
    EXPECT_EQ(parse_error("0000:00:02.0 "),
              "parse PCI address '0000:00:02.0 ': bad function (one digit, 0-7)" + form);
    EXPECT_EQ(parse_error("0000:000:02.0"),
              "parse PCI address '0000:000:02.0': bad bus (2 hex digits)" + form);
    EXPECT_EQ(parse_error("00:02.0:1"),
              "parse PCI address '00:02.0:1': bad domain (4 to 8 hex digits)" + form);
}

}  // namespace
}  // namespace ring3::pci
