// The vfio-user wire protocol, both sides (QEMU docs/interop/vfio-user.rst, protocol version 0.1).
//
// A PCI device lives in a server process; a client (a driver) talks to it over an AF_UNIX stream
// socket. Every message is a 16-byte header and a command-specific payload; file descriptors (DMA
// memory, region mmap fds, eventfds) ride along as SCM_RIGHTS. The structures below are the
// spec's "Message Format" sections, in host byte order. Region and IRQ indexes are VFIO PCI's.
//
// Everything received is validated before use: a Channel refuses a header whose size is out of
// bounds or whose type is unknown, and the decode_* functions refuse payloads that are too short,
// too long, or point outside themselves. They throw ring3::Error (errno EPROTO, or EMSGSIZE for
// sizes) naming what was wrong; nothing is read past a message's end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ring3/core/unique_fd.hpp"

namespace ring3::vfio_user {

inline constexpr std::uint16_t kMajor = 0;
inline constexpr std::uint16_t kMinor = 1;

// Spec "Commands".
enum class Command : std::uint16_t {
    version = 1,
    dma_map = 2,
    dma_unmap = 3,
    device_get_info = 4,
    device_get_region_info = 5,
    device_get_region_io_fds = 6,
    device_get_irq_info = 7,
    device_set_irqs = 8,
    region_read = 9,
    region_write = 10,
    dma_read = 11,
    dma_write = 12,
    device_reset = 13,
};
const char* to_string(Command command) noexcept;  // "DMA_MAP", or "command 99" for others

// Spec "Header". flags: bits 0-3 the type, bit 4 no reply wanted, bit 5 the reply is an error
// (errno in `error`).
struct Header {
    std::uint16_t msg_id = 0;
    std::uint16_t command = 0;
    std::uint32_t msg_size = 0;  // header + payload
    std::uint32_t flags = 0;
    std::uint32_t error = 0;
};
static_assert(sizeof(Header) == 16);
inline constexpr std::uint32_t kTypeCommand = 0;
inline constexpr std::uint32_t kTypeReply = 1;
inline constexpr std::uint32_t kTypeMask = 0xf;
inline constexpr std::uint32_t kFlagNoReply = 1u << 4;
inline constexpr std::uint32_t kFlagError = 1u << 5;

// VERSION: followed by a NUL-terminated JSON object {"capabilities": {...}}.
struct VersionPayload {
    std::uint16_t major = 0;
    std::uint16_t minor = 0;
};
static_assert(sizeof(VersionPayload) == 4);

// DMA_MAP: the client's memory [addr, addr+size) is at `offset` in the fd sent with it.
struct DmaMap {
    std::uint32_t argsz = 0;
    std::uint32_t flags = 0;  // kDmaRead | kDmaWrite
    std::uint64_t offset = 0;
    std::uint64_t addr = 0;
    std::uint64_t size = 0;
};
static_assert(sizeof(DmaMap) == 32);
inline constexpr std::uint32_t kDmaRead = 1u << 0;
inline constexpr std::uint32_t kDmaWrite = 1u << 1;

struct DmaUnmap {
    std::uint32_t argsz = 0;
    std::uint32_t flags = 0;
    std::uint64_t addr = 0;
    std::uint64_t size = 0;
};
static_assert(sizeof(DmaUnmap) == 24);

// DEVICE_GET_INFO (struct vfio_device_info's first four fields). flags: VFIO_DEVICE_FLAGS_*.
struct DeviceInfo {
    std::uint32_t argsz = 0;
    std::uint32_t flags = 0;
    std::uint32_t num_regions = 0;
    std::uint32_t num_irqs = 0;
};
static_assert(sizeof(DeviceInfo) == 16);

// DEVICE_GET_REGION_INFO (struct vfio_region_info). In a reply, `offset` is where the region
// starts in the fd sent with the reply (for mmap); capabilities follow at `cap_offset`, counted
// from the start of this structure. flags: VFIO_REGION_INFO_FLAG_*.
struct RegionInfoPayload {
    std::uint32_t argsz = 0;
    std::uint32_t flags = 0;
    std::uint32_t index = 0;
    std::uint32_t cap_offset = 0;
    std::uint64_t size = 0;
    std::uint64_t offset = 0;
};
static_assert(sizeof(RegionInfoPayload) == 32);

struct CapabilityHeader {
    std::uint16_t id = 0;
    std::uint16_t version = 0;
    std::uint32_t next = 0;
};
static_assert(sizeof(CapabilityHeader) == 8);
// VFIO_REGION_INFO_CAP_SPARSE_MMAP (id 1): nr_areas areas of {offset, size} follow.
struct SparseMmapCapability {
    CapabilityHeader header;
    std::uint32_t nr_areas = 0;
    std::uint32_t reserved = 0;
};
static_assert(sizeof(SparseMmapCapability) == 16);
struct SparseArea {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
};
static_assert(sizeof(SparseArea) == 16);

// DEVICE_GET_IRQ_INFO (struct vfio_irq_info). flags: VFIO_IRQ_INFO_*.
struct IrqInfo {
    std::uint32_t argsz = 0;
    std::uint32_t flags = 0;
    std::uint32_t index = 0;
    std::uint32_t count = 0;
};
static_assert(sizeof(IrqInfo) == 16);

// DEVICE_SET_IRQS (struct vfio_irq_set); with VFIO_IRQ_SET_DATA_EVENTFD the eventfds come as fds,
// one per vector (start .. start+count-1).
struct IrqSet {
    std::uint32_t argsz = 0;
    std::uint32_t flags = 0;
    std::uint32_t index = 0;
    std::uint32_t start = 0;
    std::uint32_t count = 0;
};
static_assert(sizeof(IrqSet) == 20);

// REGION_READ / REGION_WRITE: `count` bytes of data follow (in the write command, the read reply).
struct RegionAccess {
    std::uint64_t offset = 0;
    std::uint32_t region = 0;
    std::uint32_t count = 0;
};
static_assert(sizeof(RegionAccess) == 16);

// DMA_READ / DMA_WRITE (server to client, for memory without an fd).
struct DmaAccess {
    std::uint64_t addr = 0;
    std::uint64_t count = 0;
};
static_assert(sizeof(DmaAccess) == 16);

// What each side accepts; the smaller of the two sides' values applies (negotiated by VERSION).
struct Limits {
    std::uint32_t max_msg_fds = 8;
    std::uint64_t max_data_xfer_size = 1u << 20;  // bytes of data in one REGION/DMA access
    std::uint32_t max_dma_maps = 1024;
    // Largest whole message: the biggest data transfer plus room for any header and structure.
    std::uint64_t max_message() const noexcept { return max_data_xfer_size + 4096; }
};

// A received message: the header as sent and the payload after it, with the fds that came with it
// (owned: closed unless taken).
struct Message {
    Header header;
    std::vector<std::byte> payload;
    std::vector<UniqueFd> fds;

    Command command() const noexcept { return static_cast<Command>(header.command); }
    bool is_reply() const noexcept { return (header.flags & kTypeMask) == kTypeReply; }
    bool is_error() const noexcept { return (header.flags & kFlagError) != 0; }
    bool wants_reply() const noexcept { return (header.flags & kFlagNoReply) == 0; }
};

// A payload that starts with a fixed structure T (copied out: payloads are not aligned). Throws
// when the payload is shorter than T; `what` names the message in the error.
[[noreturn]] void throw_short_payload(const char* what, std::size_t have, std::size_t need);
template <class T>
T decode_fixed(std::span<const std::byte> payload, const char* what) {
    if (payload.size() < sizeof(T)) {
        throw_short_payload(what, payload.size(), sizeof(T));
    }
    T value;
    std::memcpy(&value, payload.data(), sizeof(T));
    return value;
}

// VERSION: the peer's version and capabilities. Refuses a major version other than ours, JSON that
// is not an object, and capability values that are not numbers in range.
struct Version {
    std::uint16_t major = kMajor;
    std::uint16_t minor = kMinor;
    Limits limits;
};
std::vector<std::byte> encode_version(const Limits& limits);
Version decode_version(std::span<const std::byte> payload);

// DEVICE_GET_REGION_INFO reply: the fixed part and the sparse-mmap areas of its capability chain
// (areas outside the region, chains that loop or leave the payload are refused).
struct RegionInfoReply {
    RegionInfoPayload info;
    std::vector<SparseArea> sparse_areas;
};
std::vector<std::byte> encode_region_info(const RegionInfoPayload& info,
                                          std::span<const SparseArea> sparse_areas);
RegionInfoReply decode_region_info(std::span<const std::byte> payload);

// REGION_READ/WRITE and DMA_READ/WRITE: the fixed part, and the data that follows it (a view into
// `payload`). `expect_data` says whether this message carries the data (a write command or a read
// reply); its length must then equal `count`, and `count` must not exceed `max_data`.
struct RegionTransfer {
    RegionAccess access;
    std::span<const std::byte> data;
};
RegionTransfer decode_region_access(std::span<const std::byte> payload, bool expect_data,
                                    std::uint64_t max_data);
struct DmaTransfer {
    DmaAccess access;
    std::span<const std::byte> data;
};
DmaTransfer decode_dma_access(std::span<const std::byte> payload, bool expect_data,
                              std::uint64_t max_data);

// A fixed structure followed by bytes, as one payload.
template <class T>
std::vector<std::byte> encode(const T& fixed, std::span<const std::byte> tail = {}) {
    std::vector<std::byte> out(sizeof(T) + tail.size());
    std::memcpy(out.data(), &fixed, sizeof(T));
    if (!tail.empty()) {
        std::memcpy(out.data() + sizeof(T), tail.data(), tail.size());
    }
    return out;
}

// One end of a vfio-user connection: a connected AF_UNIX stream socket. send() writes a whole
// message (fds with its first byte); receive() reads one and validates its header against the
// limits. Not thread-safe: one thread sends and receives (the client serializes its requests; the
// server serves one connection from one thread).
class Channel {
  public:
    Channel() = default;
    Channel(UniqueFd socket, std::string peer, Limits limits = {});

    // Connects to a server listening at `path`. Throws ring3::Error naming the path.
    static Channel connect(const std::string& path);

    // Sends header + payload; msg_size is filled in. Throws on a closed peer (EPIPE) or when the
    // message exceeds the limits.
    void send(Header header, std::span<const std::byte> payload, std::span<const int> fds = {});
    // The next message, or nullopt when the peer closed the connection between messages. Throws
    // on a connection closed mid-message, a header that fails validation, or too many fds.
    std::optional<Message> receive();

    // Sends a command and waits for its reply (the next message must be it: commands are served
    // in order). An error reply throws ring3::Error carrying the server's errno and `what`.
    Message call(Command command, std::span<const std::byte> payload,
                 std::span<const int> fds = {});

    void set_limits(const Limits& limits) noexcept { limits_ = limits; }
    const Limits& limits() const noexcept { return limits_; }
    int fd() const noexcept { return socket_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(socket_); }
    const std::string& peer() const noexcept { return peer_; }
    void close() noexcept { socket_.reset(); }

  private:
    UniqueFd socket_;
    std::string peer_;
    Limits limits_;
    std::uint16_t next_id_ = 1;
};

// Checks a received header against the limits (size, type, flags); throws naming the problem.
void validate_header(const Header& header, const Limits& limits);

// A listening AF_UNIX stream socket at `path` (a stale socket file is replaced; any other file is
// refused).
UniqueFd listen_at(const std::string& path);

}  // namespace ring3::vfio_user
