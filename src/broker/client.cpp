// The client side of ring3d (client.hpp).
#include "ring3/broker/client.hpp"

#include <fmt/core.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>

#include "ring3/core/error.hpp"

namespace ring3::broker {
namespace {

// The reply to `request` on `socket`, checked: ok, or an Error carrying ring3d's reason.
Message exchange(int socket, const Request& request, std::size_t max_fds, const std::string& what,
                 const std::string& object) {
    send_message(socket, format_request(request));
    std::optional<Message> reply = receive_message(socket, max_fds);
    if (!reply) {
        throw Error::invalid(what, object, "ring3d closed the connection without answering", EPIPE);
    }
    const nlohmann::json j = nlohmann::json::parse(reply->text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean()) {
        throw Error::invalid(what, object, "ring3d's reply is not a protocol message", EPROTO);
    }
    if (!j["ok"].get<bool>()) {
        const std::string reason = j.contains("error") && j["error"].is_string()
                                       ? j["error"].get<std::string>()
                                       : "refused (no reason given)";
        const int code =
            j.contains("errno") && j["errno"].is_number_integer() ? j["errno"].get<int>() : EPERM;
        throw Error::invalid(what, object, "ring3d: " + reason, code);
    }
    return std::move(*reply);
}

// A supervised driver's connection to ring3d, inherited on the descriptor $RING3D_FD names;
// taken once (the variable is removed), so a second claim in the process connects anew.
std::optional<UniqueFd> take_inherited() {
    const char* text = std::getenv("RING3D_FD");
    if (text == nullptr) {
        return std::nullopt;
    }
    const std::string value = text;
    ::unsetenv("RING3D_FD");
    int fd = -1;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), fd);
    int type = 0;
    socklen_t length = sizeof type;
    if (ec != std::errc() || end != value.data() + value.size() || fd < 0 ||
        ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_SEQPACKET) {
        throw Error::invalid("claim", "RING3D_FD=" + value,
                             "not a descriptor of a connection to ring3d (a SOCK_SEQPACKET "
                             "socket); unset it to connect to ring3d's socket instead",
                             EBADF);
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    return UniqueFd(fd);
}

}  // namespace

Claim Client::claim(const pci::Address& device) const {
    const std::string object = "ring3d:" + device.to_string();
    Claim claim;
    if (auto inherited = take_inherited()) {
        claim.lease = std::move(*inherited);
    } else {
        claim.lease = connect(path_);
    }
    Request request;
    request.verb = Verb::claim;
    request.device = device;
    Message reply = exchange(claim.lease.get(), request, 2, "claim", object);
    if (reply.fds.size() != 2) {
        throw Error::invalid("claim", object,
                             fmt::format("ring3d granted it with {} file descriptor(s); a VFIO "
                                         "container and device (2) were expected",
                                         reply.fds.size()),
                             EPROTO);
    }
    claim.container = std::move(reply.fds[0]);
    claim.device = std::move(reply.fds[1]);
    return claim;
}

void release(int lease, const pci::Address& device, std::chrono::milliseconds timeout) noexcept {
    try {
        Request request;
        request.verb = Verb::release;
        request.device = device;
        send_message(lease, format_request(request));
        pollfd p{lease, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
            (void)receive_message(lease, 0);
        }
    } catch (const std::exception&) {
        // ring3d gone or the lease already closed: nothing to wait for.
    }
}

std::optional<std::string> revoked(int lease) {
    char buffer[kMaxMessage];
    const ssize_t n = ::recv(lease, buffer, sizeof buffer, MSG_PEEK | MSG_DONTWAIT);
    if (n <= 0) {
        return std::nullopt;
    }
    const nlohmann::json j = nlohmann::json::parse(
        std::string_view(buffer, static_cast<std::size_t>(n)), nullptr, false);
    if (!j.is_object() || !j.contains("event") || j["event"] != "revoked") {
        return std::nullopt;
    }
    const std::string reason = j.contains("reason") && j["reason"].is_string()
                                   ? j["reason"].get<std::string>()
                                   : "no reason given";
    return "ring3d revoked the claim: " + reason;
}

std::string Client::call(const Request& request) const {
    UniqueFd socket = connect(path_);
    return exchange(socket.get(), request, 0, to_string(request.verb), "ring3d").text;
}

}  // namespace ring3::broker
