// emu::NvmeController: registers, the doorbell poller and the completion path (NVMe Base 2.0
// §3.1.3 registers, §3.5.1 initialization, §3.6 shutdown, §3.7.2 controller reset, §4.1 queues,
// §4.6 completion entries). The commands themselves are in nvme_commands.cpp.
#include "ring3/emu/nvme.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/emu/disk.hpp"
#include "ring3/nvme/registers.hpp"

namespace ring3::emu {
namespace {

namespace reg = nvme::reg;
using Clock = std::chrono::steady_clock;

// PCI Code and ID Assignment §1.2: 01h mass storage, 08h non-volatile memory, 02h NVM Express.
constexpr std::uint32_t kNvmeClassCode = 0x010802;
// §3.1.3.6 CSTS bits.
constexpr std::uint32_t kCstsRdy = 1u << 0;
constexpr std::uint32_t kCstsCfs = 1u << 1;
constexpr std::uint32_t kCstsShutdownComplete = 2u << 2;
// §3.1.3.5 CC fields used here.
constexpr std::uint32_t kCcEn = 1u << 0;
unsigned cc_shn(std::uint32_t cc) {
    return (cc >> 14) & 3u;
}
unsigned cc_mps(std::uint32_t cc) {
    return (cc >> 7) & 0xfu;
}
unsigned cc_css(std::uint32_t cc) {
    return (cc >> 4) & 7u;
}

// Bytes of the register file a client may write: CC, AQA, ASQ, ACQ (INTMS/INTMC are for pin and
// single-message MSI only, which this controller does not offer).
bool writable(std::size_t offset) {
    return (offset >= reg::Cc::offset && offset < reg::Cc::offset + 4) ||
           (offset >= reg::Aqa::offset && offset < reg::Acq::offset + 8);
}

std::uint64_t parse_count(std::string_view text, std::string_view arg) {
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), value);
    if (ec != std::errc() || end != arg.data() + arg.size() || value == 0) {
        throw Error::invalid("parse fault", fmt::format("'{}'", text),
                             fmt::format("'{}' is not a positive whole number", arg));
    }
    return value;
}

}  // namespace

void parse_fault(std::string_view text, Faults& faults) {
    const std::size_t colon = text.find(':');
    const std::string_view kind = text.substr(0, colon);
    if (colon == std::string_view::npos) {
        throw Error::invalid("parse fault", fmt::format("'{}'", text),
                             "expected KIND:N, KIND one of delay, drop, corrupt, cfs, vanish");
    }
    const std::uint64_t n = parse_count(text, text.substr(colon + 1));
    if (kind == "delay") {
        faults.delay_us = n;
    } else if (kind == "drop") {
        faults.drop_io = n;
    } else if (kind == "corrupt") {
        faults.corrupt_io = n;
    } else if (kind == "cfs") {
        faults.fatal_after = n;
    } else if (kind == "vanish") {
        faults.vanish_after = n;
    } else {
        throw Error::invalid(
            "parse fault", fmt::format("'{}'", text),
            fmt::format("unknown kind '{}': delay, drop, corrupt, cfs, vanish", kind));
    }
}

NvmeController::NvmeController(PciFunction& function, NvmeOptions options)
    : function_(function), options_(std::move(options)) {
    const NvmeOptions& o = options_;
    // 512 queue pairs fit the doorbell page at stride 4; MSI-X has one vector per pair + admin.
    if (o.namespaces < 1 || o.namespaces > 1024 || o.queues < 1 || o.queues > 511 || o.lbads < 9 ||
        o.lbads > 12 || o.mdts < 1 || o.mdts > 10 || o.mqes < 1) {
        throw Error::invalid("create NVMe controller", function_.name(),
                             "namespaces 1..1024, queues 1..511, lbads 9..12, mdts 1..10");
    }
    namespace_blocks_ = (o.size / o.namespaces) >> o.lbads;
    if (namespace_blocks_ == 0) {
        throw Error::invalid("create NVMe controller", function_.name(),
                             fmt::format("{} bytes do not give each of {} namespaces one block",
                                         o.size, o.namespaces));
    }
    storage_ = map_disk(o.size, o.backing, "NVMe backing");

    // PCI identity: QEMU's NVMe ids (what the guest tests also meet), the NVMe class code.
    ConfigSpace& config = function_.config();
    config.set_identity(0x1b36, 0x0010, kNvmeClassCode, 2);
    config.add_bar(0, kBarSize, true);
    config.add_bar(kMsixBar, kMsixBarSize, true);
    config.add_msix(o.queues + 1, kMsixBar, kMsixTable, kMsixPba);
    config.add_pcie_endpoint();
    function_.set_bar_handlers(
        0, [this](std::uint64_t offset, unsigned width) { return register_read(offset, width); },
        [this](std::uint64_t offset, unsigned width, std::uint64_t value) {
            register_write(offset, width, value);
        });
    doorbells_ = function_.add_memory_area(0, kDoorbells, kBarSize - kDoorbells, true);

    // §3.1.3.1 CAP: MQES, CQR = 1 (contiguous queues), TO = 2 (1 s), DSTRD = 0, CSS bit 0 (NVM
    // command set), MPSMIN = MPSMAX = 0 (4 KiB pages). §3.1.3.2 VS: 1.4.
    const std::uint64_t cap = o.mqes | (1ull << 16) | (2ull << 24) | (1ull << 37);
    std::memcpy(regs_ + reg::Cap::offset, &cap, sizeof cap);
    set_reg32(reg::Vs::offset, 0x00010400);
    sqs_.resize(o.queues + 1);
    cqs_.resize(o.queues + 1);
    scratch_.resize(4096);
    function_.set_model(this);
    poller_ = std::thread([this] { poll_loop(); });
}

NvmeController::~NvmeController() {
    stop_.store(true);
    poller_.join();
    auto lock = function_.lock();
    function_.set_model(nullptr);
    function_.set_bar_handlers(0, {}, {});
    if (!options_.backing.empty()) {
        msync(storage_.get(), storage_.size(), MS_SYNC);
    }
}

// --- Registers (§3.1.3) -----------------------------------------------------------------------

std::uint32_t NvmeController::reg32(std::size_t offset) const noexcept {
    std::uint32_t value = 0;
    std::memcpy(&value, regs_ + offset, sizeof value);
    return value;
}
std::uint64_t NvmeController::reg64(std::size_t offset) const noexcept {
    std::uint64_t value = 0;
    std::memcpy(&value, regs_ + offset, sizeof value);
    return value;
}
void NvmeController::set_reg32(std::size_t offset, std::uint32_t value) noexcept {
    std::memcpy(regs_ + offset, &value, sizeof value);
}

std::uint64_t NvmeController::register_read(std::uint64_t offset, unsigned width) {
    std::uint64_t value = 0;
    if (offset + width <= sizeof regs_) {
        std::memcpy(&value, regs_ + offset, width);
    }
    return value;  // reserved and vendor-specific registers read 0
}

void NvmeController::register_write(std::uint64_t offset, unsigned width, std::uint64_t value) {
    if (offset + width > sizeof regs_) {
        return;
    }
    const std::uint32_t old_cc = reg32(reg::Cc::offset);
    for (unsigned i = 0; i < width; ++i) {
        if (writable(offset + i)) {
            regs_[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
        }
    }
    const std::uint32_t cc = reg32(reg::Cc::offset);
    if (cc == old_cc) {
        return;
    }
    if ((old_cc & kCcEn) == 0 && (cc & kCcEn) != 0) {
        enable();
    } else if ((old_cc & kCcEn) != 0 && (cc & kCcEn) == 0) {
        disable();
    }
    if ((cc & kCcEn) != 0 && cc_shn(cc) != 0 && cc_shn(old_cc) == 0) {
        // §3.6.1: shutdown notification. Nothing is cached, so once the backing file is written
        // back the shutdown is complete (CSTS.SHST = 10b); no more commands are processed.
        if (!options_.backing.empty()) {
            msync(storage_.get(), storage_.size(), MS_SYNC);
        }
        set_reg32(reg::Csts::offset, reg32(reg::Csts::offset) | kCstsShutdownComplete);
        halted_ = true;
    }
}

// §3.5.1 step 7 / §3.1.3.5: CC.EN 0 -> 1 takes the admin queues from AQA, ASQ and ACQ.
void NvmeController::enable() {
    disable();
    const std::uint32_t cc = reg32(reg::Cc::offset);
    const std::uint32_t aqa = reg32(reg::Aqa::offset);
    const std::uint64_t asq = reg64(reg::Asq::offset);
    const std::uint64_t acq = reg64(reg::Acq::offset);
    const std::uint32_t sq_entries = (aqa & 0xfff) + 1;
    const std::uint32_t cq_entries = ((aqa >> 16) & 0xfff) + 1;
    if (asq == 0 || acq == 0 || (asq & 0xfff) != 0 || (acq & 0xfff) != 0 || sq_entries < 2 ||
        cq_entries < 2 || cc_mps(cc) != 0 || cc_css(cc) != 0) {
        log_warn(
            "{}: CC.EN with a bad admin queue setup (AQA {:#x} ASQ {:#x} ACQ {:#x} CC {:#x}): "
            "controller fatal status",
            function_.name(), aqa, asq, acq, cc);
        set_reg32(reg::Csts::offset, kCstsCfs);
        halted_ = true;
        return;
    }
    sqs_[0] = Sq{true, asq, sq_entries, 0, 0};
    Cq admin;
    admin.live = true;
    admin.base = acq;
    admin.entries = cq_entries;
    admin.interrupts = true;  // §3.1.3.8: the admin CQ uses vector 0, interrupts enabled
    cqs_[0] = admin;
    ready_ = true;
    set_reg32(reg::Csts::offset, kCstsRdy);
}

// §3.7.2 Controller Reset: I/O queues are deleted, outstanding commands dropped, CSTS.RDY = 0.
void NvmeController::disable() {
    std::fill(sqs_.begin(), sqs_.end(), Sq{});
    std::fill(cqs_.begin(), cqs_.end(), Cq{});
    pending_.clear();
    held_events_.clear();
    granted_ = 0;
    ready_ = false;
    halted_ = false;
    std::memset(doorbells_.data(), 0, doorbells_.size());
    set_reg32(reg::Csts::offset, 0);
}

void NvmeController::reset() {
    disable();
    for (std::size_t at = reg::Intms::offset; at < sizeof regs_; ++at) {
        regs_[at] = 0;  // INTMS, INTMC, CC, CSTS, AQA, ASQ, ACQ back to 0; CAP and VS stay
    }
}

std::uint32_t NvmeController::queue_limit() const noexcept {
    return granted_ != 0 ? granted_ : options_.queues;
}

// --- The poller -------------------------------------------------------------------------------

std::uint32_t NvmeController::doorbell(std::size_t index) const noexcept {
    // §3.1.3.25/26 with CAP.DSTRD = 0: SQ y tail at 8y, CQ y head at 8y + 4. The client writes
    // them through its own mapping; an acquire load pairs with its barrier before the write, so
    // the entries it wrote before ringing are visible.
    const void* at = doorbells_.data() + 4 * index;
    return __atomic_load_n(static_cast<const std::uint32_t*>(at), __ATOMIC_ACQUIRE);
}

void NvmeController::poll_loop() {
    function_.run_poller(stop_, [this] { return poll_once(); });
}

bool NvmeController::poll_once() {
    const auto now = Clock::now();
    bool worked = false;
    if (!pending_.empty()) {
        const std::size_t before = pending_.size();
        post_due(now);
        worked = pending_.size() != before;
    }
    const auto due = now + std::chrono::microseconds(options_.faults.delay_us);
    for (std::size_t id = 0; id < sqs_.size() && ready_ && !halted_; ++id) {
        Sq& sq = sqs_[id];
        if (!sq.live) {
            continue;
        }
        const std::uint32_t tail = doorbell(2 * id);
        if (tail >= sq.entries) {
            continue;  // an invalid doorbell value (§4.1) is ignored until it is rewritten
        }
        for (unsigned budget = 64; budget != 0 && sq.live && sq.head != tail && ready_ && !halted_;
             --budget) {
            Cq& cq = cqs_[sq.cq];
            const std::uint32_t head = doorbell(2 * std::size_t{sq.cq} + 1);
            if (head < cq.entries) {
                cq.head = head;
            }
            // §4.1: a CQ is full when one slot is left; completions owed count as used.
            const std::uint32_t used = (cq.tail + cq.entries - cq.head) % cq.entries + cq.reserved;
            if (used + 1 >= cq.entries) {
                break;
            }
            const std::byte* slot =
                function_.dma(sq.base + std::uint64_t{sq.head} * sizeof(nvme::SubmissionEntry),
                              sizeof(nvme::SubmissionEntry), false);
            if (slot == nullptr) {
                break;  // the queue's memory is not mapped (yet, or any more): wait
            }
            nvme::SubmissionEntry command;
            std::memcpy(&command, slot, sizeof command);
            sq.head = (sq.head + 1) % sq.entries;
            worked = true;
            Completion done;
            done.due = due;
            done.cq = sq.cq;
            done.sq = static_cast<std::uint16_t>(id);
            done.command_id = command.command_id;
            if (id == 0) {
                ++admin_commands_;
                if (execute_admin(command, done)) {
                    complete(done);
                }
                continue;
            }
            const std::uint64_t n = ++io_commands_;
            const Faults& f = options_.faults;
            done.status = execute_io(command);
            if (f.corrupt_io == n) {
                done.command_id = static_cast<std::uint16_t>(~command.command_id);
            }
            if (f.drop_io != n) {
                complete(done);
            } else {
                log_info("{}: fault: I/O command {} (id {}) is never completed", function_.name(),
                         n, command.command_id);
            }
            if (f.fatal_after == n) {
                log_info("{}: fault: controller fatal status after {} I/O commands",
                         function_.name(), n);
                set_reg32(reg::Csts::offset, reg32(reg::Csts::offset) | kCstsCfs);
                halted_ = true;
            }
            if (f.vanish_after == n) {
                log_info("{}: fault: vanishing after {} I/O commands", function_.name(), n);
                halted_ = true;
                function_.request_disconnect();
            }
        }
    }
    raise_interrupts();
    return worked;
}

void NvmeController::complete(const Completion& completion) {
    if (options_.faults.delay_us == 0 && pending_.empty() && post(completion)) {
        return;
    }
    pending_.push_back(completion);
    ++cqs_[completion.cq].reserved;
}

void NvmeController::post_due(Clock::time_point now) {
    while (!pending_.empty() && pending_.front().due <= now) {
        const Completion& c = pending_.front();
        if (!post(c)) {
            return;  // the CQ's memory is not mapped: try again later
        }
        Cq& cq = cqs_[c.cq];
        if (cq.reserved != 0) {
            --cq.reserved;
        }
        pending_.pop_front();
    }
}

// §4.6: the entry is written, then its status word with the phase tag last, so a client that
// sees the new phase sees the whole entry.
bool NvmeController::post(const Completion& c) {
    Cq& cq = cqs_[c.cq];
    if (!cq.live) {
        return true;  // the queue was deleted (or the controller reset): nothing to post to
    }
    std::byte* slot = function_.dma(cq.base + std::uint64_t{cq.tail} * 16, 16, true);
    if (slot == nullptr) {
        return false;
    }
    const Sq& sq = sqs_[c.sq];
    nvme::CompletionEntry entry{};
    entry.dw0 = c.dw0;
    entry.sq_head = static_cast<std::uint16_t>(sq.live ? sq.head : 0);
    entry.sq_id = c.sq;
    entry.command_id = c.command_id;
    std::memcpy(slot, &entry, offsetof(nvme::CompletionEntry, status));
    // §4.6.1: status field bits 15:1 (DNR, bit 14 of the field, on every error: retrying an
    // emulated command gives the same answer), phase tag bit 0.
    std::uint32_t field = c.status;
    if (field != 0) {
        field |= 1u << 14;
    }
    const auto status = static_cast<std::uint16_t>((field << 1) | cq.phase);
    void* status_at = slot + offsetof(nvme::CompletionEntry, status);
    __atomic_store_n(static_cast<std::uint16_t*>(status_at), status, __ATOMIC_RELEASE);
    cq.tail = (cq.tail + 1) % cq.entries;
    if (cq.tail == 0) {
        cq.phase ^= 1u;  // §4.6: the phase inverts on each pass through the queue
    }
    cq.raise = true;
    return true;
}

void NvmeController::raise_interrupts() {
    for (Cq& cq : cqs_) {
        if (cq.raise) {
            cq.raise = false;
            if (cq.interrupts) {
                function_.raise_msix(cq.vector);  // §3.1.3.5 MSI-X, one message per pass
            }
        }
    }
}

}  // namespace ring3::emu
