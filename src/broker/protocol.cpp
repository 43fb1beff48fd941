// The ring3d protocol (protocol.hpp, PROTOCOL.md): parsing, framing and fd passing.
#include "ring3/broker/protocol.hpp"

#include <fmt/core.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ring3/core/error.hpp"

namespace ring3::broker {
namespace {

constexpr const char* kVerbs = "list, claim, release, status";

Error bad_request(const std::string& why, int code = EINVAL) {
    return Error::invalid("parse request", "ring3d protocol", why, code);
}

std::string_view type_name(const nlohmann::json& value) {
    return value.type_name();
}

}  // namespace

const char* to_string(Verb verb) noexcept {
    switch (verb) {
        case Verb::list:
            return "list";
        case Verb::claim:
            return "claim";
        case Verb::release:
            return "release";
        case Verb::status:
            return "status";
    }
    return "?";
}

Request parse_request(std::string_view text) {
    if (text.size() > kMaxMessage) {
        throw bad_request(
            fmt::format("the request is {} bytes, at most {} are read", text.size(), kMaxMessage),
            EMSGSIZE);
    }
    // No exceptions from the parser itself: a discarded value says "not JSON"; depth is bounded
    // by the size limit above.
    const nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded()) {
        throw bad_request("not a JSON object (malformed JSON)");
    }
    if (!j.is_object()) {
        throw bad_request(fmt::format("a request is a JSON object, not {}", type_name(j)));
    }
    Request request;
    for (const auto& [key, value] : j.items()) {
        if (key != "version" && key != "verb" && key != "device") {
            throw bad_request(fmt::format("unknown key '{}' (known: version, verb, device)", key));
        }
        (void)value;
    }
    const auto version = j.find("version");
    if (version == j.end() || !version->is_number_integer()) {
        throw bad_request("'version' is missing or not an integer");
    }
    if (version->get<long long>() != kProtocolVersion) {
        throw bad_request(fmt::format("protocol version {} is not spoken here (this is version {})",
                                      version->dump(), kProtocolVersion),
                          EPROTO);
    }
    const auto verb = j.find("verb");
    if (verb == j.end() || !verb->is_string()) {
        throw bad_request(fmt::format("'verb' is missing or not a string (known: {})", kVerbs));
    }
    const std::string& name = verb->get_ref<const std::string&>();
    if (name == "list") {
        request.verb = Verb::list;
    } else if (name == "claim") {
        request.verb = Verb::claim;
    } else if (name == "release") {
        request.verb = Verb::release;
    } else if (name == "status") {
        request.verb = Verb::status;
    } else {
        throw bad_request(fmt::format("unknown verb '{}' (known: {})",
                                      name.substr(0, 40) + (name.size() > 40 ? "..." : ""),
                                      kVerbs));
    }
    const auto device = j.find("device");
    const bool needs_device = request.verb == Verb::claim || request.verb == Verb::release;
    if (needs_device) {
        if (device == j.end() || !device->is_string()) {
            throw bad_request(fmt::format("'{}' needs 'device', a PCI address string", name));
        }
        request.device = pci::Address::parse(device->get_ref<const std::string&>());
    } else if (device != j.end()) {
        throw bad_request(fmt::format("'{}' takes no 'device'", name));
    }
    return request;
}

std::string format_request(const Request& request) {
    nlohmann::json j = {{"version", request.version}, {"verb", to_string(request.verb)}};
    if (request.device) {
        j["device"] = request.device->to_string();
    }
    return j.dump();
}

void send_message(int socket, std::string_view text, std::span<const int> fds) {
    if (text.size() > kMaxMessage || fds.size() > kMaxFds) {
        throw Error::invalid("send message", "ring3d protocol",
                             fmt::format("{} bytes and {} fds; at most {} and {}", text.size(),
                                         fds.size(), kMaxMessage, kMaxFds),
                             EMSGSIZE);
    }
    iovec iov{const_cast<char*>(text.data()), text.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    if (!fds.empty()) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    do {
        n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        throw Error::from_errno("send a message on", "the ring3d socket");
    }
}

std::optional<Message> receive_message(int socket, std::size_t max_fds) {
    // One byte more than allowed, so an oversized message is seen (MSG_TRUNC says it too).
    std::string buffer(kMaxMessage + 1, '\0');
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * (kMaxFds + 1))] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
        n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        throw Error::from_errno("receive a message on", "the ring3d socket");
    }
    Message message;
    bool fds_truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < count; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                message.fds.emplace_back(fd);  // owned, so closed on every error path below
            }
        }
    }
    if (n == 0 && message.fds.empty()) {
        return std::nullopt;  // SOCK_SEQPACKET: a zero-length read is the peer's close
    }
    if (static_cast<std::size_t>(n) > kMaxMessage || (msg.msg_flags & MSG_TRUNC) != 0) {
        throw Error::invalid("receive a message", "ring3d protocol",
                             fmt::format("the message is longer than {} bytes", kMaxMessage),
                             EMSGSIZE);
    }
    if (fds_truncated || message.fds.size() > max_fds) {
        throw Error::invalid(
            "receive a message", "ring3d protocol",
            fmt::format("{} file descriptor(s) came with it, {} expected",
                        fds_truncated ? "too many" : std::to_string(message.fds.size()), max_fds),
            EBADMSG);
    }
    buffer.resize(static_cast<std::size_t>(n));
    message.text = std::move(buffer);
    return message;
}

std::string socket_path(std::string_view path) {
    if (!path.empty()) {
        return std::string(path);
    }
    if (const char* env = std::getenv(kSocketEnvironment); env != nullptr && *env != '\0') {
        return env;
    }
    return kDefaultSocket;
}

UniqueFd connect(const std::string& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof address.sun_path) {
        throw Error::invalid("connect to ring3d", path, "the socket path is too long",
                             ENAMETOOLONG);
    }
    std::memcpy(address.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw Error::from_errno("create a socket for", "ring3d");
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        const int error = errno;
        throw Error::invalid(
            "connect to ring3d", path,
            fmt::format("{} (is ring3d running? its socket is set by --socket and found by "
                        "clients through ${})",
                        std::strerror(error), kSocketEnvironment),
            error);
    }
    return fd;
}

}  // namespace ring3::broker
