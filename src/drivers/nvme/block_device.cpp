// NVMe as a block::BlockDevice: one namespace, I/O queue pairs handed to threads, requests
// translated into NVM commands (NVM Command Set 1.0 §3.2: Read, Write, Flush, Write Zeroes,
// Dataset Management) with PRPs (Base 2.0 §4.3.1) or, where the controller offers them, an SGL
// data block descriptor (§4.3.2). Requests larger than MDTS are split.
#include "ring3/nvme/block_device.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/fence.hpp"
#include "ring3/core/log.hpp"
#include "ring3/irq/wait.hpp"

namespace ring3::nvme {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::chrono::microseconds kAdaptiveSpin{50};

}  // namespace

// ---- IoQueue ----------------------------------------------------------------------------------

namespace {

// PRP list pages a queue keeps: one per command in flight when PRPs describe the data (a list is
// needed beyond two pages), a few when SGLs do (a list only for a buffer that is not contiguous
// for the device, which DMA pools do not hand out), none when no transfer exceeds two pages.
std::uint32_t list_pages(unsigned depth, bool use_sgl, std::uint32_t max_transfer) {
    if (max_transfer <= 2 * kPage) {
        return 0;
    }
    return use_sgl ? std::min(depth, 2u) : depth;
}

}  // namespace

IoQueue::IoQueue(NvmeBlockDevice& owner, Controller& controller, const NamespaceInfo& ns,
                 std::unique_ptr<QueuePair> pair, unsigned depth, irq::Interrupt* interrupt,
                 int vector, irq::WaitMode mode, bool use_sgl, std::chrono::milliseconds io_timeout)
    : owner_(owner),
      controller_(controller),
      arena_(controller.arena()),
      space_(controller.pool().space_index()),
      nsid_(ns.id),
      block_size_(ns.block_size()),
      block_count_(ns.size),
      max_transfer_(controller.max_transfer_bytes()),
      pair_(std::move(pair)),
      interrupt_(interrupt),
      vector_(vector),
      mode_(mode),
      use_sgl_(use_sgl),
      io_timeout_(io_timeout),
      list_of_command_(pair_->entries(), kNoList),
      ranges_(controller.pool().allocate(std::size_t{16} * pair_->entries(), 64)) {
    CycleClock::calibrate();     // once per process, before any request is timed
    enable_asymmetric_fences();  // once per process, before any Activity
    if (const std::uint32_t pages =
            list_pages(std::min(depth, pair_->entries() - 1), use_sgl_, max_transfer_);
        pages != 0) {
        lists_.emplace(controller.pool(), kPage, pages, kPage);
    }
    pair_->set_lazy_completion_doorbell(interrupt_ == nullptr);
    parents_.resize(pair_->entries());
    free_parents_.reserve(pair_->entries());
    for (std::uint32_t i = pair_->entries(); i-- > 0;) {
        parents_[i].queue = this;
        free_parents_.push_back(i);
    }
}

IoQueue::~IoQueue() = default;

IoQueue::Activity::Activity(IoQueue& queue) noexcept
    : queue_(queue), entered_(true), outermost_(!queue.active_.load(std::memory_order_relaxed)) {
    if (!outermost_) {
        return;  // nested (recovery calls back into the late queue)
    }
    // Dekker with recover(): our store of active_, then our load of recovering_; recover() pays
    // for the store-load barrier between them (heavy_fence, fence.hpp), this path only keeps
    // the compiler from reordering.
    queue_.active_.store(true, std::memory_order_relaxed);
    light_fence();
    if (queue_.owner_.recovering()) {
        queue_.active_.store(false, std::memory_order_release);
        entered_ = false;
    }
}

IoQueue::Activity::~Activity() {
    if (entered_ && outermost_) {
        queue_.active_.store(false, std::memory_order_release);
    }
}

// Translates one request into 1..n commands; all or nothing: when they do not all fit, nothing
// is queued and the caller polls and retries.
int IoQueue::enqueue(const block::Request& request) noexcept {
    if (owner_.failed()) {
        return -ENODEV;
    }
    const Activity activity(*this);
    if (!activity || pending_failure_.load(std::memory_order_acquire)) {
        return -EAGAIN;  // a controller reset is under way, or its aftermath not yet reaped
    }
    const std::uint64_t bytes = std::uint64_t{request.blocks} * block_size_;
    const bool has_data = request.op == block::Op::read || request.op == block::Op::write;
    if (request.callback == nullptr) {
        return -EINVAL;
    }
    if (request.op != block::Op::flush) {
        if (request.blocks == 0 || request.lba >= block_count_ ||
            request.blocks > block_count_ - request.lba) {
            return -EINVAL;
        }
    }
    if (has_data) {
        // PRP entries are dword aligned (§4.3.1); the buffer must be DMA memory of this device.
        if (request.data == nullptr || (reinterpret_cast<std::uintptr_t>(request.data) & 3u) != 0 ||
            !arena_.contains(request.data, bytes)) {
            return -EINVAL;
        }
    }
    const std::uint32_t max_blocks = max_transfer_ / block_size_;
    const std::uint32_t parts =
        has_data || request.op == block::Op::write_zeroes
            ? static_cast<std::uint32_t>((request.blocks + max_blocks - 1) / max_blocks)
            : 1;
    if (parts > pair_->entries() - 1) {
        return -EINVAL;  // larger than the whole queue can ever hold
    }
    if (parts > pair_->free_slots() || free_parents_.empty()) {
        return -EAGAIN;
    }
    if (has_data) {
        // All or nothing: the list pages the parts need must be there before any is queued.
        std::uint32_t lists = 0;
        std::uint32_t left = request.blocks;
        const std::byte* data = request.data;
        while (left != 0) {
            const std::uint32_t blocks = std::min(left, max_blocks);
            const std::uint64_t part_bytes = std::uint64_t{blocks} * block_size_;
            lists += needs_list(data, part_bytes) ? 1 : 0;
            data += part_bytes;
            left -= blocks;
        }
        if (lists != 0 && (!lists_ || lists > lists_->available())) {
            return !lists_ || lists > lists_->capacity() ? -EINVAL : -EAGAIN;
        }
    }

    const std::uint32_t parent_index = free_parents_.back();
    free_parents_.pop_back();
    Parent& parent = parents_[parent_index];
    parent.callback = request.callback;
    parent.context = request.context;
    parent.parts_left = parts;
    parent.status = {};
    parent.timed_out = false;  // a recycled parent may have timed out in an earlier life

    std::uint64_t lba = request.lba;
    std::uint32_t left = request.blocks;
    std::byte* data = request.data;
    for (std::uint32_t part = 0; part < parts; ++part) {
        const std::uint32_t blocks =
            request.op == block::Op::flush ? 0 : std::min(left, max_blocks);
        const int cid = pair_->next_command_id();
        SubmissionEntry command{};
        command.nsid = nsid_;
        switch (request.op) {
            case block::Op::read:
            case block::Op::write:
                command.opcode = request.op == block::Op::read ? io::read : io::write;
                set_data_pointer(command, static_cast<std::uint16_t>(cid), data,
                                 std::uint64_t{blocks} * block_size_);
                break;
            case block::Op::write_zeroes:
                command.opcode = io::write_zeroes;
                break;
            case block::Op::flush:
                command.opcode = io::flush;
                break;
            case block::Op::deallocate: {
                // One range in the command's slot (§3.2.3: Context Attributes, Length in
                // blocks, Starting LBA).
                command.opcode = io::dataset_management;
                const std::size_t at = std::size_t{16} * static_cast<std::uint16_t>(cid);
                std::byte* range = ranges_.data() + at;
                const std::uint32_t attributes = 0;
                const std::uint32_t length = request.blocks;
                std::memcpy(range, &attributes, 4);
                std::memcpy(range + 4, &length, 4);
                std::memcpy(range + 8, &request.lba, 8);
                command.dptr[0] = ranges_.iova() + at;
                command.cdw10 = 0;        // one range (0-based)
                command.cdw11 = 1u << 2;  // AD: deallocate
                break;
            }
        }
        if (request.op != block::Op::flush && request.op != block::Op::deallocate) {
            command.cdw10 = static_cast<std::uint32_t>(lba);
            command.cdw11 = static_cast<std::uint32_t>(lba >> 32);
            command.cdw12 = blocks - 1;  // NLB, 0-based
        }
        pair_->enqueue(command, &IoQueue::on_completion, &parent);
        lba += blocks;
        left -= blocks;
        data += std::size_t{blocks} * block_size_;
    }
    return 0;
}

// One SQ tail doorbell write for everything enqueued since the last one (§3.3.1.1).
void IoQueue::flush() noexcept {
    const Activity activity(*this);
    if (activity) {
        pair_->ring_doorbell();
    }
}

// PRP1 and PRP2 describe up to two pages without any list (§4.3.1.1): for such transfers PRPs
// are the cheapest description for any controller (and under QEMU's emulation, with the IOMMU in
// front of the device, a 4 KiB SGL transfer measured 15x slower than the same transfer by PRP).
// An SGL data block replaces a PRP list, where one would be needed.
bool IoQueue::fits_prp_pair(std::uint64_t first_iova, std::uint64_t bytes) noexcept {
    const std::uint64_t in_first_page = kPage - (first_iova & (kPage - 1));
    return bytes <= in_first_page + kPage;
}

bool IoQueue::sgl_for(std::uint64_t first_iova, const std::byte* data,
                      std::uint64_t bytes) const noexcept {
    return use_sgl_ && !fits_prp_pair(first_iova, bytes) &&
           arena_.iova(data + bytes - 1, space_) == first_iova + bytes - 1;
}

bool IoQueue::needs_list(const std::byte* data, std::uint64_t bytes) const noexcept {
    const std::uint64_t first = arena_.iova(data, space_);
    return !fits_prp_pair(first, bytes) && !sgl_for(first, data, bytes);
}

void IoQueue::release_list(std::uint16_t cid) noexcept {
    if (cid < list_of_command_.size() && list_of_command_[cid] != kNoList) {
        lists_->put(list_of_command_[cid]);
        list_of_command_[cid] = kNoList;
    }
}

// Data pointer of one command: PRP1/PRP2 for up to two pages; beyond that an SGL data block
// descriptor when the controller takes SGLs and the buffer is contiguous for the device, else a
// PRP list from the queue's list pages (enqueue() made sure one is free). Page addresses are
// translated one by one, so buffers need not be contiguous in IOVA.
void IoQueue::set_data_pointer(SubmissionEntry& command, std::uint16_t cid, std::byte* data,
                               std::uint64_t bytes) noexcept {
    const std::uint64_t first = arena_.iova(data, space_);
    if (sgl_for(first, data, bytes)) {
        SglDescriptor sgl{};
        sgl.address = first;
        sgl.length = static_cast<std::uint32_t>(bytes);
        sgl.type = 0x00;  // data block, address
        command.flags = kPsdtSgl;
        std::memcpy(command.dptr, &sgl, sizeof sgl);
        return;
    }
    command.dptr[0] = first;
    const std::uint64_t in_first_page = kPage - (first & (kPage - 1));
    if (bytes <= in_first_page) {
        return;
    }
    std::byte* next = data + in_first_page;
    const std::uint64_t rest = bytes - in_first_page;
    if (rest <= kPage) {
        command.dptr[1] = arena_.iova(next, space_);
        return;
    }
    dma::Buffer list;
    [[maybe_unused]] const bool got = lists_->get(list);  // counted free by enqueue()
    list_of_command_[cid] = list.index;
    auto* entries = reinterpret_cast<std::uint64_t*>(list.data);
    const std::uint64_t pages = (rest + kPage - 1) / kPage;  // <= 512: max_transfer <= 2 MiB
    for (std::uint64_t i = 0; i < pages; ++i) {
        entries[i] = arena_.iova(next + i * kPage, space_);
    }
    command.dptr[1] = list.iova;
}

block::QueueStats IoQueue::stats() const noexcept {
    const QueueCounters& c = pair_->counters();
    block::QueueStats s;
    s.requests = c.submitted;
    s.notifications = c.sq_doorbells;
    s.acknowledgements = c.cq_doorbells;
    s.reaps = c.reaps;
    s.completions = c.completed;
    s.garbage = c.invalid_command_id + c.stale_command_id;
    return s;
}

void IoQueue::on_completion(void* context, const CompletionEntry& entry) {
    auto* parent = static_cast<Parent*>(context);
    parent->queue->release_list(entry.command_id);
    const StatusField status{static_cast<std::uint16_t>(entry.status >> 1)};
    if (parent->timed_out) {
        parent->status = block::Status{ETIMEDOUT, 0};
    } else if (!status.ok() && parent->status.ok()) {
        parent->status.device_code = status.code_and_type();
        parent->status.error = status.code_and_type() == kAbortedByReset ? ECANCELED : EIO;
    }
    if (--parent->parts_left == 0) {
        IoQueue& queue = *parent->queue;
        const block::Callback callback = parent->callback;
        void* user = parent->context;
        const block::Status result = parent->status;
        queue.free_parents_.push_back(static_cast<std::uint32_t>(parent - queue.parents_.data()));
        callback(user, result);
    }
}

unsigned IoQueue::poll(unsigned max) noexcept {
    const Activity activity(*this);
    return activity ? poll_active(max) : 0;
}

unsigned IoQueue::poll_active(unsigned max) noexcept {
    if (pending_failure_.load(std::memory_order_acquire)) {
        // A reset failed everything this queue had in flight; complete it here, on the thread
        // that owns the queue, as any completion.
        pending_failure_.store(false, std::memory_order_relaxed);
        const unsigned failed = pair_->outstanding();
        pair_->fail_all(kAbortedByReset);
        return failed;
    }
    pair_->ring_doorbell();  // nothing enqueued stays unannounced while its submitter waits
    return pair_->process_completions(max);
}

void IoQueue::mark_failed_by_reset() noexcept {
    pair_->reset_rings();
    pending_failure_.store(true, std::memory_order_release);
}

void IoQueue::fail_in_flight(int timed_out) noexcept {
    if (timed_out >= 0) {
        if (auto* parent =
                static_cast<Parent*>(pair_->context(static_cast<std::uint16_t>(timed_out)))) {
            parent->timed_out = true;
        }
    }
    pair_->fail_all(kAbortedByReset);
    pair_->reset_rings();
}

// Looks at the oldest command in flight; one that outlived the I/O timeout starts recovery. The
// sweep is O(depth): it runs on every 256th call, or when a wait ended with nothing (`force`).
void IoQueue::check_timeout(bool force) {
    if (!force && ++calls_since_sweep_ < 256) {
        return;
    }
    calls_since_sweep_ = 0;
    const auto now = CycleClock::now();
    std::uint16_t cid = 0;
    CycleClock::time_point stamped;
    if (!pair_->stamp_and_find_oldest(now, cid, stamped)) {
        return;
    }
    // A request late by a second: is the device still ours? (A system call, at most once a
    // second, only while something is late.)
    if (now - stamped > kLostProbe && now - last_lost_probe_ > kLostProbe) {
        last_lost_probe_ = now;
        if (auto why = controller_.device().lost()) {
            owner_.recover(*this, cid, std::move(*why));
            return;
        }
        // Replaced by a fresh device (a restarted vfio-user server): nothing in flight will
        // complete, so recover now instead of after the I/O timeout.
        if (const std::uint64_t incarnation = controller_.device().incarnation();
            owner_.incarnation_.exchange(incarnation) != incarnation) {
            owner_.recover(*this, cid, std::nullopt, true);
            return;
        }
    }
    if (now - stamped > io_timeout_) {
        owner_.recover(*this, cid);
    }
}

unsigned IoQueue::wait(std::chrono::microseconds timeout) {
    const Activity activity(*this);
    if (!activity) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));  // a reset is under way
        return 0;
    }
    if (const unsigned done = poll_active(0); done != 0 || outstanding() == 0) {
        if (outstanding() != 0) {
            check_timeout(false);
        }
        return done;
    }
    // NVMe has no per-queue interrupt suppression: a vector in use is always armed.
    const unsigned done = irq::wait_for_completions(
        mode_, interrupt_, timeout, [this] { return poll_active(0); }, [] { return false; }, [] {},
        kAdaptiveSpin);
    check_timeout(done == 0);
    return done;
}

// ---- NvmeBlockDevice --------------------------------------------------------------------------

std::string block_face_refusal(const NamespaceInfo& ns) {
    if (ns.command_set != csi::nvm) {
        return fmt::format(
            "it uses the {} command set (CSI {:02x}h){}; ring3's block face drives NVM command "
            "set namespaces only",
            command_set_name(ns.command_set), ns.command_set,
            ns.command_set == csi::zoned ? ", where writes must go to a zone's write pointer" : "");
    }
    if (ns.protection != 0) {
        return fmt::format(
            "it is formatted with end-to-end protection information (type {}, LBA format {}); "
            "ring3's block face does not generate or check it",
            ns.protection, ns.format_index);
    }
    if (ns.metadata_size() != 0) {
        return fmt::format(
            "it is formatted with {} bytes of metadata per {}-byte block ({}, LBA format {}); "
            "ring3's block face does not transfer metadata: format the namespace with an LBA "
            "format without metadata",
            ns.metadata_size(), ns.block_size(),
            ns.metadata_extended ? "extended LBAs" : "a separate metadata buffer", ns.format_index);
    }
    return {};
}

NvmeBlockDevice::NvmeBlockDevice(std::unique_ptr<Device> device, const BlockOptions& options)
    : device_(std::move(device)), options_(options) {
    incarnation_.store(device_->incarnation());
    if (options.mode != irq::WaitMode::poll) {
        // All vectors before any queue exists: VFIO cannot add MSI-X vectors to a live set.
        const unsigned msix = device_->irq_count(IrqKind::msix);
        if (msix >= 2) {
            const unsigned vectors = std::min(msix, options.queues + 1);
            interrupts_ = device_->enable_irqs(IrqKind::msix, vectors);
            vector_kind_ = IrqKind::msix;
        } else if (device_->irq_count(IrqKind::intx) > 0) {
            interrupts_ = device_->enable_irqs(IrqKind::intx, 1);
            vector_kind_ = IrqKind::intx;
        } else {
            throw Error::invalid("set up interrupts", device_->name(),
                                 "the device offers neither MSI-X nor INTx; use --mode poll",
                                 ENOTSUP);
        }
    }
    controller_ = std::make_unique<Controller>(*device_, options.controller);
    namespace_ = controller_->namespace_info(options.namespace_id);
    if (const std::string why = block_face_refusal(namespace_); !why.empty()) {
        throw Error::invalid(fmt::format("open namespace {} as a block device", namespace_.id),
                             device_->name(), why, ENOTSUP);
    }
    granted_queues_ = controller_->set_queue_count(std::max(1u, options.queues));
    queues_.resize(granted_queues_);
    mark(options.controller.timeline, "queue count");
    log_info("{}: namespace {} with {} blocks of {} bytes; {} I/O queue(s) granted",
             device_->name(), namespace_.id, namespace_.size, namespace_.block_size(),
             granted_queues_);
}

NvmeBlockDevice::~NvmeBlockDevice() {
    for (auto& queue : queues_) {
        if (queue && !lost_.load(std::memory_order_acquire)) {  // a lost device answers nothing
            try {
                controller_->delete_io_queue(queue->pair());
            } catch (const Error& e) {
                log_warn("{}", e.what());
            }
        }
    }
    queues_.clear();
    controller_.reset();
    if (vector_kind_) {
        try {
            device_->disable_irqs(*vector_kind_);
        } catch (const Error& e) {
            log_warn("{}", e.what());
        }
    }
}

std::string NvmeBlockDevice::name() const {
    return fmt::format("{} nsid {}", device_->name(), namespace_.id);
}

block::Geometry NvmeBlockDevice::geometry() const {
    block::Geometry g;
    g.block_count = namespace_.size;
    g.block_size = namespace_.block_size();
    g.max_transfer = controller_->max_transfer_bytes();
    g.queue_count = granted_queues_;
    g.max_queue_depth = std::min<std::uint32_t>(controller_->max_queue_entries(), 4096) - 1;
    g.volatile_write_cache = controller_->info().volatile_write_cache;
    g.write_zeroes = controller_->info().supports_write_zeroes();
    g.deallocate = controller_->info().supports_deallocate();
    return g;
}

block::Queue& NvmeBlockDevice::open_queue(unsigned index, unsigned depth, irq::WaitMode mode) {
    if (index >= granted_queues_) {
        throw Error::invalid(
            fmt::format("open queue {}", index), name(),
            fmt::format("the controller granted {} I/O queue(s)", granted_queues_));
    }
    const std::uint32_t max_depth = geometry().max_queue_depth;
    if (depth > max_depth) {
        throw Error::invalid(fmt::format("open queue {} with depth {}", index, depth), name(),
                             fmt::format("the controller allows at most {} (CAP.MQES + 1 = {} "
                                         "entries, one always empty)",
                                         max_depth, controller_->max_queue_entries()));
    }
    if (queues_[index]) {
        return *queues_[index];
    }
    // At least 64 ring entries even for a shallow queue: room to acknowledge completions lazily
    // in poll mode (QueuePair::set_lazy_completion_doorbell).
    const std::uint32_t entries =
        std::max((depth == 0 ? max_depth : depth) + 1, std::min(64u, max_depth + 1));
    irq::Interrupt* interrupt = nullptr;
    int vector = -1;
    if (mode != irq::WaitMode::poll) {
        if (interrupts_.empty()) {
            throw Error::invalid(fmt::format("open queue {} in {} mode", index, to_string(mode)),
                                 name(), "the device was opened in poll mode (no vectors)");
        }
        // Vector 0 serves the admin queue; I/O queue i gets vector i + 1 when there are enough,
        // else they share the last one (INTx: the only one).
        const unsigned v =
            std::min<unsigned>(index + 1, static_cast<unsigned>(interrupts_.size()) - 1);
        interrupt = &interrupts_[v];
        vector = static_cast<int>(v);
    }
    auto pair =
        controller_->create_io_queue(static_cast<std::uint16_t>(index + 1), entries, vector);
    queues_[index] = std::make_unique<IoQueue>(
        *this, *controller_, namespace_, std::move(pair), depth == 0 ? max_depth : depth, interrupt,
        vector, mode, controller_->info().supports_sgl() && options_.use_sgl, options_.io_timeout);
    return *queues_[index];
}

dma::DmaPool& NvmeBlockDevice::dma_pool() {
    return controller_->pool();
}

// Base 2.0 §5.1 (Abort) and §3.7.2 (Controller Level Reset): abort the late command; QEMU, like
// many controllers, answers "not aborted", so then reset the controller. Everything in flight
// is completed only after CSTS.RDY reads 0, when the device can no longer write into buffers.
void NvmeBlockDevice::recover(IoQueue& late, std::uint16_t command_id,
                              std::optional<std::string> lost, bool replaced) {
    bool expected = false;
    if (!recovering_.compare_exchange_strong(expected, true)) {
        return;  // another queue's thread is recovering the controller already
    }
    const auto done_recovering = [this] { recovering_.store(false, std::memory_order_seq_cst); };
    // The other side of IoQueue::Activity: after this, a queue thread either shows active() or
    // sees recovering_ and stays out.
    heavy_fence();
    if (lost) {
        log_error("{}: the device is gone ({}); failing every request", name(), *lost);
    } else if (replaced) {
        log_warn(
            "{}: the device was replaced by a fresh one (a restarted server); bringing it "
            "up again",
            name());
    } else {
        log_warn("{}: command {} on queue {} outlived the {} ms I/O timeout; aborting it", name(),
                 command_id, late.pair().id(), options_.io_timeout.count());
    }
    // A controller that is not running (CSTS.RDY clear: it was reset or replaced under us) or
    // has failed (CSTS.CFS) cannot abort anything: go straight to the reset.
    bool running = !replaced;
    if (!lost && !replaced) {
        try {
            const auto csts = controller_->registers().read<reg::Csts>();
            running = csts.raw() != ~0u && csts.get<reg::Csts::Rdy>() != 0 &&
                      csts.get<reg::Csts::Cfs>() == 0;
            if (!running) {
                log_warn("{}: the controller is not running (CSTS {:#x}); resetting it", name(),
                         csts.raw());
            }
        } catch (const Error& e) {
            log_warn("{}: reading CSTS: {}", name(), e.what());
        }
    }
    if (!lost && running)
        try {
            const std::uint32_t result = controller_->abort(late.pair().id(), command_id);
            if ((result & 1u) == 0) {
                log_info("{}: the controller aborted command {}", name(), command_id);
                done_recovering();
                return;  // it completes with "Command Abort Requested"
            }
            log_warn("{}: the controller did not abort command {}; resetting it", name(),
                     command_id);
        } catch (const Error& e) {
            log_warn("{}: abort failed ({}); resetting the controller", name(), e.what());
        }

    // Wait for the other queues' threads to leave their calls; wake those asleep on a vector.
    const auto deadline = CycleClock::now() + std::chrono::seconds(30);
    for (auto& queue : queues_) {
        if (!queue || queue.get() == &late) {
            continue;
        }
        while (queue->active()) {
            if (queue->interrupt() != nullptr &&
                queue->interrupt()->source() == irq::Interrupt::Source::eventfd) {
                queue->interrupt()->signal();
            }
            if (CycleClock::now() > deadline) {
                done_recovering();
                throw Error::invalid(
                    "recover", name(),
                    fmt::format("queue {} stayed busy for 30 s; not resetting", queue->pair().id()),
                    EBUSY);
            }
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }
    if (lost) {
        // Nothing to reset: fail what is in flight (each queue on its own thread) and refuse
        // what comes.
        lost_.store(true, std::memory_order_release);
        failed_.store(true, std::memory_order_release);
        for (auto& queue : queues_) {
            if (queue.get() == &late) {
                queue->fail_in_flight(-1);
            } else if (queue) {
                queue->mark_failed_by_reset();
            }
        }
        done_recovering();
        return;
    }
    try {
        controller_->reset([&] {
            for (auto& queue : queues_) {
                if (!queue) {
                    continue;
                }
                if (queue.get() == &late) {
                    queue->fail_in_flight(command_id);
                } else {
                    queue->mark_failed_by_reset();
                }
            }
        });
        for (auto& queue : queues_) {
            if (queue) {
                controller_->register_io_queue(queue->pair(), queue->vector());
            }
        }
    } catch (...) {
        failed_.store(true, std::memory_order_release);
        done_recovering();
        throw;
    }
    ++resets_;
    done_recovering();
    log_warn("{}: controller reset; its I/O queues were created again", name());
}

}  // namespace ring3::nvme
