// libFuzzer target for the client side of vfio-user (src/vfio_user/protocol.cpp): the input is a
// byte stream as a server might send it. Each message is framed by a Channel and its payload
// decoded as the reply the client would take it for; every outcome is a decoded value that keeps
// its promises (areas inside the region, data as long as its count) or a ring3::Error that says
// why. Anything else (a crash, an out-of-bounds read under ASan) is a finding.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "ring3/core/error.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/vfio_user/protocol.hpp"

namespace {

using namespace ring3::vfio_user;

void decode(const Message& message, const Limits& limits) {
    const std::span<const std::byte> payload(message.payload);
    switch (message.command()) {
        case Command::version: {
            const Version v = decode_version(payload);
            if (v.limits.max_msg_fds == 0 || v.limits.max_data_xfer_size == 0) {
                std::abort();  // a zero limit must have been refused
            }
            break;
        }
        case Command::device_get_region_info: {
            const RegionInfoReply reply = decode_region_info(payload);
            for (const SparseArea& area : reply.sparse_areas) {
                if (area.size == 0 || area.offset > reply.info.size ||
                    area.size > reply.info.size - area.offset) {
                    std::abort();
                }
            }
            break;
        }
        case Command::region_read:
        case Command::region_write: {
            const RegionTransfer t = decode_region_access(
                payload, message.command() == Command::region_read, limits.max_data_xfer_size);
            if (message.command() == Command::region_read && t.data.size() != t.access.count) {
                std::abort();
            }
            break;
        }
        case Command::dma_read:
        case Command::dma_write: {
            const DmaTransfer t = decode_dma_access(
                payload, message.command() == Command::dma_write, limits.max_data_xfer_size);
            if (message.command() == Command::dma_write && t.data.size() != t.access.count) {
                std::abort();
            }
            break;
        }
        case Command::device_get_info:
            decode_fixed<DeviceInfo>(payload, "info");
            break;
        case Command::device_get_irq_info:
            decode_fixed<IrqInfo>(payload, "irq info");
            break;
        default:
            break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        std::abort();
    }
    ring3::UniqueFd writer(pair[1]);
    // The inputs are small (max_len) and fit in the socket buffer at once.
    if (size != 0 && ::write(writer.get(), data, size) != static_cast<ssize_t>(size)) {
        std::abort();
    }
    writer.reset();
    Limits limits;
    limits.max_data_xfer_size = 4096;
    Channel channel(ring3::UniqueFd(pair[0]), "fuzz", limits);
    for (int messages = 0; messages < 64; ++messages) {
        std::optional<Message> message;
        try {
            message = channel.receive();
        } catch (const ring3::Error& e) {
            if (e.reason().empty() && e.errnum() == 0) {
                std::abort();
            }
            break;  // the stream cannot be resynchronized after a bad frame
        }
        if (!message) {
            break;
        }
        try {
            decode(*message, limits);
        } catch (const ring3::Error& e) {
            if (e.reason().empty()) {
                std::abort();  // a refusal must say why
            }
        }
    }
    return 0;
}
