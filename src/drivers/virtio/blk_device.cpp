// virtio-blk as a block::BlockDevice (VIRTIO 1.2 §5.2).
#include "ring3/virtio/blk.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/irq/wait.hpp"
#include "ring3/virtio/registers.hpp"

namespace ring3::virtio {

const char* blk_feature_name(unsigned bit) {
    switch (bit) {
        case blk_feature::size_max:
            return "BLK_SIZE_MAX";
        case blk_feature::seg_max:
            return "BLK_SEG_MAX";
        case blk_feature::geometry:
            return "BLK_GEOMETRY";
        case blk_feature::ro:
            return "BLK_RO";
        case blk_feature::blk_size:
            return "BLK_BLK_SIZE";
        case blk_feature::flush:
            return "BLK_FLUSH";
        case blk_feature::topology:
            return "BLK_TOPOLOGY";
        case blk_feature::config_wce:
            return "BLK_CONFIG_WCE";
        case blk_feature::mq:
            return "BLK_MQ";
        case blk_feature::discard:
            return "BLK_DISCARD";
        case blk_feature::write_zeroes:
            return "BLK_WRITE_ZEROES";
        case blk_feature::lifetime:
            return "BLK_LIFETIME";
        case blk_feature::secure_erase:
            return "BLK_SECURE_ERASE";
        default:
            return nullptr;
    }
}

namespace {

constexpr std::uint8_t kStatusUnset = 0xff;  // what a status byte holds until the device writes it
constexpr std::uint32_t kMaxDataSegments = 32;  // data descriptors per chain, at most
// Bytes of one request slot at most: header, range, status, and an indirect table.
constexpr std::size_t kSlotBound = 64 + sizeof(Descriptor) * (kMaxDataSegments + 2);

}  // namespace

// ---- BlkQueue
// ------------------------------------------------------------------------------------

BlkQueue::BlkQueue(BlkDevice& owner, std::unique_ptr<SplitQueue> queue, irq::Interrupt* interrupt)
    : owner_(owner), queue_(std::move(queue)), interrupt_(interrupt) {
    CycleClock::calibrate();
    const std::uint16_t size = queue_->size();
    indirect_ = owner.indirect();
    if (indirect_) {
        slot_stride_ = sizeof(Slot) + sizeof(Descriptor) * (owner.max_data_segments() + 2);
    }
    static_assert(sizeof(Slot) % alignof(Descriptor) == 0 && sizeof(Slot) % 16 == 0);
    slots_ = owner.dma_pool().allocate(slot_stride_ * size, 64);
    parents_.resize(size);
    free_parents_.reserve(size);
    for (std::uint32_t i = size; i-- > 0;) {
        free_parents_.push_back(i);
    }
    segments_.resize(owner.max_data_segments() + 2);
    depth_ = indirect_ ? size : std::max(1u, size / 3u);
}

BlkQueue::~BlkQueue() = default;

void BlkQueue::set_mode(irq::WaitMode mode, unsigned depth) noexcept {
    mode_ = interrupt_ == nullptr ? irq::WaitMode::poll : mode;
    depth_ = depth;
}

int BlkQueue::enqueue(const block::Request& request) noexcept {
    if (failed_ || queue_->broken() || owner_.failure() != 0) {
        return -ENODEV;
    }
    if (request.callback == nullptr) {
        return -EINVAL;
    }
    const block::Geometry g = owner_.geometry();
    const BlkConfig& config = owner_.config();
    const PciTransport& transport = owner_.transport();
    const bool has_data = request.op == block::Op::read || request.op == block::Op::write;
    if (request.op != block::Op::flush && (request.blocks == 0 || request.lba >= g.block_count ||
                                           request.blocks > g.block_count - request.lba)) {
        return -EINVAL;
    }
    const std::uint64_t bytes = std::uint64_t{request.blocks} * g.block_size;
    dma::DmaArena& arena = owner_.arena();
    if (has_data && (request.data == nullptr || !arena.contains(request.data, bytes))) {
        return -EINVAL;
    }
    if (request.op == block::Op::write && transport.has(blk_feature::ro)) {
        return -EROFS;
    }
    if ((request.op == block::Op::flush && !transport.has(blk_feature::flush)) ||
        (request.op == block::Op::write_zeroes && !transport.has(blk_feature::write_zeroes)) ||
        (request.op == block::Op::deallocate && !transport.has(blk_feature::discard))) {
        return -EOPNOTSUPP;
    }

    // Parts: data requests at max_transfer, ranged ones at the device's sector limits.
    const std::uint32_t sectors_per_block = g.block_size / kSectorSize;
    std::uint64_t part_blocks = 1;
    switch (request.op) {
        case block::Op::read:
        case block::Op::write:
            part_blocks = owner_.max_transfer() / g.block_size;
            break;
        case block::Op::write_zeroes:
            part_blocks =
                std::max<std::uint64_t>(1, config.max_write_zeroes_sectors / sectors_per_block);
            break;
        case block::Op::deallocate:
            part_blocks =
                std::max<std::uint64_t>(1, config.max_discard_sectors / sectors_per_block);
            break;
        case block::Op::flush:
            part_blocks = 1;
            break;
    }
    const std::uint64_t parts =
        request.op == block::Op::flush ? 1 : (request.blocks + part_blocks - 1) / part_blocks;

    // Count descriptors first: all parts are queued or none.
    const std::size_t granule = arena.granule(owner_.space_index());
    const std::uint64_t limit = owner_.segment_limit();
    const std::size_t space = owner_.space_index();
    const auto for_each_segment = [&](std::byte* data, std::uint64_t length, auto&& visit) {
        // Split where the device address is not contiguous (granule boundaries of the arena,
        // unless the next granule follows in IOVA) and at size_max.
        std::uint64_t iova = arena.iova(data, space);
        std::uint64_t run = 0;
        std::uint64_t done = 0;
        while (done < length) {
            const auto offset = static_cast<std::size_t>(data + done - arena.base());
            const std::uint64_t in_granule = granule - (offset & (granule - 1));
            std::uint64_t step = std::min(length - done, in_granule);
            const std::uint64_t here = arena.iova(data + done, space);
            if (run != 0 && (here != iova + run || run == limit)) {
                visit(iova, run);
                iova = here;
                run = 0;
            }
            step = std::min(step, limit - run);
            run += step;
            done += step;
        }
        if (run != 0) {
            visit(iova, run);
        }
    };
    std::uint64_t descriptors = 0;
    bool too_many = false;
    for (std::uint64_t part = 0; part < parts; ++part) {
        const std::uint64_t first = part * part_blocks;
        const std::uint64_t count = std::min<std::uint64_t>(part_blocks, request.blocks - first);
        std::uint64_t data_segments = 0;
        if (has_data) {
            for_each_segment(request.data + first * g.block_size, count * g.block_size,
                             [&](std::uint64_t, std::uint64_t) { ++data_segments; });
        } else if (request.op != block::Op::flush) {
            data_segments = 1;  // the range structure
        }
        too_many = too_many || data_segments > owner_.max_data_segments();
        descriptors += indirect_ ? 1 : 2 + data_segments;
    }
    if (too_many || descriptors > queue_->size() || parts > depth_) {
        return -EINVAL;  // can never fit (seg_max, the ring, the queue's depth)
    }
    if (descriptors > queue_->free_descriptors() || free_parents_.empty() ||
        queue_->in_flight() + parts > depth_) {
        return -EAGAIN;
    }

    const std::uint32_t parent_index = free_parents_.back();
    free_parents_.pop_back();
    Parent& parent = parents_[parent_index];
    parent.callback = request.callback;
    parent.context = request.context;
    parent.parts_left = static_cast<std::uint32_t>(parts);
    parent.status = {};
    for (std::uint64_t part = 0; part < parts; ++part) {
        const std::uint64_t first = part * part_blocks;
        const std::uint64_t count = std::min<std::uint64_t>(part_blocks, request.blocks - first);
        const std::uint16_t head = queue_->next_head();
        Slot& slot = this->slot(head);
        const std::uint64_t slot_iova = slots_.iova() + std::uint64_t{head} * slot_stride_;
        const std::uint64_t sector = (request.lba + first) * sectors_per_block;
        slot.header.reserved = 0;
        slot.header.sector = 0;
        slot.status = kStatusUnset;
        std::size_t n = 0;
        segments_[n++] =
            Segment{slot_iova + offsetof(Slot, header), sizeof(BlkRequestHeader), false};
        switch (request.op) {
            case block::Op::read:
            case block::Op::write:
                slot.header.type = request.op == block::Op::read ? blk_type::in : blk_type::out;
                slot.header.sector = sector;
                for_each_segment(request.data + first * g.block_size, count * g.block_size,
                                 [&](std::uint64_t iova, std::uint64_t length) {
                                     segments_[n++] =
                                         Segment{iova, static_cast<std::uint32_t>(length),
                                                 request.op == block::Op::read};
                                 });
                break;
            case block::Op::write_zeroes:
            case block::Op::deallocate:
                slot.header.type = request.op == block::Op::write_zeroes ? blk_type::write_zeroes
                                                                         : blk_type::discard;
                slot.range.sector = sector;
                slot.range.num_sectors = static_cast<std::uint32_t>(count * sectors_per_block);
                slot.range.flags = 0;
                segments_[n++] = Segment{slot_iova + offsetof(Slot, range),
                                         sizeof(BlkDiscardWriteZeroes), false};
                break;
            case block::Op::flush:
                slot.header.type = blk_type::flush;
                break;
        }
        segments_[n++] = Segment{slot_iova + offsetof(Slot, status), 1, true};
        const std::span<const Segment> chain(segments_.data(), n);
        const int added = indirect_ ? queue_->add_indirect(
                                          chain, reinterpret_cast<volatile Descriptor*>(&slot + 1),
                                          slot_iova + sizeof(Slot), &parent)
                                    : queue_->add(chain, &parent);
        if (added < 0) {
            // Cannot happen after the count above; an internal invariant broke.
            std::abort();
        }
    }
    ++outstanding_;
    return 0;
}

void BlkQueue::flush() noexcept {
    queue_->publish();
}

void BlkQueue::on_used(void* owner, void* context, std::uint16_t head,
                       std::uint32_t /*written*/) noexcept {
    auto& queue = *static_cast<BlkQueue*>(owner);
    auto& parent = *static_cast<Parent*>(context);
    // §5.2.6: the status byte the device wrote last in the chain (read after the used ring's
    // acquire barrier in SplitQueue::poll).
    const std::uint8_t status = queue.queue_->broken() || queue.failed_
                                    ? kStatusUnset
                                    : static_cast<volatile std::uint8_t&>(queue.slot(head).status);
    if (status != blk_status::ok && parent.status.ok()) {
        parent.status.device_code = status;
        parent.status.error = status == blk_status::unsupp ? EOPNOTSUPP : EIO;
    }
    if (!queue.queue_->broken() && !queue.failed_ && status != blk_status::ok &&
        status != blk_status::ioerr &&
        status != blk_status::unsupp) {  // garbage, or no status written at all
        ++queue.bad_status_;
    }
    if (--parent.parts_left != 0) {
        return;
    }
    const block::Callback callback = parent.callback;
    void* user = parent.context;
    const block::Status result = parent.status;
    --queue.outstanding_;
    queue.free_parents_.push_back(static_cast<std::uint32_t>(&parent - queue.parents_.data()));
    callback(user, result);
}

// The device stopped for good (Session::check_health, on this queue's thread or another's):
// reset it, so that it no longer reads or writes the requests' memory, then fail them with
// EIO (the log says why). The queue refuses new requests from then on.
unsigned BlkQueue::fail_with_device() noexcept {
    failed_ = true;
    const unsigned failed = outstanding_;
    if (failed != 0) {
        owner_.reset_device();
        queue_->fail_all(&BlkQueue::on_used, this);
    }
    return failed;
}

unsigned BlkQueue::poll(unsigned max) noexcept {
    if (owner_.failure() != 0) {
        return fail_with_device();
    }
    queue_->publish();  // nothing enqueued stays unannounced while its submitter waits
    const unsigned done = queue_->poll(&BlkQueue::on_used, this, max);
    if (queue_->broken()) {
        // The device wrote garbage into the used ring (the virtqueue logged what): it may
        // still write into the requests' memory, so it is reset before they fail.
        owner_.fail(EIO, "a request queue's used ring held garbage; the device is reset");
        return done + fail_with_device();
    }
    return done;
}

block::QueueStats BlkQueue::stats() const noexcept {
    const VirtqueueCounters& c = queue_->counters();
    block::QueueStats stats;
    stats.requests = c.chains;
    stats.notifications = c.notifications;
    stats.acknowledgements = 0;  // a split virtqueue needs none: used entries are just read
    stats.reaps = c.reaps;
    stats.completions = c.completions;
    stats.garbage = c.bad_ids + c.stale_ids + c.bad_lengths + c.index_jumps + bad_status_;
    return stats;
}

unsigned BlkQueue::wait(std::chrono::microseconds timeout) {
    if (const unsigned done = poll(0); done != 0 || outstanding_ == 0) {
        return done;
    }
    const unsigned done = irq::wait_for_completions(
        mode_, interrupt_, timeout, [this] { return poll(0); },
        [this] { return queue_->enable_interrupts(); }, [this] { queue_->disable_interrupts(); });
    // Nothing came: a device that stopped for good would otherwise hold its requests forever.
    if (done == 0 && owner_.check_health(last_health_check_) != 0) {
        return fail_with_device();
    }
    return done;
}

// ---- BlkDevice
// -----------------------------------------------------------------------------------

BlkDevice::BlkDevice(std::unique_ptr<Device> device, const BlkOptions& options)
    : options_(options) {
    try {
        start(std::move(device));
    } catch (...) {
        stop();  // a half-started device is reset and let go, not left running
        throw;
    }
}

void BlkDevice::start(std::unique_ptr<Device> device) {
    const BlkOptions& options = options_;
    SessionOptions session;
    session.driver = "virtio-blk";
    session.mode = options.mode;
    session.vectors = options.queues + 1;
    session.arena = options.arena;
    session.transport = options.transport;
    session.timeline = options.timeline;
    session_ = std::make_unique<Session>(std::move(device), session);
    PciTransport& transport = session_->transport();
    const std::string name = session_->name();
    dma::DmaArena& arena = session_->arena();

    Initializer::Features features;
    features.required = bit(feature::version_1);
    // ACCESS_PLATFORM: addresses go through the IOMMU (or are physical under UIO), which is what
    // ring3 gives the device; a device behind an IOMMU may refuse a driver that declines it.
    features.optional =
        bit(feature::access_platform) | bit(feature::event_idx) | bit(feature::indirect_desc) |
        bit(blk_feature::size_max) | bit(blk_feature::seg_max) | bit(blk_feature::blk_size) |
        bit(blk_feature::flush) | bit(blk_feature::ro) | bit(blk_feature::config_wce) |
        bit(blk_feature::mq) | bit(blk_feature::discard) | bit(blk_feature::write_zeroes);
    features.device_bit_name = &blk_feature_name;
    session_->start(features);

    // §5.2.4: the configuration, consistent by config_generation.
    transport.read_device_config([&](mmio::RegisterIo& cfg) {
        const auto need = [&](std::size_t end) {
            session_->need_config(end, "the negotiated features");
        };
        need(8);
        BlkConfig c;
        c.capacity = std::uint64_t{cfg.read<reg::blk::CapacityHigh>().raw()} << 32 |
                     cfg.read<reg::blk::CapacityLow>().raw();
        if (session_->has(blk_feature::size_max)) {
            need(reg::blk::SizeMax::offset + 4);
            c.size_max = cfg.read<reg::blk::SizeMax>().raw();
        }
        if (session_->has(blk_feature::seg_max)) {
            need(reg::blk::SegMax::offset + 4);
            c.seg_max = cfg.read<reg::blk::SegMax>().raw();
        }
        if (session_->has(blk_feature::blk_size)) {
            need(reg::blk::BlkSize::offset + 4);
            c.block_size = cfg.read<reg::blk::BlkSize>().raw();
        }
        if (session_->has(blk_feature::config_wce)) {
            need(reg::blk::Writeback::offset + 1);
            c.writeback = cfg.read<reg::blk::Writeback>().raw() != 0;
        }
        if (session_->has(blk_feature::mq)) {
            need(reg::blk::NumQueues::offset + 2);
            c.num_queues = cfg.read<reg::blk::NumQueues>().raw();
        }
        if (session_->has(blk_feature::discard)) {
            need(reg::blk::MaxDiscardSectors::offset + 4);
            c.max_discard_sectors = cfg.read<reg::blk::MaxDiscardSectors>().raw();
        }
        if (session_->has(blk_feature::write_zeroes)) {
            need(reg::blk::MaxWriteZeroesSectors::offset + 4);
            c.max_write_zeroes_sectors = cfg.read<reg::blk::MaxWriteZeroesSectors>().raw();
        }
        config_ = c;
    });
    // Device values are checked before anything is sized by them.
    const auto refuse = [&](const std::string& why) { session_->refuse(why); };
    if (config_.block_size < kSectorSize || config_.block_size > 65536 ||
        (config_.block_size & (config_.block_size - 1)) != 0) {
        refuse(fmt::format("blk_size {} is not a power of two in 512..65536", config_.block_size));
    }
    const std::uint64_t sectors_per_block = config_.block_size / kSectorSize;
    if (config_.capacity < sectors_per_block) {
        refuse(fmt::format("capacity is {} sectors: no block of {} bytes", config_.capacity,
                           config_.block_size));
    }
    if (session_->has(blk_feature::mq) && config_.num_queues == 0) {
        refuse("VIRTIO_BLK_F_MQ with num_queues 0");
    }
    if (session_->has(blk_feature::seg_max) && config_.seg_max == 0) {
        refuse("VIRTIO_BLK_F_SEG_MAX with seg_max 0");
    }
    if (config_.max_discard_sectors == 0 && session_->has(blk_feature::discard)) {
        config_.max_discard_sectors = 0xffffffffu;  // §5.2.4 says it must be set; assume no limit
    }
    if (config_.max_write_zeroes_sectors == 0 && session_->has(blk_feature::write_zeroes)) {
        config_.max_write_zeroes_sectors = 0xffffffffu;
    }

    // Queues: one per block::Queue (§5.2.2: requestq1..N with VIRTIO_BLK_F_MQ).
    const unsigned available = std::min<unsigned>(
        session_->has(blk_feature::mq) ? config_.num_queues : 1u, transport.num_queues());
    if (available == 0) {
        refuse("the device has no virtqueue (num_queues 0)");
    }
    const unsigned count = std::clamp(options.queues, 1u, available);
    std::uint16_t smallest = kMaxQueueSize;
    std::vector<std::unique_ptr<SplitQueue>> rings;
    for (unsigned i = 0; i < count; ++i) {
        const auto index = static_cast<std::uint16_t>(i);
        const std::uint16_t max = transport.max_queue_size(index);  // throws on 0
        std::uint16_t size = round_down_pow2(
            std::min<std::uint32_t>(max, std::max<std::uint16_t>(options.max_queue_size, 4)));
        if (size < 4) {
            refuse(fmt::format("virtqueue {} holds {} descriptors; a request needs at least 3", i,
                               max));
        }
        // Each request slot (header, status, indirect table) must fit with the others in one
        // contiguous piece of the arena (a chunk, or less with small chunks).
        while (size > 4 && std::size_t{size} * kSlotBound > arena.max_contiguous()) {
            size = static_cast<std::uint16_t>(size / 2);
        }
        smallest = std::min(smallest, size);
        rings.push_back(session_->create_queue(index, size, session_->vector_for(i)));
    }
    ring_size_ = smallest;

    // Transfer limits: data descriptors per chain (seg_max, the ring less header and status)
    // and bytes per descriptor (size_max, and the arena's granule where addresses may jump).
    max_segments_ = std::min<std::uint32_t>(ring_size_ - 2u, kMaxDataSegments);
    if (session_->has(blk_feature::seg_max)) {
        max_segments_ = std::min(max_segments_, config_.seg_max);
    }
    segment_limit_ = 0xfffff000u;
    if (session_->has(blk_feature::size_max) && config_.size_max != 0) {
        segment_limit_ = config_.size_max;
    }
    const std::uint64_t per_segment =
        std::min<std::uint64_t>(segment_limit_, arena.granule(session_->space_index()));
    // A part that does not start on a segment boundary may need one descriptor more.
    const std::uint64_t reach = max_segments_ > 1 ? (max_segments_ - 1) * per_segment : per_segment;
    std::uint64_t transfer = std::min<std::uint64_t>(options.max_transfer, reach);
    transfer -= transfer % config_.block_size;
    if (transfer == 0) {
        refuse(fmt::format("seg_max {} and size_max {} allow no request of one {}-byte block",
                           config_.seg_max, config_.size_max, config_.block_size));
    }
    max_transfer_ = static_cast<std::uint32_t>(transfer);

    for (unsigned i = 0; i < count; ++i) {
        queues_.push_back(
            std::make_unique<BlkQueue>(*this, std::move(rings[i]), session_->interrupt_for(i)));
    }
    mark(options.timeline, "virtqueues");
    session_->driver_ok();
    log_info(
        "{}: virtio-blk, {} sectors, {}-byte blocks, {} queue(s) of {} descriptors, max "
        "transfer {} bytes",
        name, config_.capacity, config_.block_size, count, ring_size_, max_transfer_);
}

BlkDevice::~BlkDevice() {
    stop();
}

void BlkDevice::stop() noexcept {
    if (session_) {
        session_->reset_device();  // before the rings' memory goes with the queues
    }
    queues_.clear();
    session_.reset();
}

std::string BlkDevice::name() const {
    return session_->name();
}

block::Geometry BlkDevice::geometry() const {
    block::Geometry g;
    g.block_size = config_.block_size;
    g.block_count = config_.capacity / (config_.block_size / kSectorSize);
    g.max_transfer = max_transfer_;
    g.queue_count = static_cast<std::uint32_t>(queues_.size());
    // A request is one chain: one descriptor with an indirect table, else header, data, status.
    g.max_queue_depth = indirect() ? ring_size_ : std::max(1u, ring_size_ / 3u);
    g.volatile_write_cache = session_->has(blk_feature::flush) && config_.writeback;
    g.write_zeroes = session_->has(blk_feature::write_zeroes);
    g.deallocate = session_->has(blk_feature::discard);
    return g;
}

block::Queue& BlkDevice::open_queue(unsigned index, unsigned depth, irq::WaitMode mode) {
    if (index >= queues_.size()) {
        throw Error::invalid(
            fmt::format("open queue {}", index), name(),
            fmt::format("the device has {} request queue(s){}", queues_.size(),
                        session_->has(blk_feature::mq) ? "" : " (no VIRTIO_BLK_F_MQ)"));
    }
    const std::uint32_t max_depth = geometry().max_queue_depth;
    if (depth > max_depth) {
        throw Error::invalid(fmt::format("open queue {} with depth {}", index, depth), name(),
                             fmt::format("the virtqueue allows at most {} ({} descriptors, {} per "
                                         "request)",
                                         max_depth, ring_size_, indirect() ? 1 : 3));
    }
    if (mode != irq::WaitMode::poll && !session_->has_vectors()) {
        throw Error::invalid(fmt::format("open queue {} in {} mode", index, to_string(mode)),
                             name(), "the device was opened in poll mode (no vectors)");
    }
    BlkQueue& queue = *queues_[index];
    queue.set_mode(mode, depth == 0 ? max_depth : depth);
    return queue;
}

std::unique_ptr<block::BlockDevice> open_blk(std::unique_ptr<Device> device,
                                             const block::OpenBlockOptions& options) {
    if (options.namespace_id != 1) {
        throw Error::invalid(fmt::format("open namespace {}", options.namespace_id), device->name(),
                             "a virtio-blk device has one disk: namespace 1", ENOENT);
    }
    BlkOptions blk;
    blk.queues = options.queues;
    blk.mode = options.mode;
    blk.transport.pause = [] { std::this_thread::sleep_for(std::chrono::microseconds(100)); };
    blk.timeline = options.timeline;
    if (options.dma_chunk_size != 0) {
        blk.arena.chunk_size = options.dma_chunk_size;
    }
    return std::make_unique<BlkDevice>(std::move(device), blk);
}

}  // namespace ring3::virtio
