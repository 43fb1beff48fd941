// The client side of ring3d (client.hpp).
#include "ring3/broker/client.hpp"

#include <fmt/core.h>

#include <cerrno>
#include <nlohmann/json.hpp>

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

}  // namespace

Claim Client::claim(const pci::Address& device) const {
    const std::string object = "ring3d:" + device.to_string();
    Claim claim;
    claim.lease = connect(path_);
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

std::string Client::call(const Request& request) const {
    UniqueFd socket = connect(path_);
    return exchange(socket.get(), request, 0, to_string(request.verb), "ring3d").text;
}

}  // namespace ring3::broker
