// The ring3d protocol (docs in src/broker/PROTOCOL.md): one JSON object per message over a
// SOCK_SEQPACKET Unix socket, so message boundaries are the socket's. File descriptors travel with
// a reply as SCM_RIGHTS. Requests are small and validated strictly: anything unexpected (a
// message over kMaxMessage bytes, fds sent to the server, malformed JSON, an unknown verb or key,
// a wrong type, a malformed device address) is answered with an error that names it.
//
//   {"version":1,"verb":"list"}
//   {"version":1,"verb":"claim","device":"0000:01:00.0"}    -> reply + fds [container, device]
//   {"version":1,"verb":"release","device":"0000:01:00.0"}
//   {"version":1,"verb":"status"}
// Replies: {"ok":true,...} or {"ok":false,"error":"<what went wrong>","errno":N}.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/core/unique_fd.hpp"
#include "ring3/pci/address.hpp"

namespace ring3::broker {

inline constexpr int kProtocolVersion = 1;
inline constexpr std::size_t kMaxMessage = 4096;  // bytes of one request or reply
inline constexpr std::size_t kMaxFds = 4;         // fds one reply may carry
inline constexpr const char* kDefaultSocket = "/run/ring3/ring3d.sock";
inline constexpr const char* kSocketEnvironment = "RING3D_SOCKET";

enum class Verb { list, claim, release, status };
const char* to_string(Verb verb) noexcept;

struct Request {
    int version = kProtocolVersion;
    Verb verb = Verb::list;
    std::optional<pci::Address> device;  // claim, release
};

// Parses one request. Throws ring3::Error (EINVAL, or EPROTO for a version it does not speak)
// whose message says what is wrong ("unknown verb 'clam' (known: list, claim, release, status)").
Request parse_request(std::string_view text);
std::string format_request(const Request& request);

// One message received: its text and the fds that came with it (owned).
struct Message {
    std::string text;
    std::vector<UniqueFd> fds;
};

// Sends one message with `fds` attached. Throws ring3::Error on a socket error.
void send_message(int socket, std::string_view text, std::span<const int> fds = {});
// Receives one message (blocking unless the socket is non-blocking): nullopt when the peer
// closed. Throws ring3::Error for a socket error, a message longer than kMaxMessage (EMSGSIZE)
// or one carrying more than `max_fds` descriptors (EBADMSG; the fds are closed either way).
std::optional<Message> receive_message(int socket, std::size_t max_fds);

// The socket path: `path` if given, else $RING3D_SOCKET, else kDefaultSocket.
std::string socket_path(std::string_view path = {});
// Connects a SOCK_SEQPACKET socket to ring3d; throws ring3::Error saying how to start it.
UniqueFd connect(const std::string& path);

}  // namespace ring3::broker
