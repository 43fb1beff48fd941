// NetPort over a Linux TAP device (tap_port.hpp). Interfaces used: linux/if_tun.h (TUNSETIFF with
// IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE; the kernel's Documentation/networking/tuntap.rst) and the
// SIOCGIF* ioctls of netdevice(7) on an ordinary socket.
#include "ring3/net/tap_port.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/dma/arena.hpp"

namespace ring3::net {
namespace {

constexpr unsigned kDefaultDepth = 256;
constexpr unsigned kMaxDepth = 4096;
constexpr std::chrono::microseconds kAdaptiveSpin{50};
constexpr std::uint32_t kEthernetHeaderBytes = 14;
constexpr std::uint32_t kVlanTagBytes = 4;

// What a TAP "device" sees of the arena: it never does DMA (the kernel copies in read() and
// write()), so its addresses are the CPU's own.
class CpuAddressSpace final : public dma::IovaSpace {
  public:
    std::size_t granule() const noexcept override { return kAnyGranule; }
    void map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) override {
        const std::size_t step = chunk.size / iovas.size();
        for (std::size_t i = 0; i < iovas.size(); ++i) {
            iovas[i] = reinterpret_cast<std::uintptr_t>(chunk.cpu + i * step);
        }
    }
    void unmap(const dma::ChunkView&, std::span<const std::uint64_t>) noexcept override {}
    std::string name() const override { return "CPU addresses (TAP)"; }
};

void check_name(std::string_view name) {
    const auto bad = [&](const char* reason) {
        return Error::invalid("open TAP", fmt::format("tap:{}", name), reason);
    };
    if (name.empty()) {
        throw bad("no interface name (tap:NAME)");
    }
    if (name.size() >= IFNAMSIZ) {
        throw bad("an interface name has at most 15 characters");
    }
    if (name == "." || name == ".." || name.find_first_of("/: \t\n") != std::string_view::npos) {
        throw bad("not an interface name (no '/', ':' or white space; not . or ..)");
    }
}

ifreq request_for(const std::string& name) {
    ifreq request{};
    std::memcpy(request.ifr_name, name.data(), name.size());
    return request;
}

// An ordinary socket for the SIOCGIF* ioctls (any family will do; netdevice(7)).
UniqueFd control_socket(const std::string& object) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw Error::from_errno("open a socket to query", object);
    }
    return UniqueFd(fd);
}

void interface_ioctl(int socket_fd, unsigned long request, ifreq& data, const char* what,
                     const std::string& object) {
    if (::ioctl(socket_fd, request, &data) != 0) {
        throw Error::from_errno(what, object);
    }
}

class TapPort;

class TapQueue final : public Queue {
  public:
    TapQueue(TapPort& port, unsigned index, UniqueFd fd, unsigned depth, irq::WaitMode mode,
             dma::BufferPool& pool, std::unique_ptr<dma::BufferPool> own_pool)
        : port_(port),
          index_(index),
          fd_(std::move(fd)),
          depth_(depth),
          mode_(mode),
          pool_(pool),
          own_pool_(std::move(own_pool)) {}

    unsigned rx_burst(Packet* packets, unsigned n) noexcept override;
    unsigned tx_burst(Packet* packets, unsigned n) noexcept override;
    unsigned reclaim() noexcept override { return 0; }  // tx_burst() gives each buffer back
    unsigned tx_pending() const noexcept override { return 0; }
    unsigned wait(unsigned events, std::chrono::microseconds timeout) override;
    QueueStats stats() const noexcept override { return stats_; }
    int failure() const noexcept override { return failure_; }
    unsigned index() const noexcept override { return index_; }
    unsigned depth() const noexcept override { return depth_; }
    irq::WaitMode mode() const noexcept override { return mode_; }
    dma::BufferPool& pool() noexcept override { return pool_; }
    std::uint16_t headroom() const noexcept override { return 0; }

  private:
    bool owns(const dma::Buffer& buffer) const noexcept {
        return buffer.index < pool_.capacity() && pool_.buffer(buffer.index).data == buffer.data;
    }
    // Errors that mean the fd is no use any more (the interface was deleted, the fd detached).
    void note_error(int error) noexcept {
        if (error == EBADFD || error == EBADF || error == ENODEV || error == ENXIO) {
            failure_ = error;
        }
    }
    unsigned poll_once(short events, const timespec* timeout);

    TapPort& port_;
    unsigned index_;
    UniqueFd fd_;
    unsigned depth_;
    irq::WaitMode mode_;
    dma::BufferPool& pool_;
    std::unique_ptr<dma::BufferPool> own_pool_;
    QueueStats stats_;
    int failure_ = 0;
};

class TapPort final : public NetPort {
  public:
    TapPort(std::string name, const TapOptions& options);

    std::string name() const override { return "tap:" + name_; }
    PortInfo info() const override { return info_; }
    LinkStatus link() const override;
    Queue& open_queue(unsigned index, unsigned depth, irq::WaitMode mode,
                      dma::BufferPool* pool) override;
    dma::DmaPool& dma_pool() override { return *dma_pool_; }

    std::uint32_t max_frame() const noexcept { return info_.max_frame; }

  private:
    UniqueFd attach_queue(bool multi_queue);

    // Destroyed bottom up: the queues (and their pools) before the DmaPool, the arena before
    // the space it is attached to.
    CpuAddressSpace space_;
    std::unique_ptr<dma::DmaArena> arena_;
    std::unique_ptr<dma::DmaPool> dma_pool_;
    std::string name_;
    TapOptions options_;
    PortInfo info_;
    std::vector<UniqueFd> fds_;  // one per queue pair until open_queue() takes it
    std::vector<std::unique_ptr<TapQueue>> queues_;
};

// ---- TapQueue ---------------------------------------------------------------------------------

unsigned TapQueue::rx_burst(Packet* packets, unsigned n) noexcept {
    if (failure_ != 0) {
        return 0;
    }
    const auto capacity = static_cast<std::size_t>(pool_.buffer_size());
    unsigned received = 0;
    while (received < n) {
        dma::Buffer buffer;
        if (!pool_.get(buffer)) {
            break;  // the caller holds every buffer
        }
        const ssize_t r = ::read(fd_.get(), buffer.data, capacity);
        if (r > 0) {
            Packet& p = packets[received++];
            p.buffer = buffer;
            p.offset = 0;
            p.flags = kNoFlags;
            p.length = static_cast<std::uint32_t>(r);
            ++stats_.rx_packets;
            stats_.rx_bytes += static_cast<std::uint64_t>(r);
            continue;
        }
        const int error = r < 0 ? errno : EIO;
        pool_.put(buffer);
        if (error == EINTR) {
            continue;
        }
        if (error != EAGAIN) {
            ++stats_.rx_errors;
            note_error(error);
        }
        break;
    }
    return received;
}

unsigned TapQueue::tx_burst(Packet* packets, unsigned n) noexcept {
    if (failure_ != 0) {
        return 0;
    }
    const std::uint32_t max_frame = port_.max_frame();
    unsigned accepted = 0;
    for (; accepted < n; ++accepted) {
        const Packet& p = packets[accepted];
        if (!owns(p.buffer) || p.length < kEthernetHeaderBytes || p.length > max_frame ||
            std::size_t{p.offset} + p.length > pool_.buffer_size()) {
            // Never sendable: accepted and dropped (net_port.hpp's convention). A buffer not
            // from this pool is not ours to give back.
            ++stats_.tx_errors;
            if (owns(p.buffer)) {
                pool_.put(p.buffer);
            }
            continue;
        }
        ssize_t w = ::write(fd_.get(), p.data(), p.length);
        if (w < 0 && errno == EINTR) {
            w = ::write(fd_.get(), p.data(), p.length);
        }
        if (w < 0 && errno == EAGAIN) {
            break;  // no room: this packet and the rest stay the caller's
        }
        if (w == static_cast<ssize_t>(p.length)) {
            ++stats_.tx_packets;
            stats_.tx_bytes += p.length;
        } else {
            ++stats_.tx_errors;
            note_error(w < 0 ? errno : EIO);
        }
        pool_.put(p.buffer);
    }
    return accepted;
}

// One ppoll(2) of at most `timeout`; returns the ready bits.
unsigned TapQueue::poll_once(short events, const timespec* timeout) {
    pollfd pfd{fd_.get(), events, 0};
    const int rc = ::ppoll(&pfd, 1, timeout, nullptr);
    if (rc < 0) {
        if (errno == EINTR) {
            return kReadyNone;
        }
        failure_ = errno;
        throw Error::from_errno("poll", port_.name());
    }
    if (rc == 0) {
        return kReadyNone;
    }
    if ((pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
        failure_ = EIO;
        throw Error::invalid("poll", port_.name(), "the TAP fd reports an error (deleted?)", EIO);
    }
    unsigned ready = kReadyNone;
    if ((pfd.revents & POLLIN) != 0) {
        ready |= kReadyRx;
    }
    if ((pfd.revents & POLLOUT) != 0) {
        ready |= kReadyTx;
    }
    return ready;
}

unsigned TapQueue::wait(unsigned events, std::chrono::microseconds timeout) {
    short want = 0;
    if ((events & kReadyRx) != 0) {
        want = static_cast<short>(want | POLLIN);
    }
    if ((events & kReadyTx) != 0) {
        want = static_cast<short>(want | POLLOUT);
    }
    if (want == 0 || failure_ != 0) {
        return kReadyNone;
    }
    const auto start = CycleClock::now();
    const auto deadline = start + timeout;
    constexpr timespec kNoWait{0, 0};
    if (mode_ != irq::WaitMode::interrupt) {
        // poll: spin on a zero-timeout ppoll; adaptive: the same for a while, then sleep.
        const auto spin_until =
            mode_ == irq::WaitMode::poll ? deadline : std::min(deadline, start + kAdaptiveSpin);
        do {
            if (const unsigned ready = poll_once(want, &kNoWait); ready != kReadyNone) {
                return ready;
            }
        } while (CycleClock::now() < spin_until);
        if (mode_ == irq::WaitMode::poll) {
            return kReadyNone;
        }
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::microseconds>(deadline - CycleClock::now());
    if (left.count() <= 0) {
        return kReadyNone;
    }
    const timespec ts{static_cast<time_t>(left.count() / 1000000),
                      static_cast<long>((left.count() % 1000000) * 1000)};
    return poll_once(want, &ts);
}

// ---- TapPort ----------------------------------------------------------------------------------

UniqueFd TapPort::attach_queue(bool multi_queue) {
    const std::string object = "tap:" + name_;
    UniqueFd fd = UniqueFd::open(options_.tun_path, O_RDWR | O_NONBLOCK);
    ifreq request = request_for(name_);
    request.ifr_flags =
        static_cast<short>(IFF_TAP | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0));
    if (::ioctl(fd.get(), TUNSETIFF, &request) != 0) {
        const int error = errno;
        if (error == EPERM) {
            throw Error("attach to", object, error,
                        "permission denied: creating a TAP needs CAP_NET_ADMIN; or make a "
                        "persistent one owned by your user (ip tuntap add NAME mode tap user "
                        "USER)");
        }
        if (error == EINVAL) {
            throw Error("attach to", object, error,
                        multi_queue
                            ? "refused: an interface of that name exists and is not a "
                              "multi-queue TAP (recreate it with ip tuntap add NAME mode tap "
                              "multi_queue, or use --queues 1)"
                            : "refused: an interface of that name exists and is not a "
                              "single-queue TAP");
        }
        if (error == EBUSY) {
            throw Error("attach to", object, error,
                        "busy: another process has the TAP open (a single-queue TAP takes one)");
        }
        throw Error("attach to", object, error);
    }
    return fd;
}

TapPort::TapPort(std::string name, const TapOptions& options)
    : name_(std::move(name)), options_(options) {
    const std::string object = "tap:" + name_;
    if (options.queues == 0) {
        throw Error::invalid("open TAP", object, "at least one queue pair");
    }
    for (unsigned i = 0; i < options.queues; ++i) {
        fds_.push_back(attach_queue(options.queues > 1));
    }
    queues_.resize(options.queues);

    const UniqueFd socket_fd = control_socket(object);
    ifreq request = request_for(name_);
    interface_ioctl(socket_fd.get(), SIOCGIFHWADDR, request, "read the MAC address of", object);
    std::memcpy(info_.mac.bytes.data(), request.ifr_hwaddr.sa_data, 6);
    request = request_for(name_);
    interface_ioctl(socket_fd.get(), SIOCGIFMTU, request, "read the MTU of", object);
    info_.mtu = static_cast<std::uint32_t>(request.ifr_mtu);
    info_.max_frame = info_.mtu + kEthernetHeaderBytes;
    info_.queue_pairs = options.queues;
    info_.max_queue_depth = kMaxDepth;
    // Room for a VLAN tag too (a frame from a VLAN interface on top), in whole cache lines.
    info_.buffer_size =
        std::max<std::uint32_t>(2048, (info_.max_frame + kVlanTagBytes + 63) / 64 * 64);
    info_.headroom = 0;
    info_.offloads = 0;

    dma::ArenaOptions arena_options;
    arena_options.huge_pages = dma::HugePages::never;
    arena_options.name = "ring3-" + object;
    arena_ = dma::DmaArena::create(arena_options);
    arena_->attach(space_);
    dma_pool_ = std::make_unique<dma::DmaPool>(*arena_);
}

LinkStatus TapPort::link() const {
    const std::string object = name();
    const UniqueFd socket_fd = control_socket(object);
    ifreq request = request_for(name_);
    interface_ioctl(socket_fd.get(), SIOCGIFFLAGS, request, "read the flags of", object);
    LinkStatus status;
    // Up: configured up by someone (IFF_UP). A TAP has carrier while a queue is attached, which
    // this port's are; IFF_RUNNING is no use here, as it follows the operational state, which
    // the kernel's link watch updates up to a second after the carrier changes.
    status.up = (request.ifr_flags & IFF_UP) != 0;
    return status;
}

Queue& TapPort::open_queue(unsigned index, unsigned depth, irq::WaitMode mode,
                           dma::BufferPool* pool) {
    if (index >= queues_.size()) {
        throw Error::invalid("open queue", fmt::format("{} queue {}", name(), index),
                             fmt::format("the port has {} queue pair(s)", queues_.size()));
    }
    if (queues_[index]) {
        return *queues_[index];
    }
    if (depth > kMaxDepth) {
        throw Error::invalid("open queue", fmt::format("{} queue {}", name(), index),
                             fmt::format("depth {} is above {}", depth, kMaxDepth));
    }
    depth = depth == 0 ? kDefaultDepth : depth;
    std::unique_ptr<dma::BufferPool> own;
    if (pool == nullptr) {
        own = std::make_unique<dma::BufferPool>(*dma_pool_, info_.buffer_size,
                                                own_pool_buffers(depth));
        pool = own.get();
    } else if (pool->buffer_size() < std::size_t{info_.headroom} + info_.max_frame) {
        throw Error::invalid("open queue", fmt::format("{} queue {}", name(), index),
                             fmt::format("the pool's buffers of {} bytes are smaller than a "
                                         "{}-byte frame",
                                         pool->buffer_size(), info_.max_frame));
    }
    queues_[index] = std::make_unique<TapQueue>(*this, index, std::move(fds_[index]), depth, mode,
                                                *pool, std::move(own));
    return *queues_[index];
}

}  // namespace

std::unique_ptr<NetPort> open_tap_port(std::string_view name, const TapOptions& options) {
    check_name(name);
    return std::make_unique<TapPort>(std::string(name), options);
}

}  // namespace ring3::net
