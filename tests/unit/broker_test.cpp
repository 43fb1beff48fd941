// ring3d's protocol (parsing, framing, fd passing over a socketpair) and policy parser.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/syscall.h>

#include <cerrno>
#include <string>

#include "ring3/broker/client.hpp"
#include "ring3/broker/policy.hpp"
#include "ring3/broker/protocol.hpp"
#include "ring3/broker/sandbox.hpp"
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
              "class, users, groups, backend, driver); did you mean 'address'?");
    EXPECT_EQ(policy_error("[[device]]\naddress = \"0000:01:00\"\nusers = [\"a\"]\n").substr(0, 53),
              "read policy ring3d.toml:2: 'address' = \"0000:01:00\": ");
    EXPECT_EQ(policy_error("[[device]]\nid = \"1b36\"\nusers = [\"a\"]\n"),
              "read policy ring3d.toml:2: 'id' = \"1b36\" is not VENDOR:DEVICE in hex, e.g. "
              "\"1b36:0010\"");
    EXPECT_EQ(policy_error("[[device]]\naddress = \"01:00.0\"\nid = \"1b36:0010\"\nusers = [1]\n"),
              "read policy ring3d.toml:1: a [[device]] names its device by 'address' or by "
              "'id', exactly one of them");
    EXPECT_EQ(policy_error("\n[[device]]\naddress = \"01:00.0\"\n"),
              "read policy ring3d.toml:2: a [[device]] needs 'users' or 'groups' (who may claim "
              "it) or a [device.driver] (what ring3d runs for it)");
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

constexpr const char* kSupervised = R"(# a supervised NVMe driver
[[device]]
address = "0000:02:00.0"

[device.driver]
command = ["ring3", "perf", "blk", "ring3d:{device}", "--json={device}.json"]
user = "nvme-driver"
restart = "always"
restart_delay_ms = 50
restart_delay_max_ms = 300
max_restarts = 3
restart_window_s = 10
sandbox = "log"
allow_syscalls = ["uname", "unlinkat"]
memlock_mib = 64

[[device]]
id = "1b36:0010"
users = [1000]
)";

TEST(BrokerPolicy, ParsesSupervisedDrivers) {
    const Policy p = Policy::parse(kSupervised, "ring3d.toml");
    ASSERT_EQ(p.devices.size(), 2u);
    ASSERT_TRUE(p.devices[0].driver);
    EXPECT_FALSE(p.devices[1].driver);
    const DriverSpec& d = *p.devices[0].driver;
    EXPECT_EQ(d.line, 5u);
    EXPECT_EQ(d.argv_for(pci::Address::parse("0000:02:00.0")),
              (std::vector<std::string>{"ring3", "perf", "blk", "ring3d:0000:02:00.0",
                                        "--json=0000:02:00.0.json"}));
    EXPECT_EQ(std::get<std::string>(d.user), "nvme-driver");
    EXPECT_FALSE(d.group);
    EXPECT_EQ(d.restart, Restart::always);
    EXPECT_EQ(d.max_restarts, 3u);
    EXPECT_EQ(d.restart_window, std::chrono::seconds(10));
    EXPECT_EQ(d.sandbox, SandboxMode::log);
    EXPECT_EQ(d.allow_syscalls, (std::vector<std::string>{"uname", "unlinkat"}));
    EXPECT_EQ(d.memlock_bytes, 64u << 20);
    // The back-off doubles per recent restart, up to its maximum.
    EXPECT_EQ(d.backoff(0), std::chrono::milliseconds(50));
    EXPECT_EQ(d.backoff(1), std::chrono::milliseconds(100));
    EXPECT_EQ(d.backoff(2), std::chrono::milliseconds(200));
    EXPECT_EQ(d.backoff(3), std::chrono::milliseconds(300));
    EXPECT_EQ(d.backoff(30), std::chrono::milliseconds(300));
    // Defaults.
    const Policy q = Policy::parse(
        "[[device]]\naddress = \"01:00.0\"\n[device.driver]\ncommand = [\"d\"]\nuser = 1000\n",
        "ring3d.toml");
    const DriverSpec& e = *q.devices[0].driver;
    EXPECT_EQ(std::get<std::uint32_t>(e.user), 1000u);
    EXPECT_EQ(e.restart, Restart::on_failure);
    EXPECT_EQ(e.sandbox, SandboxMode::on);
    EXPECT_EQ(e.memlock_bytes, 1u << 30);
}

TEST(BrokerPolicy, DriverMistakesNameLineAndKey) {
    const std::string head = "[[device]]\naddress = \"01:00.0\"\n[device.driver]\n";
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\nuser = \"x\"\nrestart = \"sometimes\"\n"),
              "read policy ring3d.toml:6: 'restart' = \"sometimes\": expected \"no\", "
              "\"on-failure\" or \"always\"");
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\nuser = \"x\"\nrestart_delay = 5\n"),
              "read policy ring3d.toml:6: unknown key 'restart_delay' in [device.driver] (known: "
              "command, user, group, restart, restart_delay_ms, restart_delay_max_ms, "
              "max_restarts, restart_window_s, sandbox, allow_syscalls, memlock_mib)");
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\nuser = \"x\"\nmemlock_mib = -1\n"),
              "read policy ring3d.toml:6: 'memlock_mib' must be an integer in 1..16777216");
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\nuser = \"x\"\nsandbox = 3\n"),
              "read policy ring3d.toml:6: 'sandbox' must be a string, e.g. sandbox = \"on\"");
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\nuser = \"x\"\nallow_syscalls = [\"opne\"]\n"),
              "read policy ring3d.toml:6: 'allow_syscalls': unknown system call 'opne'");
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\nuser = \"root\"\n"),
              "read policy ring3d.toml:5: 'user' is root: a supervised driver runs unprivileged");
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\nuser = 0\n"),
              "read policy ring3d.toml:5: 'user' is root: a supervised driver runs unprivileged");
    EXPECT_EQ(policy_error(head + "command = []\nuser = 7\n"),
              "read policy ring3d.toml:4: 'command' must be a non-empty array of strings, e.g. "
              "command = [\"ring3\", \"perf\", \"blk\", \"ring3d:{device}\"]");
    EXPECT_EQ(policy_error(head + "command = [\"d\"]\n"),
              "read policy ring3d.toml:3: a [device.driver] needs 'user': whom the driver runs as");
    EXPECT_EQ(policy_error(head + "user = 7\n"),
              "read policy ring3d.toml:3: a [device.driver] needs 'command': the driver's argv");
    EXPECT_EQ(
        policy_error("[[device]]\naddress = \"01:00.0\"\ndriver = \"nvme\"\n"),
        "read policy ring3d.toml:3: 'driver' must be a table: write [device.driver] under the "
        "[[device]]");
}

TEST(BrokerClient, SeesARevocationWithoutTakingIt) {
    SocketPair s;
    EXPECT_FALSE(revoked(s.a.get()));  // nothing there: no wait, no revocation
    send_message(s.b.get(), R"({"ok":true,"released":"0000:01:00.0"})");
    EXPECT_FALSE(revoked(s.a.get()));  // a reply is not an event
    ASSERT_TRUE(receive_message(s.a.get(), 0));
    send_message(s.b.get(), R"({"event":"revoked","device":"0000:01:00.0","reason":"unplugged"})");
    EXPECT_EQ(revoked(s.a.get()), "ring3d revoked the claim: unplugged");
    EXPECT_EQ(revoked(s.a.get()), "ring3d revoked the claim: unplugged");  // left in place
    send_message(s.b.get(), "{not json");
}

// The filter, installed for real in a child process: the driver set works, socket() is for
// AF_UNIX only, ptrace and mount are refused with EPERM.
TEST(BrokerSandbox, TheSeccompFilterAllowsADriverAndNothingMore) {
    std::vector<int> allowed;
    for (const std::string_view name : driver_syscalls()) {
        const auto nr = syscall_number(name);
        ASSERT_TRUE(nr) << name;
        allowed.push_back(*nr);
    }
    EXPECT_FALSE(syscall_number("no_such_call"));
    EXPECT_EQ(syscall_number("ioctl"), SYS_ioctl);
    const std::vector<sock_filter> program = seccomp_program(allowed, false);
    ASSERT_LT(program.size(), 4096u);
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(pipe_fds[0]);
        const sock_fprog fprog{static_cast<unsigned short>(program.size()),
                               const_cast<sock_filter*>(program.data())};
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0) {
            ::_exit(100);
        }
        // One letter per probe: y (as expected) or n.
        char report[5];
        const int unix_socket = ::socket(AF_UNIX, SOCK_STREAM, 0);
        report[0] = unix_socket >= 0 ? 'y' : 'n';
        errno = 0;
        report[1] = ::socket(AF_INET, SOCK_STREAM, 0) < 0 && errno == EPERM ? 'y' : 'n';
        errno = 0;
        report[2] = ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) < 0 && errno == EPERM ? 'y' : 'n';
        errno = 0;
        report[3] = ::syscall(SYS_mount, "none", "/", "tmpfs", 0, nullptr) < 0 && errno == EPERM
                        ? 'y'
                        : 'n';
        report[4] = ::getpid() > 0 ? 'y' : 'n';
        ::close(unix_socket);
        const bool sent = ::write(pipe_fds[1], report, sizeof report) == sizeof report;
        ::_exit(sent ? 0 : 101);
    }
    ::close(pipe_fds[1]);
    char report[6] = {};
    EXPECT_EQ(::read(pipe_fds[0], report, 5), 5);
    ::close(pipe_fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_STREQ(report, "yyyyy") << "unix socket, inet refused, ptrace refused, mount refused, "
                                     "getpid";
}

}  // namespace
}  // namespace ring3::broker
