// ring3d's protocol (parsing, framing, fd passing over a socketpair) and policy parser.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "ring3/broker/policy.hpp"
#include "ring3/broker/protocol.hpp"
#include "ring3/core/error.hpp"
#include "test_support.hpp"

namespace ring3::broker {
namespace {

using ring3::testing::error_of;

std::string parse_error(const std::string& text, int code = EINVAL) {
    return error_of([&] { parse_request(text); }, code);
}

TEST(BrokerProtocol, ParsesTheFourVerbs) {
    EXPECT_EQ(parse_request(R"({"version":1,"verb":"list"})").verb, Verb::list);
    EXPECT_EQ(parse_request(R"({"version":1,"verb":"status"})").verb, Verb::status);
    const Request claim = parse_request(R"({"version":1,"verb":"claim","device":"01:00.0"})");
    EXPECT_EQ(claim.verb, Verb::claim);
    ASSERT_TRUE(claim.device);
    EXPECT_EQ(claim.device->to_string(), "0000:01:00.0");
    EXPECT_EQ(parse_request(format_request(claim)).device, claim.device);
    EXPECT_EQ(parse_request(R"({"verb":"release","device":"0000:01:00.0","version":1})").verb,
              Verb::release);
}

TEST(BrokerProtocol, BadRequestsAreNamed) {
    const std::string p = "parse request ring3d protocol: ";
    EXPECT_EQ(parse_error("{not json"), p + "not a JSON object (malformed JSON)");
    EXPECT_EQ(parse_error("[1,2]"), p + "a request is a JSON object, not array");
    EXPECT_EQ(parse_error(R"({"verb":"list"})"), p + "'version' is missing or not an integer");
    EXPECT_EQ(parse_error(R"({"version":2,"verb":"list"})", EPROTO),
              p + "protocol version 2 is not spoken here (this is version 1)");
    EXPECT_EQ(parse_error(R"({"version":1,"verb":"clam"})"),
              p + "unknown verb 'clam' (known: list, claim, release, status)");
    EXPECT_EQ(parse_error(R"({"version":1,"verb":7})"),
              p + "'verb' is missing or not a string (known: list, claim, release, status)");
    EXPECT_EQ(parse_error(R"({"version":1,"verb":"claim"})"),
              p + "'claim' needs 'device', a PCI address string");
    EXPECT_EQ(parse_error(R"({"version":1,"verb":"list","device":"01:00.0"})"),
              p + "'list' takes no 'device'");
    EXPECT_EQ(parse_error(R"({"version":1,"verb":"list","force":true})"),
              p + "unknown key 'force' (known: version, verb, device)");
    EXPECT_NE(parse_error(R"({"version":1,"verb":"claim","device":"01:00"})").find("'01:00'"),
              std::string::npos);
    EXPECT_EQ(parse_error(std::string(5000, ' '), EMSGSIZE),
              p + "the request is 5000 bytes, at most 4096 are read");
}

struct SocketPair {
    UniqueFd a, b;
    SocketPair() {
        int fds[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
        a = UniqueFd(fds[0]);
        b = UniqueFd(fds[1]);
    }
};

TEST(BrokerProtocol, MessagesCarryFileDescriptors) {
    SocketPair s;
    UniqueFd file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    const int fds[] = {file.get(), file.get()};
    send_message(s.a.get(), "hello", fds);
    auto m = receive_message(s.b.get(), 2);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text, "hello");
    ASSERT_EQ(m->fds.size(), 2u);
    EXPECT_GE(::fcntl(m->fds[1].get(), F_GETFD), 0);
    EXPECT_NE(m->fds[0].get(), file.get());  // new descriptors, owned by the message
    // The peer's close reads as no message.
    s.a.reset();
    EXPECT_FALSE(receive_message(s.b.get(), 0));
}

TEST(BrokerProtocol, UnexpectedDescriptorsAndOversizedMessagesAreRefused) {
    SocketPair s;
    UniqueFd file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    const int fd = file.get();
    send_message(s.a.get(), "{}", {&fd, 1});
    EXPECT_EQ(error_of([&] { receive_message(s.b.get(), 0); }, EBADMSG),
              "receive a message ring3d protocol: 1 file descriptor(s) came with it, 0 expected");
    const std::string big(5000, 'x');
    ASSERT_EQ(::send(s.a.get(), big.data(), big.size(), 0), 5000);
    EXPECT_EQ(error_of([&] { receive_message(s.b.get(), 0); }, EMSGSIZE),
              "receive a message ring3d protocol: the message is longer than 4096 bytes");
    // The socket still works after both.
    send_message(s.a.get(), "next");
    EXPECT_EQ(receive_message(s.b.get(), 0)->text, "next");
}

TEST(BrokerProtocol, ConnectSaysHowToStartRing3d) {
    const std::string message = error_of([] { connect("/nonexistent/ring3d.sock"); }, ENOENT);
    EXPECT_NE(message.find("is ring3d running?"), std::string::npos) << message;
}

// ---- policy ----------------------------------------------------------------------------------

constexpr const char* kPolicy = R"(# two rules
[[device]]
address = "0000:01:00.0"
users = ["alice", "1001"]

[[device]]
id = "1b36:0010"
class = "010802"
groups = [2000, 2001]
backend = "vfio"
)";

std::string policy_error(const std::string& text) {
    return error_of([&] { Policy::parse(text, "ring3d.toml"); }, EINVAL);
}

TEST(BrokerPolicy, ParsesRulesAndMatchesDevices) {
    const Policy p = Policy::parse(kPolicy, "ring3d.toml");
    ASSERT_EQ(p.devices.size(), 2u);
    EXPECT_EQ(p.devices[0].line, 2u);
    EXPECT_EQ(p.devices[1].line, 6u);
    const pci::Address nvme = pci::Address::parse("0000:02:00.0");
    const DeviceRule* rule = p.rule_for(nvme, 0x1b36, 0x0010, 0x010802);
    ASSERT_NE(rule, nullptr);
    EXPECT_EQ(rule->index, 2u);
    EXPECT_EQ(p.rule_for(nvme, 0x1b36, 0x0010, 0x010800), nullptr);  // class differs
    EXPECT_EQ(p.rule_for(pci::Address::parse("0000:01:00.0"), 0x8086, 0x10d3, 0x020000),
              &p.devices[0]);
    EXPECT_EQ(rule->describe(p.file), "[[device]] #2 (ring3d.toml line 6: 1b36:0010 class 010802)");
}

TEST(BrokerPolicy, DecidesByUserAndGroup) {
    const Policy p = Policy::parse(kPolicy, "ring3d.toml");
    Identity alice{5000, 5000, {}, "alice"};
    Identity uid1001{1001, 1001, {}, ""};
    Identity stranger{1002, 1002, {}, ""};
    Identity in_group{1003, 1003, {2000}, ""};
    EXPECT_FALSE(p.refusal(p.devices[0], alice));
    EXPECT_FALSE(p.refusal(p.devices[0], uid1001));
    EXPECT_FALSE(p.refusal(p.devices[1], in_group));
    const auto why = p.refusal(p.devices[0], stranger);
    ASSERT_TRUE(why);
    EXPECT_EQ(*why,
              "user 1002 is not allowed by [[device]] #1 (ring3d.toml line 2: 0000:01:00.0) (its "
              "users and groups name neither the user nor any of its groups)");
}

TEST(BrokerPolicy, MistakesNameFileLineAndKey) {
    EXPECT_EQ(policy_error("[[device]]\nadress = \"0000:01:00.0\"\nusers = [\"a\"]\n"),
              "read policy ring3d.toml:2: unknown key 'adress' in [[device]] (known: address, id, "
              "class, users, groups, backend); did you mean 'address'?");
    EXPECT_EQ(policy_error("[[device]]\naddress = \"0000:01:00\"\nusers = [\"a\"]\n").substr(0, 53),
              "read policy ring3d.toml:2: 'address' = \"0000:01:00\": ");
    EXPECT_EQ(policy_error("[[device]]\nid = \"1b36\"\nusers = [\"a\"]\n"),
              "read policy ring3d.toml:2: 'id' = \"1b36\" is not VENDOR:DEVICE in hex, e.g. "
              "\"1b36:0010\"");
    EXPECT_EQ(policy_error("[[device]]\naddress = \"01:00.0\"\nid = \"1b36:0010\"\nusers = [1]\n"),
              "read policy ring3d.toml:1: a [[device]] names its device by 'address' or by "
              "'id', exactly one of them");
    EXPECT_EQ(policy_error("\n[[device]]\naddress = \"01:00.0\"\n"),
              "read policy ring3d.toml:2: a [[device]] needs 'users' or 'groups': who may claim "
              "it");
    EXPECT_EQ(policy_error("[[device]]\naddress = \"01:00.0\"\nusers = \"alice\"\n"),
              "read policy ring3d.toml:3: 'users' must be an array of names or numeric ids, e.g. "
              "users = [\"alice\", \"1001\"]");
    EXPECT_EQ(policy_error("[[device]]\naddress = \"01:00.0\"\nusers = [1.5]\n"),
              "read policy ring3d.toml:3: 'users' must hold names (strings) or ids (integers)");
    EXPECT_EQ(policy_error("[[device]]\naddress = \"01:00.0\"\nusers = [1]\nbackend = \"uio\"\n"),
              "read policy ring3d.toml:4: 'backend' = \"uio\": ring3d hands out \"vfio\" only");
    EXPECT_EQ(policy_error("[[device]]\nid = \"1b36:0010\"\nclass = \"01\"\nusers = [1]\n"),
              "read policy ring3d.toml:3: 'class' = \"01\" is not 6 hex digits, e.g. \"010802\"");
    EXPECT_EQ(policy_error("socket = \"/tmp/x\"\n"),
              "read policy ring3d.toml:1: unknown key or table 'socket' (known: [[device]])");
    EXPECT_EQ(policy_error("[device]\naddress = \"01:00.0\"\n"),
              "read policy ring3d.toml: 'device' must be an array of tables: write [[device]] "
              "above each one");
    const std::string syntax = policy_error("[[device]\naddress = 1\n");
    EXPECT_EQ(syntax.substr(0, 37), "read policy ring3d.toml: TOML syntax:") << syntax;
    EXPECT_NE(syntax.find("line 1"), std::string::npos) << syntax;
}

TEST(BrokerPolicy, AnEmptyFileManagesNothing) {
    EXPECT_TRUE(Policy::parse("# nothing yet\n", "ring3d.toml").devices.empty());
}

}  // namespace
}  // namespace ring3::broker
