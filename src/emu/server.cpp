// emu::Server: the vfio-user message loop (QEMU docs/interop/vfio-user.rst, protocol 0.1). Every
// command is checked field by field before it touches the function: a malformed one gets an
// error reply carrying an errno (EINVAL, or the decoders' EPROTO/EMSGSIZE), an unknown one
// ENOSYS; a header that fails validation closes the connection.
#include "ring3/emu/server.hpp"

#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"

namespace ring3::emu {
namespace {

using vfio_user::Command;

// Every fixed-size request must be exactly its structure (and carry no fds unless it takes them).
template <class T>
T exact(const vfio_user::Message& m, const char* what) {
    if (m.payload.size() != sizeof(T)) {
        throw Error::invalid(
            what, "request",
            fmt::format("payload of {} bytes, expected {}", m.payload.size(), sizeof(T)));
    }
    auto value = vfio_user::decode_fixed<T>(m.payload, what);
    if (value.argsz < sizeof(T)) {
        throw Error::invalid(what, "request", fmt::format("argsz {} too small", value.argsz));
    }
    return value;
}

void no_fds(const vfio_user::Message& m, const char* what) {
    if (!m.fds.empty()) {
        throw Error::invalid(what, "request", fmt::format("{} unexpected fds", m.fds.size()));
    }
}

bool is_eventfd(int fd) {
    char link[64] = {};
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
    return n > 0 && std::strcmp(link, "anon_inode:[eventfd]") == 0;
}

}  // namespace

Server::Server(std::string path, PciFunction& function, Options options)
    : path_(std::move(path)), function_(function), options_(options), negotiated_(options.limits) {
    listener_ = vfio_user::listen_at(path_);
    stop_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd_) {
        throw Error::from_errno("create eventfd for server", path_);
    }
}

Server::~Server() {
    if (listener_) {
        ::unlink(path_.c_str());
    }
}

void Server::stop() noexcept {
    stopping_.store(true);
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
}

void Server::run() {
    while (!stopping_.load()) {
        pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw Error::from_errno("poll", path_);
        }
        if (stopping_.load()) {
            break;
        }
        if ((fds[0].revents & POLLIN) == 0) {
            continue;
        }
        UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!client) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) {
                continue;
            }
            throw Error::from_errno("accept on", path_);
        }
        serve_client(std::move(client));
        if (options_.once) {
            break;
        }
    }
}

void Server::serve_client(UniqueFd socket) {
    vfio_user::Channel channel(std::move(socket), path_, options_.limits);
    log_info("{}: client connected", path_);
    function_.take_disconnect_request();  // a request left from the previous client
    serve(channel);
    {
        auto lock = function_.lock();
        function_.detach_client();
    }
    ++clients_;
    log_info("{}: client gone; DMA mappings and eventfds dropped, device state kept", path_);
}

void Server::serve(vfio_user::Channel& channel) {
    versioned_ = false;
    negotiated_ = options_.limits;
    while (!stopping_.load()) {
        pollfd fds[3] = {{channel.fd(), POLLIN, 0},
                         {stop_fd_.get(), POLLIN, 0},
                         {function_.disconnect_fd(), POLLIN, 0}};
        if (::poll(fds, 3, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw Error::from_errno("poll", path_);
        }
        if (fds[2].revents != 0 && function_.take_disconnect_request()) {
            log_info("{}: the device model asked to drop the connection", path_);
            return;
        }
        if (fds[0].revents == 0) {
            continue;
        }
        try {
            std::optional<vfio_user::Message> message = channel.receive();
            if (!message || !dispatch(channel, *message)) {
                return;
            }
        } catch (const std::exception& e) {
            // A header that fails validation, too many fds, a connection closed mid-message:
            // the stream can no longer be trusted.
            log_warn("{}: closing the connection: {}", path_, e.what());
            return;
        }
    }
}

bool Server::dispatch(vfio_user::Channel& channel, vfio_user::Message& message) {
    if (message.is_reply()) {
        log_warn("{}: a reply from the client, which has no outstanding command", path_);
        return false;
    }
    vfio_user::Header reply;
    reply.msg_id = message.header.msg_id;
    reply.command = message.header.command;
    reply.flags = vfio_user::kTypeReply;
    std::vector<std::byte> payload;
    std::vector<int> fds;
    try {
        payload = handle(channel, message, fds);
    } catch (const Error& e) {
        log_debug("{}: {} refused: {}", path_, vfio_user::to_string(message.command()), e.what());
        reply.flags |= vfio_user::kFlagError;
        reply.error = static_cast<std::uint32_t>(e.errnum());
        payload.clear();
        fds.clear();
    }
    if (!message.wants_reply()) {
        return true;
    }
    try {
        channel.send(reply, payload, fds);
    } catch (const std::exception& e) {
        log_warn("{}: cannot reply: {}", path_, e.what());
        return false;
    }
    return true;
}

std::vector<std::byte> Server::handle(vfio_user::Channel& channel, vfio_user::Message& m,
                                      std::vector<int>& reply_fds) {
    const Command command = m.command();
    if (command == Command::version) {
        no_fds(m, "VERSION");
        const vfio_user::Version peer = vfio_user::decode_version(m.payload);
        const vfio_user::Limits& ours = options_.limits;
        negotiated_.max_msg_fds = std::min(ours.max_msg_fds, peer.limits.max_msg_fds);
        negotiated_.max_data_xfer_size =
            std::min(ours.max_data_xfer_size, peer.limits.max_data_xfer_size);
        negotiated_.max_dma_maps = std::min(ours.max_dma_maps, peer.limits.max_dma_maps);
        versioned_ = true;
        channel.set_limits(negotiated_);
        return vfio_user::encode_version(ours);
    }
    if (!versioned_) {
        throw Error::invalid(vfio_user::to_string(command), path_, "VERSION must come first");
    }
    auto lock = function_.lock();
    switch (command) {
        case Command::device_get_info: {
            no_fds(m, "DEVICE_GET_INFO");
            exact<vfio_user::DeviceInfo>(m, "DEVICE_GET_INFO");
            vfio_user::DeviceInfo info;
            info.argsz = sizeof info;
            info.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;
            info.num_regions = kRegionCount;
            info.num_irqs = kIrqCount;
            return vfio_user::encode(info);
        }
        case Command::device_get_region_info:
            no_fds(m, "DEVICE_GET_REGION_INFO");
            return region_info(exact<vfio_user::RegionInfoPayload>(m, "DEVICE_GET_REGION_INFO"),
                               reply_fds);
        case Command::device_get_irq_info: {
            no_fds(m, "DEVICE_GET_IRQ_INFO");
            const auto request = exact<vfio_user::IrqInfo>(m, "DEVICE_GET_IRQ_INFO");
            if (request.index >= kIrqCount) {
                throw Error::invalid("DEVICE_GET_IRQ_INFO", std::to_string(request.index),
                                     "no such IRQ index");
            }
            vfio_user::IrqInfo info;
            info.argsz = sizeof info;
            info.index = request.index;
            info.flags = VFIO_IRQ_INFO_EVENTFD;
            if (request.index == kMsixIrq) {
                info.flags |= VFIO_IRQ_INFO_NORESIZE;
                info.count = function_.config().msix_vectors();
            }
            return vfio_user::encode(info);
        }
        case Command::device_set_irqs:
            set_irqs(m);
            return {};
        case Command::region_read:
        case Command::region_write:
            return region_access(m);
        case Command::dma_map: {
            const auto map = exact<vfio_user::DmaMap>(m, "DMA_MAP");
            if (m.fds.size() != 1) {
                // Memory without an fd would need DMA_READ/DMA_WRITE round trips: not offered.
                throw Error::invalid("DMA_MAP", "request",
                                     fmt::format("{} fds: exactly one is needed", m.fds.size()),
                                     m.fds.empty() ? ENOTSUP : EINVAL);
            }
            function_.map_dma(map.addr, map.size, map.offset, map.flags, std::move(m.fds[0]),
                              options_.limits.max_dma_maps);
            return {};
        }
        case Command::dma_unmap: {
            no_fds(m, "DMA_UNMAP");
            const auto unmap = exact<vfio_user::DmaUnmap>(m, "DMA_UNMAP");
            if (unmap.flags != 0) {
                throw Error::invalid(
                    "DMA_UNMAP", "request",
                    fmt::format("flags {:#x} (dirty bitmaps) not supported", unmap.flags));
            }
            function_.unmap_dma(unmap.addr, unmap.size);
            return vfio_user::encode(unmap);
        }
        case Command::device_reset:
            no_fds(m, "DEVICE_RESET");
            if (!m.payload.empty()) {
                throw Error::invalid("DEVICE_RESET", "request", "carries a payload");
            }
            function_.reset_device();
            return {};
        default:
            // REGION_IO_FDS, WRITE_MULTI, DEVICE_FEATURE, migration, DMA_READ/WRITE from a
            // client: answered ENOSYS, as the protocol lets a server do for what it lacks.
            throw Error::invalid(vfio_user::to_string(command), path_,
                                 "this server does not support the command", ENOSYS);
    }
}

std::vector<std::byte> Server::region_info(const vfio_user::RegionInfoPayload& request,
                                           std::vector<int>& reply_fds) {
    if (request.index >= kRegionCount) {
        throw Error::invalid("DEVICE_GET_REGION_INFO", std::to_string(request.index),
                             "no such region");
    }
    vfio_user::RegionInfoPayload info;
    info.index = request.index;
    info.size = function_.region_size(request.index);
    if (info.size != 0) {
        info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    }
    std::vector<vfio_user::SparseArea> areas;
    if (request.index < kBarCount) {
        const PciFunction::Bar& bar = function_.bar(request.index);
        for (const PciFunction::MemoryArea& area : bar.areas) {
            if (area.mmap_able) {
                areas.push_back({area.offset, area.size});
            }
        }
        if (!areas.empty()) {
            // The spec's sparse mmap: the client maps these parts of the region from the fd at
            // `offset` + area offset, and traps the rest into REGION_READ/WRITE.
            info.flags |= VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS;
            info.offset = bar.fd_offset;
            reply_fds.push_back(function_.memory_fd());
        }
    }
    const std::size_t needed =
        sizeof info + (areas.empty() ? 0
                                     : sizeof(vfio_user::SparseMmapCapability) +
                                           areas.size() * sizeof(vfio_user::SparseArea));
    info.argsz = static_cast<std::uint32_t>(needed);
    if (request.argsz < needed) {
        // VFIO's convention: too small a buffer gets the size it needs and no capabilities.
        info.cap_offset = 0;
        return vfio_user::encode(info);
    }
    info.cap_offset = areas.empty() ? 0 : static_cast<std::uint32_t>(sizeof info);
    return vfio_user::encode_region_info(info, areas);
}

std::vector<std::byte> Server::region_access(vfio_user::Message& m) {
    const bool write = m.command() == Command::region_write;
    const char* what = write ? "REGION_WRITE" : "REGION_READ";
    no_fds(m, what);
    const vfio_user::RegionTransfer transfer =
        vfio_user::decode_region_access(m.payload, write, negotiated_.max_data_xfer_size);
    const vfio_user::RegionAccess& access = transfer.access;
    const std::uint64_t size =
        access.region < kRegionCount ? function_.region_size(access.region) : 0;
    if (size == 0) {
        throw Error::invalid(what, std::to_string(access.region), "no such region");
    }
    if (access.count == 0 || access.count > negotiated_.max_data_xfer_size ||
        access.offset >= size || access.count > size - access.offset) {
        throw Error::invalid(what, fmt::format("region {}", access.region),
                             fmt::format("{} bytes at {:#x} outside its {:#x} bytes", access.count,
                                         access.offset, size));
    }
    log_debug("{}: {} region {} offset {:#x} count {}", path_, what, access.region, access.offset,
              access.count);
    if (write) {
        if (transfer.data.size() != access.count) {
            throw Error::invalid(what, "request", "data length differs from count");
        }
        function_.region_write(access.region, access.offset, transfer.data);
        return vfio_user::encode(access);
    }
    std::vector<std::byte> data(access.count);
    function_.region_read(access.region, access.offset, data);
    return vfio_user::encode(access, data);
}

void Server::set_irqs(vfio_user::Message& m) {
    if (m.payload.size() < sizeof(vfio_user::IrqSet)) {
        vfio_user::throw_short_payload("DEVICE_SET_IRQS", m.payload.size(),
                                       sizeof(vfio_user::IrqSet));
    }
    const auto set = vfio_user::decode_fixed<vfio_user::IrqSet>(m.payload, "DEVICE_SET_IRQS");
    const std::uint32_t data = set.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    const std::uint32_t action = set.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    const auto fail = [&set](const std::string& why) {
        return Error::invalid("DEVICE_SET_IRQS", fmt::format("index {}", set.index), why);
    };
    if (m.payload.size() != sizeof(vfio_user::IrqSet) || set.argsz < sizeof(vfio_user::IrqSet)) {
        throw fail("payload or argsz of the wrong size (DATA_BOOL is not supported)");
    }
    if ((set.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)) != 0 ||
        (data != VFIO_IRQ_SET_DATA_NONE && data != VFIO_IRQ_SET_DATA_EVENTFD) ||
        action != VFIO_IRQ_SET_ACTION_TRIGGER) {
        throw fail(fmt::format("flags {:#x}: only DATA_NONE or DATA_EVENTFD with ACTION_TRIGGER",
                               set.flags));
    }
    if (set.index >= kIrqCount) {
        throw fail("no such IRQ index");
    }
    const std::uint64_t vectors = set.index == kMsixIrq ? function_.config().msix_vectors() : 0;
    if (data == VFIO_IRQ_SET_DATA_NONE) {
        no_fds(m, "DEVICE_SET_IRQS");
        if (set.count == 0) {
            if (set.index == kMsixIrq) {
                function_.clear_msix_eventfds();  // VFIO: DATA_NONE, count 0 disables
            }
            return;
        }
        if (std::uint64_t{set.start} + set.count > vectors) {
            throw fail("vectors out of range");
        }
        for (std::uint32_t v = set.start; v < set.start + set.count; ++v) {
            function_.raise_msix(v);  // a software trigger
        }
        return;
    }
    if (set.count == 0 || std::uint64_t{set.start} + set.count > vectors) {
        throw fail(
            fmt::format("vectors {}+{} outside the {} there are", set.start, set.count, vectors));
    }
    if (m.fds.size() != set.count) {
        throw fail(fmt::format("{} fds for {} vectors", m.fds.size(), set.count));
    }
    for (const UniqueFd& fd : m.fds) {
        if (!is_eventfd(fd.get())) {
            throw fail("an fd that is not an eventfd");
        }
    }
    function_.set_msix_eventfds(set.start, std::move(m.fds));
}

}  // namespace ring3::emu
