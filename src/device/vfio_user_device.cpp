// The vfio-user client backend (QEMU docs/interop/vfio-user.rst, "Client" side of each command).
// Messages are the slow path (trapped registers, set-up); a driver's hot path touches only mapped
// areas and DMA memory.
#include "ring3/device/vfio_user.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/pci/bar.hpp"
#include "ring3/pci/config_space.hpp"
#include "ring3/vfio_user/protocol.hpp"

namespace ring3::vfio_user {
namespace {

struct RegionEntry {
    bool known = false;
    RegionInfo info;
    std::uint64_t fd_offset = 0;  // where the region starts in `fd`
    UniqueFd fd;                  // for mmap; absent when the server gave none
};

// A mapping handed to a driver, remembered so that a reconnect can put the new server's pages at
// the same addresses. `alive` is the token the RegionMapping holds: when the driver drops the
// mapping, the token dies and the entry is skipped.
struct LiveMapping {
    std::weak_ptr<void> alive;
    std::byte* base = nullptr;
    unsigned index = 0;
    int prot = 0;
};

// The chunks of DMA memory given to the server, to give again after a reconnect.
struct DmaChunk {
    dma::ChunkView view;
    std::uint64_t iova = 0;
};

class VfioUserDevice final : public Device, public dma::IovaSpace {
  public:
    VfioUserDevice(std::string path, const ClientOptions& options)
        : path_(std::move(path)), options_(options) {
        attach();
    }

    ~VfioUserDevice() override = default;
    VfioUserDevice(const VfioUserDevice&) = delete;
    VfioUserDevice& operator=(const VfioUserDevice&) = delete;

    std::string name() const override { return "vfio-user:" + path_; }
    std::optional<pci::Address> address() const override { return std::nullopt; }

    void read_config(std::uint32_t offset, std::span<std::byte> out) override {
        region_read(kRegionConfig, offset, out);
    }
    void write_config(std::uint32_t offset, std::span<const std::byte> in) override {
        region_write(kRegionConfig, offset, in);
    }

    RegionInfo region_info(unsigned index) override { return entry(index).info; }

    RegionMapping map_region(unsigned index, MapMode mode) override {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        const RegionEntry& region = entry(index);
        const std::string what = fmt::format("{} region {}", name(), index);
        if (region.info.size == 0) {
            throw Error::invalid("map", what, "the region does not exist (unused BAR)", ENOENT);
        }
        if (!region.info.mappable) {
            throw Error::invalid("map", what,
                                 "the server does not let this region be mapped; use "
                                 "region_read/write",
                                 ENOTSUP);
        }
        if (mode == MapMode::write_combining) {
            log_debug("{}: a vfio-user region is ordinary shared memory; mapping it as is", what);
        }
        const int prot = PROT_READ | (region.info.writable ? PROT_WRITE : 0);
        // Reserve the region's span inaccessible and map the areas at their places, so offsets
        // stay region offsets and a stray access to a trapped part faults.
        void* raw = ::mmap(nullptr, region.info.size, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (raw == MAP_FAILED) {
            throw Error::from_errno("reserve address space for", what);
        }
        Mapping whole(raw, region.info.size);
        map_areas(region, whole.data(), prot, what);
        auto token = std::make_shared<int>(0);
        live_.push_back(LiveMapping{token, whole.data(), index, prot});
        return RegionMapping{std::move(whole), 0, std::move(token)};
    }

    void region_read(unsigned index, std::uint64_t offset, std::span<std::byte> out) override {
        check_range(index, offset, out.size(), false);
        const std::uint64_t step = channel_.limits().max_data_xfer_size;
        for (std::size_t done = 0; done < out.size();) {
            const auto count =
                static_cast<std::uint32_t>(std::min<std::uint64_t>(out.size() - done, step));
            const RegionAccess access{offset + done, index, count};
            const Message reply = call(Command::region_read, encode(access));
            const RegionTransfer transfer = decode_region_access(reply.payload, true, count);
            if (transfer.access.count != count || transfer.access.offset != access.offset ||
                transfer.access.region != index) {
                throw Error::invalid("read", describe(index, offset, out.size()),
                                     fmt::format("the server answered for region {} offset {:#x} "
                                                 "count {}",
                                                 transfer.access.region, transfer.access.offset,
                                                 transfer.access.count),
                                     EPROTO);
            }
            std::memcpy(out.data() + done, transfer.data.data(), count);
            done += count;
        }
    }

    void region_write(unsigned index, std::uint64_t offset,
                      std::span<const std::byte> in) override {
        check_range(index, offset, in.size(), true);
        const std::uint64_t step = channel_.limits().max_data_xfer_size;
        for (std::size_t done = 0; done < in.size();) {
            const auto count =
                static_cast<std::uint32_t>(std::min<std::uint64_t>(in.size() - done, step));
            const RegionAccess access{offset + done, index, count};
            call(Command::region_write, encode(access, in.subspan(done, count)));
            done += count;
        }
    }

    unsigned irq_count(IrqKind kind) override {
        const auto index = static_cast<std::uint32_t>(kind);
        if (index >= num_irqs_) {
            return 0;
        }
        const IrqInfo request{sizeof(IrqInfo), 0, index, 0};
        const Message reply = call(Command::device_get_irq_info, encode(request));
        const auto info = decode_fixed<IrqInfo>(reply.payload, "DEVICE_GET_IRQ_INFO reply");
        if (info.index != index) {
            throw Error::invalid(fmt::format("DEVICE_GET_IRQ_INFO {}", to_string(kind)), name(),
                                 fmt::format("the reply is for index {}", info.index), EPROTO);
        }
        return (info.flags & VFIO_IRQ_INFO_EVENTFD) != 0 ? std::min(info.count, 2048u) : 0;
    }

    std::vector<irq::Interrupt> enable_irqs(IrqKind kind, unsigned count) override {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        const unsigned available = irq_count(kind);
        if (count == 0 || count > available) {
            throw Error::invalid(fmt::format("enable {} {} vectors", count, to_string(kind)),
                                 name(), fmt::format("the device offers {}", available));
        }
        std::vector<irq::Interrupt> interrupts;
        std::vector<UniqueFd> kept;
        interrupts.reserve(count);
        for (unsigned i = 0; i < count; ++i) {
            interrupts.push_back(
                irq::Interrupt::make_eventfd(fmt::format("{} {}[{}]", name(), to_string(kind), i)));
            kept.emplace_back(::fcntl(interrupts.back().fd(), F_DUPFD_CLOEXEC, 0));
            if (!kept.back()) {
                throw Error::from_errno("duplicate an eventfd of", name());
            }
        }
        disable_irqs(kind);
        enabled_[static_cast<unsigned>(kind)] = std::move(kept);
        send_irqs(kind);
        return interrupts;
    }

    void disable_irqs(IrqKind kind) override {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        auto& fds = enabled_[static_cast<unsigned>(kind)];
        if (fds.empty()) {
            return;
        }
        fds.clear();
        const IrqSet set{sizeof(IrqSet), VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                         static_cast<std::uint32_t>(kind), 0, 0};
        call(Command::device_set_irqs, encode(set));
    }

    void unmask_intx() override {
        const IrqSet set{sizeof(IrqSet), VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
                         VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
        call(Command::device_set_irqs, encode(set));
    }

    dma::IovaSpace& iova_space() override { return *this; }

    // IovaSpace: a chunk's IOVA is its own virtual address (unique in this process, and aligned as
    // the chunk is), so nothing needs allocating.
    std::size_t granule() const noexcept override { return kAnyGranule; }
    void map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) override {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        const auto iova = reinterpret_cast<std::uint64_t>(chunk.cpu);
        dma_map(chunk, iova);
        chunks_.push_back(DmaChunk{chunk, iova});
        std::fill(iovas.begin(), iovas.end(), iova);
    }
    void unmap(const dma::ChunkView& chunk, std::span<const std::uint64_t>) noexcept override {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        const auto iova = reinterpret_cast<std::uint64_t>(chunk.cpu);
        std::erase_if(chunks_, [&](const DmaChunk& c) { return c.iova == iova; });
        if (!channel_ || lost_) {
            return;  // the server dropped the mappings when the connection went
        }
        try {
            const DmaUnmap request{sizeof(DmaUnmap), 0, iova, chunk.size};
            channel_.call(Command::dma_unmap, encode(request));
        } catch (const Error& e) {
            log_debug("{}: DMA_UNMAP {:#x}: {}", name(), iova, e.what());
        }
    }

    std::optional<std::string> lost() override {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        if (!lost_ && channel_) {
            // A closed peer reads as end of file (a byte waiting is a message, not a close).
            pollfd p{channel_.fd(), POLLIN | POLLRDHUP, 0};
            if (::poll(&p, 1, 0) > 0) {
                char byte = 0;
                const ssize_t n = ::recv(channel_.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    mark_lost("the server closed the connection");
                }
            }
        }
        if (lost_ && options_.reconnect) {
            try {
                reattach();
            } catch (const Error& e) {
                log_debug("{}: reconnect: {}", name(), e.what());
            }
        }
        return lost_;
    }

    std::uint64_t incarnation() override { return reconnects_; }

    bool can_reset() override { return (flags_ & VFIO_DEVICE_FLAGS_RESET) != 0; }

    void reset() override {
        if (!can_reset()) {
            throw Error::invalid("reset", name(), "the server offers no device reset", ENOTTY);
        }
        call(Command::device_reset, {});
    }

  private:
    // Connects, negotiates the version and reads the device's shape.
    void attach() {
        channel_ = Channel::connect(path_);
        const Message reply = channel_.call(Command::version, encode_version(Limits{}));
        const Version version = decode_version(reply.payload);
        Limits limits;
        limits.max_msg_fds = std::min(limits.max_msg_fds, version.limits.max_msg_fds);
        limits.max_data_xfer_size =
            std::min(limits.max_data_xfer_size, version.limits.max_data_xfer_size);
        limits.max_dma_maps = std::min(limits.max_dma_maps, version.limits.max_dma_maps);
        channel_.set_limits(limits);

        const DeviceInfo request{sizeof(DeviceInfo), 0, 0, 0};
        const auto info = decode_fixed<DeviceInfo>(
            channel_.call(Command::device_get_info, encode(request)).payload,
            "DEVICE_GET_INFO reply");
        if ((info.flags & VFIO_DEVICE_FLAGS_PCI) == 0) {
            throw Error::invalid("open", name(), "the server's device is not a PCI device", ENODEV);
        }
        if (info.num_regions <= kRegionConfig || info.num_regions > 64 || info.num_irqs > 64) {
            throw Error::invalid("open", name(),
                                 fmt::format("the server reports {} regions and {} interrupt "
                                             "kinds; a PCI device has 8..64 and at most 64",
                                             info.num_regions, info.num_irqs),
                                 EPROTO);
        }
        flags_ = info.flags;
        num_irqs_ = info.num_irqs;
        regions_.clear();
        regions_.resize(info.num_regions);
        lost_.reset();
    }

    // After a server restart: the same device again, with our memory, interrupts and mappings.
    void reattach() {
        const auto deadline = std::chrono::steady_clock::now() + options_.reconnect_timeout;
        for (;;) {
            try {
                attach();
                break;
            } catch (const Error& e) {
                if (std::chrono::steady_clock::now() >= deadline) {
                    throw;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
        }
        for (const DmaChunk& chunk : chunks_) {
            dma_map(chunk.view, chunk.iova);
        }
        for (unsigned kind = 0; kind < std::size(enabled_); ++kind) {
            if (!enabled_[kind].empty()) {
                send_irqs(static_cast<IrqKind>(kind));
            }
        }
        std::erase_if(live_, [](const LiveMapping& m) { return m.alive.expired(); });
        for (const LiveMapping& live : live_) {
            const RegionEntry& region = entry(live.index);
            map_areas(region, live.base, live.prot,
                      fmt::format("{} region {}", name(), live.index));
        }
        ++reconnects_;
        log_info("{}: re-attached to a restarted server ({} time(s))", name(), reconnects_);
    }

    void mark_lost(std::string why) {
        if (!lost_) {
            lost_ = fmt::format("vfio-user server at {}: {}", path_, why);
        }
        channel_.close();
    }

    // One request; a failing connection marks the device lost and, with reconnect, is retried
    // once on a restarted server.
    Message call(Command command, std::span<const std::byte> payload,
                 std::span<const int> fds = {}) {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        if (lost_ && options_.reconnect) {
            reattach();
        }
        if (!channel_) {
            throw Error::invalid(to_string(command), name(),
                                 lost_.value_or("the connection is closed"), ENOTCONN);
        }
        try {
            return channel_.call(command, payload, fds);
        } catch (const Error& e) {
            const int err = e.errnum();
            if (err != ECONNRESET && err != EPIPE && err != ENOTCONN) {
                throw;
            }
            mark_lost(e.what());
            if (!options_.reconnect) {
                throw;
            }
        }
        reattach();
        return channel_.call(command, payload, fds);
    }

    void dma_map(const dma::ChunkView& chunk, std::uint64_t iova) {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        const DmaMap request{sizeof(DmaMap), kDmaRead | kDmaWrite, chunk.memfd_offset, iova,
                             chunk.size};
        const int fd = chunk.memfd;
        channel_.call(Command::dma_map, encode(request), std::span<const int>(&fd, 1));
    }

    void send_irqs(IrqKind kind) {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        const auto& fds = enabled_[static_cast<unsigned>(kind)];
        // At most max_msg_fds eventfds ride in one message: install them in batches.
        const std::size_t batch = channel_.limits().max_msg_fds;
        for (std::size_t start = 0; start < fds.size(); start += batch) {
            const std::size_t n = std::min(batch, fds.size() - start);
            std::vector<int> raw;
            for (std::size_t i = 0; i < n; ++i) {
                raw.push_back(fds[start + i].get());
            }
            const IrqSet set{sizeof(IrqSet),
                             VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                             static_cast<std::uint32_t>(kind), static_cast<std::uint32_t>(start),
                             static_cast<std::uint32_t>(n)};
            channel_.call(Command::device_set_irqs, encode(set), raw);
        }
    }

    void map_areas(const RegionEntry& region, std::byte* base, int prot, const std::string& what) {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> areas = region.info.sparse_areas;
        if (areas.empty()) {
            areas.emplace_back(0, region.info.size);
        }
        for (const auto& [offset, size] : areas) {
            void* at = ::mmap(base + offset, size, prot, MAP_SHARED | MAP_FIXED, region.fd.get(),
                              static_cast<off_t>(region.fd_offset + offset));
            if (at == MAP_FAILED) {
                throw Error::from_errno(fmt::format("map area {:#x}+{:#x} of", offset, size), what);
            }
        }
    }

    const RegionEntry& entry(unsigned index) {
        const std::lock_guard<std::recursive_mutex> hold(mutex_);
        if (index >= regions_.size()) {
            throw Error::invalid(fmt::format("region {}", index), name(),
                                 fmt::format("no such region: the device has {}", regions_.size()),
                                 EINVAL);
        }
        RegionEntry& region = regions_[index];
        if (region.known) {
            return region;
        }
        // Room for a sparse-mmap capability with a few areas; the server says in argsz when it
        // needs more, and we ask again.
        std::uint32_t argsz =
            sizeof(RegionInfoPayload) + sizeof(SparseMmapCapability) + 8 * sizeof(SparseArea);
        Message reply;
        RegionInfoReply decoded;
        for (int attempt = 0;; ++attempt) {
            RegionInfoPayload request;
            request.argsz = argsz;
            request.index = index;
            reply = call(Command::device_get_region_info, encode(request));
            decoded = decode_region_info(reply.payload);
            if (decoded.info.argsz <= argsz || attempt == 1 || decoded.info.argsz > 65536) {
                break;
            }
            argsz = decoded.info.argsz;
        }
        if (decoded.info.index != index) {
            throw Error::invalid(fmt::format("DEVICE_GET_REGION_INFO {}", index), name(),
                                 fmt::format("the reply is for region {}", decoded.info.index),
                                 EPROTO);
        }
        if (reply.fds.size() > 1) {
            throw Error::invalid(
                fmt::format("DEVICE_GET_REGION_INFO {}", index), name(),
                fmt::format("{} fds came with the reply; at most 1", reply.fds.size()), EPROTO);
        }
        region = RegionEntry{};
        region.info.index = index;
        region.info.size = decoded.info.size;
        region.info.readable = (decoded.info.flags & VFIO_REGION_INFO_FLAG_READ) != 0;
        region.info.writable = (decoded.info.flags & VFIO_REGION_INFO_FLAG_WRITE) != 0;
        region.fd_offset = decoded.info.offset;
        if (!reply.fds.empty()) {
            region.fd = std::move(reply.fds.front());
            // An area past the end of the file would fault (SIGBUS) on first touch: such a
            // region is used through messages instead.
            struct stat st {};
            const std::uint64_t end = region.fd_offset + decoded.info.size;
            if (::fstat(region.fd.get(), &st) != 0 || end < region.fd_offset ||
                static_cast<std::uint64_t>(st.st_size) < region.fd_offset + max_area_end(decoded)) {
                log_warn("{}: region {}'s mmap file is shorter than its areas; not mapping it",
                         name(), index);
                region.fd.reset();
            }
        }
        region.info.mappable =
            (decoded.info.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0 && static_cast<bool>(region.fd);
        for (const SparseArea& area : decoded.sparse_areas) {
            region.info.sparse_areas.emplace_back(area.offset, area.size);
        }
        if (index < pci::kBarCount && region.info.size != 0) {
            region.known = true;  // the BAR register read below goes through region 7
            region.info.io_space = (config_read32(pci::cfg::bar0 + 4 * index) & 1u) != 0;
            if (region.info.io_space) {
                region.info.mappable = false;
            }
        }
        region.known = true;
        return region;
    }

    // Where the last mappable byte of a region ends (the whole region without sparse areas).
    static std::uint64_t max_area_end(const RegionInfoReply& reply) {
        if (reply.sparse_areas.empty()) {
            return reply.info.size;
        }
        std::uint64_t end = 0;
        for (const SparseArea& area : reply.sparse_areas) {
            end = std::max(end, area.offset + area.size);  // inside the region: decoder checked
        }
        return end;
    }

    std::string describe(unsigned index, std::uint64_t offset, std::size_t size) const {
        return fmt::format("{} region {} offset {:#x} size {}", name(), index, offset, size);
    }

    void check_range(unsigned index, std::uint64_t offset, std::size_t size, bool write) {
        const RegionEntry& region = entry(index);
        if (region.info.size == 0 || size == 0 || offset > region.info.size ||
            size > region.info.size - offset) {
            throw Error::invalid(write ? "write" : "read", describe(index, offset, size),
                                 fmt::format("outside the region ({} bytes)", region.info.size),
                                 EINVAL);
        }
    }

    // Messages are request/reply pairs on one socket, and lost() may run on any queue's thread:
    // one at a time (recursive: a reconnect inside a request asks for region info again).
    std::recursive_mutex mutex_;
    std::string path_;
    ClientOptions options_;
    Channel channel_;
    std::uint32_t flags_ = 0;
    std::uint32_t num_irqs_ = 0;
    std::vector<RegionEntry> regions_;
    std::vector<UniqueFd> enabled_[5];  // per IrqKind: our copies of the installed eventfds
    std::vector<DmaChunk> chunks_;
    std::vector<LiveMapping> live_;
    std::optional<std::string> lost_;
    std::uint64_t reconnects_ = 0;
};

}  // namespace

std::unique_ptr<Device> open(const std::string& socket_path, const ClientOptions& options) {
    return std::make_unique<VfioUserDevice>(socket_path, options);
}

}  // namespace ring3::vfio_user
