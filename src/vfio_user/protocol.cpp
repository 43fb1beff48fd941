// The vfio-user wire protocol (QEMU docs/interop/vfio-user.rst): message framing over an AF_UNIX
// stream socket with SCM_RIGHTS, and the validated decoders both sides share.
#include "ring3/vfio_user/protocol.hpp"

#include <fmt/core.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <nlohmann/json.hpp>

#include "ring3/core/error.hpp"

namespace ring3::vfio_user {
namespace {

Error malformed(const std::string& what, const std::string& reason, int errnum = EPROTO) {
    return Error::invalid("decode", what, reason, errnum);
}

// Reads exactly `size` bytes (collecting fds from any of them). Returns false when the peer closed
// before the first byte; throws when it closed in the middle.
bool read_exact(int fd, std::byte* data, std::size_t size, std::vector<UniqueFd>& fds,
                std::size_t max_fds, bool& fds_truncated, const std::string& peer) {
    std::size_t done = 0;
    while (done < size) {
        iovec iov{data + done, size - done};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)] = {};
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw Error::from_errno("receive a vfio-user message from", peer);
        }
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (std::size_t i = 0; i < count; ++i) {
                    int received = -1;
                    std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
                    fds.emplace_back(received);  // owned at once: closed on every error path
                }
            }
        }
        if ((msg.msg_flags & MSG_CTRUNC) != 0) {
            fds_truncated = true;
        }
        if (n == 0) {
            if (done == 0 && fds.empty()) {
                return false;
            }
            throw Error::invalid(
                "receive a vfio-user message from", peer,
                fmt::format("the connection closed {} bytes into a {}-byte read", done, size),
                ECONNRESET);
        }
        done += static_cast<std::size_t>(n);
    }
    if (fds_truncated || fds.size() > max_fds) {
        throw Error::invalid(
            "receive a vfio-user message from", peer,
            fmt::format("{} file descriptors came with it; at most {} allowed",
                        fds_truncated ? "too many" : std::to_string(fds.size()), max_fds),
            EBADMSG);
    }
    return true;
}

}  // namespace

const char* to_string(Command command) noexcept {
    switch (command) {
        case Command::version:
            return "VERSION";
        case Command::dma_map:
            return "DMA_MAP";
        case Command::dma_unmap:
            return "DMA_UNMAP";
        case Command::device_get_info:
            return "DEVICE_GET_INFO";
        case Command::device_get_region_info:
            return "DEVICE_GET_REGION_INFO";
        case Command::device_get_region_io_fds:
            return "DEVICE_GET_REGION_IO_FDS";
        case Command::device_get_irq_info:
            return "DEVICE_GET_IRQ_INFO";
        case Command::device_set_irqs:
            return "DEVICE_SET_IRQS";
        case Command::region_read:
            return "REGION_READ";
        case Command::region_write:
            return "REGION_WRITE";
        case Command::dma_read:
            return "DMA_READ";
        case Command::dma_write:
            return "DMA_WRITE";
        case Command::device_reset:
            return "DEVICE_RESET";
    }
    return "unknown command";
}

void throw_short_payload(const char* what, std::size_t have, std::size_t need) {
    throw malformed(what,
                    fmt::format("the payload has {} bytes; at least {} expected", have, need));
}

// Spec "VERSION": major must match; the JSON names the sender's limits.
std::vector<std::byte> encode_version(const Limits& limits) {
    const nlohmann::json caps = {{"capabilities",
                                  {{"max_msg_fds", limits.max_msg_fds},
                                   {"max_data_xfer_size", limits.max_data_xfer_size},
                                   {"max_dma_maps", limits.max_dma_maps},
                                   {"pgsizes", 4096}}}};
    const std::string text = caps.dump();
    std::vector<std::byte> tail(text.size() + 1);  // NUL-terminated
    std::memcpy(tail.data(), text.data(), text.size());
    return encode(VersionPayload{kMajor, kMinor}, tail);
}

Version decode_version(std::span<const std::byte> payload) {
    const auto fixed = decode_fixed<VersionPayload>(payload, "VERSION");
    if (fixed.major != kMajor) {
        throw malformed("VERSION",
                        fmt::format("protocol version {}.{}; this side speaks {}.{}", fixed.major,
                                    fixed.minor, kMajor, kMinor),
                        EPROTONOSUPPORT);
    }
    Version version;
    version.major = fixed.major;
    version.minor = fixed.minor;
    auto text = payload.subspan(sizeof(VersionPayload));
    // The JSON string is NUL-terminated; tolerate a missing terminator, never read past the end.
    std::size_t length = 0;
    while (length < text.size() && text[length] != std::byte{0}) {
        ++length;
    }
    if (length == 0) {
        return version;  // no capabilities: the defaults apply
    }
    const auto* chars = reinterpret_cast<const char*>(text.data());
    const nlohmann::json json = nlohmann::json::parse(chars, chars + length, nullptr, false);
    if (json.is_discarded() || !json.is_object()) {
        throw malformed("VERSION", "the capabilities are not a JSON object");
    }
    const auto caps = json.find("capabilities");
    if (caps == json.end()) {
        return version;
    }
    if (!caps->is_object()) {
        throw malformed("VERSION", "'capabilities' is not a JSON object");
    }
    const auto number = [&](const char* key, std::uint64_t low, std::uint64_t high,
                            std::uint64_t fallback) -> std::uint64_t {
        const auto it = caps->find(key);
        if (it == caps->end()) {
            return fallback;
        }
        if (!it->is_number_unsigned() || it->get<std::uint64_t>() < low ||
            it->get<std::uint64_t>() > high) {
            throw malformed("VERSION", fmt::format("capability '{}' is {}; a number in {}..{} "
                                                   "expected",
                                                   key, it->dump(), low, high));
        }
        return it->get<std::uint64_t>();
    };
    const Limits defaults;
    version.limits.max_msg_fds =
        static_cast<std::uint32_t>(number("max_msg_fds", 1, 253, defaults.max_msg_fds));
    version.limits.max_data_xfer_size =
        number("max_data_xfer_size", 8, std::uint64_t{1} << 30, defaults.max_data_xfer_size);
    version.limits.max_dma_maps = static_cast<std::uint32_t>(number(
        "max_dma_maps", 1, std::numeric_limits<std::uint32_t>::max(), defaults.max_dma_maps));
    return version;
}

// Spec "DEVICE_GET_REGION_INFO": a sparse-mmap capability right after the fixed part.
std::vector<std::byte> encode_region_info(const RegionInfoPayload& info,
                                          std::span<const SparseArea> sparse_areas) {
    RegionInfoPayload fixed = info;
    if (sparse_areas.empty()) {
        fixed.argsz = sizeof fixed;
        fixed.cap_offset = 0;
        return encode(fixed);
    }
    SparseMmapCapability cap;
    cap.header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
    cap.header.version = 1;
    cap.header.next = 0;
    cap.nr_areas = static_cast<std::uint32_t>(sparse_areas.size());
    fixed.flags |= VFIO_REGION_INFO_FLAG_CAPS;
    fixed.cap_offset = sizeof fixed;
    fixed.argsz = static_cast<std::uint32_t>(sizeof fixed + sizeof cap + sparse_areas.size_bytes());
    std::vector<std::byte> tail(sizeof cap);
    std::memcpy(tail.data(), &cap, sizeof cap);
    for (const SparseArea& area : sparse_areas) {
        const auto* bytes = reinterpret_cast<const std::byte*>(&area);
        tail.insert(tail.end(), bytes, bytes + sizeof area);
    }
    return encode(fixed, tail);
}

RegionInfoReply decode_region_info(std::span<const std::byte> payload) {
    RegionInfoReply reply;
    reply.info = decode_fixed<RegionInfoPayload>(payload, "DEVICE_GET_REGION_INFO reply");
    const std::string what =
        fmt::format("DEVICE_GET_REGION_INFO reply (region {})", reply.info.index);
    if ((reply.info.flags & VFIO_REGION_INFO_FLAG_CAPS) == 0 || reply.info.cap_offset == 0) {
        return reply;
    }
    std::uint64_t offset = reply.info.cap_offset;
    // Each capability must start after the fixed part and after the previous one: a chain that
    // loops or goes backwards is refused, so the walk ends.
    std::uint64_t floor = sizeof(RegionInfoPayload);
    while (offset != 0) {
        if (offset < floor || offset > payload.size() ||
            payload.size() - offset < sizeof(CapabilityHeader)) {
            throw malformed(what, fmt::format("a capability at offset {} lies outside the {}-byte "
                                              "reply or before the previous one",
                                              offset, payload.size()));
        }
        const auto header = decode_fixed<CapabilityHeader>(payload.subspan(offset), what.c_str());
        if (header.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
            const auto cap =
                decode_fixed<SparseMmapCapability>(payload.subspan(offset), what.c_str());
            const std::uint64_t room =
                (payload.size() - offset - sizeof(SparseMmapCapability)) / sizeof(SparseArea);
            if (cap.nr_areas > room) {
                throw malformed(what, fmt::format("the sparse-mmap capability lists {} areas; the "
                                                  "reply has room for {}",
                                                  cap.nr_areas, room));
            }
            for (std::uint32_t i = 0; i < cap.nr_areas; ++i) {
                const auto area = decode_fixed<SparseArea>(
                    payload.subspan(offset + sizeof(SparseMmapCapability) + i * sizeof(SparseArea)),
                    what.c_str());
                if (area.size == 0 || area.offset > reply.info.size ||
                    area.size > reply.info.size - area.offset) {
                    throw malformed(what, fmt::format("sparse area {} ({:#x}+{:#x}) is empty or "
                                                      "outside the {:#x}-byte region",
                                                      i, area.offset, area.size, reply.info.size));
                }
                reply.sparse_areas.push_back(area);
            }
        }
        floor = offset + sizeof(CapabilityHeader);
        offset = header.next;
    }
    return reply;
}

RegionTransfer decode_region_access(std::span<const std::byte> payload, bool expect_data,
                                    std::uint64_t max_data) {
    RegionTransfer transfer;
    transfer.access = decode_fixed<RegionAccess>(payload, "region access");
    const auto data = payload.subspan(sizeof(RegionAccess));
    const std::string what =
        fmt::format("region access (region {} offset {:#x} count {})", transfer.access.region,
                    transfer.access.offset, transfer.access.count);
    if (transfer.access.count == 0 || transfer.access.count > max_data) {
        throw malformed(what, fmt::format("count must be 1..{}", max_data), EMSGSIZE);
    }
    if (transfer.access.offset >
        std::numeric_limits<std::uint64_t>::max() - transfer.access.count) {
        throw malformed(what, "offset + count overflows");
    }
    if (expect_data ? data.size() != transfer.access.count : !data.empty()) {
        throw malformed(what, fmt::format("{} bytes of data follow; {} expected", data.size(),
                                          expect_data ? transfer.access.count : 0));
    }
    transfer.data = data;
    return transfer;
}

DmaTransfer decode_dma_access(std::span<const std::byte> payload, bool expect_data,
                              std::uint64_t max_data) {
    DmaTransfer transfer;
    transfer.access = decode_fixed<DmaAccess>(payload, "DMA access");
    const auto data = payload.subspan(sizeof(DmaAccess));
    const std::string what = fmt::format("DMA access (address {:#x} count {})",
                                         transfer.access.addr, transfer.access.count);
    if (transfer.access.count == 0 || transfer.access.count > max_data) {
        throw malformed(what, fmt::format("count must be 1..{}", max_data), EMSGSIZE);
    }
    if (transfer.access.addr > std::numeric_limits<std::uint64_t>::max() - transfer.access.count) {
        throw malformed(what, "address + count overflows");
    }
    if (expect_data ? data.size() != transfer.access.count : !data.empty()) {
        throw malformed(what, fmt::format("{} bytes of data follow; {} expected", data.size(),
                                          expect_data ? transfer.access.count : 0));
    }
    transfer.data = data;
    return transfer;
}

void validate_header(const Header& header, const Limits& limits) {
    const std::string what =
        fmt::format("vfio-user header (id {} command {})", header.msg_id, header.command);
    if (header.msg_size < sizeof(Header) || header.msg_size > limits.max_message()) {
        throw malformed(what,
                        fmt::format("message size {} is outside {}..{}", header.msg_size,
                                    sizeof(Header), limits.max_message()),
                        EMSGSIZE);
    }
    const std::uint32_t type = header.flags & kTypeMask;
    if (type != kTypeCommand && type != kTypeReply) {
        throw malformed(what,
                        fmt::format("message type {} is neither command (0) nor reply (1)", type));
    }
    if ((header.flags & ~(kTypeMask | kFlagNoReply | kFlagError)) != 0) {
        throw malformed(what, fmt::format("unknown flags {:#x}", header.flags));
    }
}

Channel::Channel(UniqueFd socket, std::string peer, Limits limits)
    : socket_(std::move(socket)), peer_(std::move(peer)), limits_(limits) {}

Channel Channel::connect(const std::string& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof address.sun_path) {
        throw Error::invalid(
            "connect to vfio-user server", fmt::format("'{}'", path),
            fmt::format("a socket path must have 1..{} characters", sizeof address.sun_path - 1),
            ENAMETOOLONG);
    }
    std::memcpy(address.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw Error::from_errno("create a socket for", path);
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        throw Error::from_errno("connect to vfio-user server", path);
    }
    return Channel(std::move(fd), path);
}

void Channel::send(Header header, std::span<const std::byte> payload, std::span<const int> fds) {
    if (!socket_) {
        throw Error::invalid("send to", peer_, "the connection is closed", ENOTCONN);
    }
    const std::uint64_t size = sizeof(Header) + payload.size();
    if (size > limits_.max_message() || fds.size() > limits_.max_msg_fds) {
        throw Error::invalid(
            fmt::format("send {}", to_string(static_cast<Command>(header.command))), peer_,
            fmt::format("{} bytes and {} fds; at most {} and {}", size, fds.size(),
                        limits_.max_message(), limits_.max_msg_fds),
            EMSGSIZE);
    }
    header.msg_size = static_cast<std::uint32_t>(size);
    iovec iov[2] = {{&header, sizeof header},
                    {const_cast<std::byte*>(payload.data()), payload.size()}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = payload.empty() ? 1 : 2;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)] = {};
    if (!fds.empty()) {
        if (fds.size() > 16) {
            throw Error::invalid("send", peer_, "more than 16 fds in one message", EMSGSIZE);
        }
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    std::size_t sent = 0;
    while (sent < size) {
        const ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw Error::from_errno(
                fmt::format("send {}", to_string(static_cast<Command>(header.command))), peer_);
        }
        sent += static_cast<std::size_t>(n);
        if (sent == size) {
            break;
        }
        // A partial send: the fds went with the first byte; continue with the rest alone.
        msg.msg_control = nullptr;
        msg.msg_controllen = 0;
        std::size_t skip = static_cast<std::size_t>(n);
        while (msg.msg_iovlen > 0 && skip >= msg.msg_iov[0].iov_len) {
            skip -= msg.msg_iov[0].iov_len;
            ++msg.msg_iov;
            --msg.msg_iovlen;
        }
        msg.msg_iov[0].iov_base = static_cast<char*>(msg.msg_iov[0].iov_base) + skip;
        msg.msg_iov[0].iov_len -= skip;
    }
}

std::optional<Message> Channel::receive() {
    if (!socket_) {
        throw Error::invalid("receive from", peer_, "the connection is closed", ENOTCONN);
    }
    Message message;
    bool fds_truncated = false;
    if (!read_exact(socket_.get(), reinterpret_cast<std::byte*>(&message.header),
                    sizeof message.header, message.fds, limits_.max_msg_fds, fds_truncated,
                    peer_)) {
        return std::nullopt;
    }
    validate_header(message.header, limits_);
    message.payload.resize(message.header.msg_size - sizeof(Header));
    if (!message.payload.empty()) {
        if (!read_exact(socket_.get(), message.payload.data(), message.payload.size(), message.fds,
                        limits_.max_msg_fds, fds_truncated, peer_)) {
            throw Error::invalid("receive a vfio-user message from", peer_,
                                 "the connection closed after the header", ECONNRESET);
        }
    }
    return message;
}

Message Channel::call(Command command, std::span<const std::byte> payload,
                      std::span<const int> fds) {
    Header header;
    header.msg_id = next_id_++;
    header.command = static_cast<std::uint16_t>(command);
    header.flags = kTypeCommand;
    send(header, payload, fds);
    std::optional<Message> reply = receive();
    const std::string what = fmt::format("{} (message {})", to_string(command), header.msg_id);
    if (!reply) {
        throw Error::invalid(what, peer_, "the server closed the connection", ECONNRESET);
    }
    if (!reply->is_reply() || reply->header.msg_id != header.msg_id ||
        reply->header.command != header.command) {
        throw Error::invalid(
            what, peer_,
            fmt::format("the answer is not its reply (id {} command {} flags "
                        "{:#x})",
                        reply->header.msg_id, reply->header.command, reply->header.flags),
            EPROTO);
    }
    if (reply->is_error()) {
        const int errnum = reply->header.error != 0 && reply->header.error < 4096
                               ? static_cast<int>(reply->header.error)
                               : EIO;
        throw Error(what, peer_, errnum);
    }
    return std::move(*reply);
}

UniqueFd listen_at(const std::string& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof address.sun_path) {
        throw Error::invalid(
            "listen at", fmt::format("'{}'", path),
            fmt::format("a socket path must have 1..{} characters", sizeof address.sun_path - 1),
            ENAMETOOLONG);
    }
    std::memcpy(address.sun_path, path.data(), path.size());
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            throw Error::invalid("listen at", path, "the path exists and is not a socket", EEXIST);
        }
        ::unlink(path.c_str());  // a stale socket of an earlier server
    }
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw Error::from_errno("create a socket for", path);
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        throw Error::from_errno("bind", path);
    }
    if (::listen(fd.get(), 4) != 0) {
        throw Error::from_errno("listen at", path);
    }
    return fd;
}

}  // namespace ring3::vfio_user
