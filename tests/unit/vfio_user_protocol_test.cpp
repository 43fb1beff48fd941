// The vfio-user wire protocol (src/vfio_user/protocol.cpp): encoders and decoders agree, and every
// malformed field is refused with an error naming it; Channel frames messages with their fds and
// tells a clean close from a torn one. The client backend refuses servers it cannot use.
#include <gtest/gtest.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/device/device.hpp"
#include "ring3/vfio_user/protocol.hpp"

namespace ring3::vfio_user {
namespace {

std::pair<Channel, Channel> connected_pair(Limits limits = {}) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    return {Channel(UniqueFd(fds[0]), "a", limits), Channel(UniqueFd(fds[1]), "b", limits)};
}

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

TEST(VfioUserProtocol, VersionRoundTripsItsLimits) {
    Limits limits;
    limits.max_msg_fds = 3;
    limits.max_data_xfer_size = 65536;
    const Version v = decode_version(encode_version(limits));
    EXPECT_EQ(v.major, kMajor);
    EXPECT_EQ(v.limits.max_msg_fds, 3u);
    EXPECT_EQ(v.limits.max_data_xfer_size, 65536u);
}

TEST(VfioUserProtocol, VersionRefusesAnotherMajorAndBadCapabilities) {
    auto payload = encode_version(Limits{});
    payload[0] = std::byte{1};  // major 1
    EXPECT_NE(error_of([&] { decode_version(payload); }).find("protocol version 1.1"),
              std::string::npos);
    const auto with_json = [](const std::string& json) {
        return encode(VersionPayload{kMajor, kMinor},
                      std::as_bytes(std::span<const char>(json.data(), json.size())));
    };
    EXPECT_NE(error_of([&] { decode_version(with_json("[1,2]")); }).find("not a JSON object"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  decode_version(with_json(R"({"capabilities":{"max_msg_fds":0}})"));
              }).find("max_msg_fds"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  decode_version(with_json(R"({"capabilities":{"max_data_xfer_size":"big"}})"));
              }).find("max_data_xfer_size"),
              std::string::npos);
    EXPECT_NE(error_of([&] { decode_version(std::vector<std::byte>(3)); }).find("3 bytes"),
              std::string::npos);
    // Missing capabilities mean the defaults.
    EXPECT_EQ(decode_version(with_json("{}")).limits.max_msg_fds, Limits{}.max_msg_fds);
}

TEST(VfioUserProtocol, RegionInfoCarriesSparseAreas) {
    RegionInfoPayload info;
    info.index = 0;
    info.size = 0x4000;
    info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP;
    const SparseArea areas[] = {{0x1000, 0x1000}, {0x3000, 0x1000}};
    const RegionInfoReply reply = decode_region_info(encode_region_info(info, areas));
    EXPECT_EQ(reply.info.size, 0x4000u);
    ASSERT_EQ(reply.sparse_areas.size(), 2u);
    EXPECT_EQ(reply.sparse_areas[1].offset, 0x3000u);
    EXPECT_TRUE(reply.info.flags & VFIO_REGION_INFO_FLAG_CAPS);
}

TEST(VfioUserProtocol, RegionInfoRefusesBadCapabilityChains) {
    RegionInfoPayload info;
    info.size = 0x2000;
    const SparseArea outside[] = {{0x1000, 0x2000}};
    EXPECT_NE(error_of([&] {
                  decode_region_info(encode_region_info(info, outside));
              }).find("outside the 0x2000-byte region"),
              std::string::npos);

    const SparseArea one[] = {{0, 0x1000}};
    auto looping = encode_region_info(info, one);
    // Point the capability's `next` back at itself.
    const std::uint32_t self = sizeof(RegionInfoPayload);
    std::memcpy(looping.data() + sizeof(RegionInfoPayload) + 4, &self, 4);
    EXPECT_NE(error_of([&] { decode_region_info(looping); }).find("before the previous one"),
              std::string::npos);

    auto too_many = encode_region_info(info, one);
    const std::uint32_t many = 1000;
    std::memcpy(too_many.data() + sizeof(RegionInfoPayload) + 8, &many, 4);
    EXPECT_NE(error_of([&] { decode_region_info(too_many); }).find("lists 1000 areas"),
              std::string::npos);

    auto truncated = encode_region_info(info, one);
    truncated.resize(sizeof(RegionInfoPayload) + 4);
    EXPECT_NE(error_of([&] { decode_region_info(truncated); }).find("outside the"),
              std::string::npos);
}

TEST(VfioUserProtocol, RegionAccessDataMustMatchItsCount) {
    const std::byte data[4] = {};
    const auto ok = decode_region_access(encode(RegionAccess{0x10, 7, 4}, data), true, 4096);
    EXPECT_EQ(ok.data.size(), 4u);
    EXPECT_NE(error_of([&] {
                  decode_region_access(encode(RegionAccess{0, 7, 8}, data), true, 4096);
              }).find("4 bytes of data follow; 8 expected"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  decode_region_access(encode(RegionAccess{0, 7, 8192}), false, 4096);
              }).find("count must be 1..4096"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  decode_region_access(encode(RegionAccess{~0ull - 1, 7, 4}), false, 4096);
              }).find("overflows"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  decode_dma_access(encode(DmaAccess{0, 0}), false, 4096);
              }).find("count must be"),
              std::string::npos);
}

TEST(VfioUserChannel, CarriesMessagesAndFds) {
    auto channels = connected_pair();
    Channel& a = channels.first;
    Channel& b = channels.second;
    UniqueFd event(::eventfd(0, EFD_CLOEXEC));
    const int fd = event.get();
    Header header;
    header.msg_id = 7;
    header.command = static_cast<std::uint16_t>(Command::device_set_irqs);
    const IrqSet set{sizeof(IrqSet), VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 2, 0,
                     1};
    a.send(header, encode(set), std::span<const int>(&fd, 1));
    auto message = b.receive();
    ASSERT_TRUE(message);
    EXPECT_EQ(message->header.msg_id, 7);
    EXPECT_EQ(message->command(), Command::device_set_irqs);
    EXPECT_EQ(message->header.msg_size, sizeof(Header) + sizeof(IrqSet));
    ASSERT_EQ(message->fds.size(), 1u);
    // The received fd is the same eventfd.
    const std::uint64_t one = 1;
    ASSERT_EQ(::write(message->fds[0].get(), &one, sizeof one), 8);
    std::uint64_t got = 0;
    ASSERT_EQ(::read(fd, &got, sizeof got), 8);
    EXPECT_EQ(got, 1u);
    a.close();
    EXPECT_FALSE(b.receive());  // closed between messages: the end, not an error
}

TEST(VfioUserChannel, RefusesBadHeadersAndTornMessages) {
    {
        auto channels = connected_pair();
        Channel& a = channels.first;
        Channel& b = channels.second;
        Header header;
        header.msg_size = 1u << 30;
        ASSERT_EQ(::write(a.fd(), &header, sizeof header), 16);
        EXPECT_NE(error_of([&] { b.receive(); }).find("message size 1073741824"),
                  std::string::npos);
    }
    {
        auto channels = connected_pair();
        Channel& a = channels.first;
        Channel& b = channels.second;
        Header header;
        header.msg_size = 16;
        header.flags = 7;
        ASSERT_EQ(::write(a.fd(), &header, sizeof header), 16);
        EXPECT_NE(error_of([&] { b.receive(); }).find("message type 7"), std::string::npos);
    }
    {
        auto channels = connected_pair();
        Channel& a = channels.first;
        Channel& b = channels.second;
        Header header;
        header.msg_size = 64;  // promises 48 bytes of payload, sends 10
        ASSERT_EQ(::write(a.fd(), &header, sizeof header), 16);
        ASSERT_EQ(::write(a.fd(), "0123456789", 10), 10);
        a.close();
        EXPECT_NE(error_of([&] { b.receive(); }).find("closed 10 bytes into a 48-byte read"),
                  std::string::npos);
    }
    {
        auto channels = connected_pair();
        Channel& a = channels.first;
        Channel& b = channels.second;
        ASSERT_EQ(::write(a.fd(), "abc", 3), 3);  // a torn header
        a.close();
        EXPECT_NE(error_of([&] { b.receive(); }).find("closed 3 bytes into a 16-byte read"),
                  std::string::npos);
    }
    {
        Limits few;
        few.max_msg_fds = 1;
        auto channels = connected_pair(few);
        Channel& a = channels.first;
        Channel& b = channels.second;
        a.set_limits(Limits{});
        UniqueFd e1(::eventfd(0, EFD_CLOEXEC)), e2(::eventfd(0, EFD_CLOEXEC));
        const int fds[] = {e1.get(), e2.get()};
        a.send(Header{}, {}, fds);
        EXPECT_NE(error_of([&] { b.receive(); }).find("2 file descriptors came with it; at most 1"),
                  std::string::npos);
    }
}

TEST(VfioUserChannel, CallTurnsAnErrorReplyIntoTheServersErrno) {
    auto channels = connected_pair();
    Channel& client = channels.first;
    Channel& server = channels.second;
    std::thread peer([&server] {
        auto request = server.receive();
        ASSERT_TRUE(request);
        Header reply = request->header;
        reply.flags = kTypeReply | kFlagError;
        reply.error = ENOSPC;
        server.send(reply, {});
    });
    const std::string message = error_of([&] { client.call(Command::device_reset, {}); });
    peer.join();
    EXPECT_NE(message.find("DEVICE_RESET"), std::string::npos) << message;
    EXPECT_NE(message.find("No space left"), std::string::npos) << message;
}

TEST(VfioUserClient, NamesTheSocketItCannotReach) {
    const std::string message =
        error_of([] { open_device("vfio-user:/nonexistent/ring3-test.sock"); });
    EXPECT_NE(message.find("/nonexistent/ring3-test.sock"), std::string::npos) << message;
    EXPECT_NE(error_of([] { open_device("vfio-user:"); }).find("no socket path"),
              std::string::npos);
}

TEST(VfioUserClient, RefusesAServerOfAnotherMajorVersion) {
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("ring3-vu-" + std::to_string(::getpid()) + ".sock"))
                                 .string();
    UniqueFd listener = listen_at(path);
    std::thread server([&] {
        Channel channel(UniqueFd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC)), "c");
        auto request = channel.receive();
        ASSERT_TRUE(request);
        Header reply = request->header;
        reply.flags = kTypeReply;
        channel.send(reply, encode(VersionPayload{3, 0}));
        channel.receive();  // until the client hangs up
    });
    const std::string message = error_of([&] { open_device("vfio-user:" + path); });
    server.join();
    std::filesystem::remove(path);
    EXPECT_NE(message.find("protocol version 3.0"), std::string::npos) << message;
}

}  // namespace
}  // namespace ring3::vfio_user
