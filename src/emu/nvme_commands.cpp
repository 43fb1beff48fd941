// emu::NvmeController's commands: the admin set the driver uses (NVMe Base 2.0 §5) and the NVM
// command set's Read, Write, Flush, Write Zeroes and Dataset Management (NVM Command Set 1.0 §3),
// with data pointers as PRPs (§4.3.1) or SGL data blocks (§4.3.2). Everything a command says is
// checked before use; a status (SCT << 8 | SC, §4.6.1.2) says what was wrong.
#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "ring3/core/log.hpp"
#include "ring3/emu/nvme.hpp"

namespace ring3::emu {
namespace {

using nvme::SubmissionEntry;
constexpr std::uint64_t kPage = 4096;

// §4.6.1.2 status values (SCT << 8 | SC).
namespace sc {
constexpr std::uint16_t success = 0x0000;
constexpr std::uint16_t invalid_opcode = 0x0001;
constexpr std::uint16_t invalid_field = 0x0002;
constexpr std::uint16_t data_transfer_error = 0x0004;
constexpr std::uint16_t invalid_namespace = 0x000b;
constexpr std::uint16_t sgl_length_invalid = 0x000f;
constexpr std::uint16_t sgl_descriptor_type_invalid = 0x0011;
constexpr std::uint16_t prp_offset_invalid = 0x0013;
constexpr std::uint16_t lba_out_of_range = 0x0080;
constexpr std::uint16_t completion_queue_invalid = 0x0100;
constexpr std::uint16_t invalid_queue_id = 0x0101;
constexpr std::uint16_t invalid_queue_size = 0x0102;
constexpr std::uint16_t async_event_limit = 0x0105;
constexpr std::uint16_t invalid_interrupt_vector = 0x0108;
constexpr std::uint16_t invalid_log_page = 0x0109;
constexpr std::uint16_t invalid_queue_deletion = 0x010c;
}  // namespace sc

constexpr unsigned kAbortLimit = 4;       // ACL + 1
constexpr unsigned kAsyncEventLimit = 4;  // AERL + 1
constexpr unsigned kMaxSglDescriptors = 256;

template <class T>
void put(std::vector<std::byte>& page, std::size_t at, T value) {
    std::memcpy(page.data() + at, &value, sizeof value);
}
void put_text(std::vector<std::byte>& page, std::size_t at, std::size_t width,
              std::string_view text) {
    // Identify strings are ASCII, left-justified and padded with spaces (§5.17.2.1).
    std::memset(page.data() + at, ' ', width);
    std::memcpy(page.data() + at, text.data(), std::min(width, text.size()));
}

}  // namespace

// --- Admin commands (§5) ----------------------------------------------------------------------

bool NvmeController::execute_admin(const SubmissionEntry& c, Completion& done) {
    // NVMe over PCIe: admin commands carry PRPs only (§4.3, "SGLs shall not be used for Admin").
    if ((c.flags >> 6) != 0) {
        done.status = sc::invalid_field;
        return true;
    }
    switch (c.opcode) {
        case nvme::admin::identify:
            done.status = identify(c);
            return true;
        case nvme::admin::get_log_page:
            done.status = get_log_page(c);
            return true;
        case nvme::admin::create_io_cq:
            done.status = create_cq(c);
            return true;
        case nvme::admin::create_io_sq:
            done.status = create_sq(c);
            return true;
        case nvme::admin::delete_io_sq:
            done.status = delete_sq(c);
            return true;
        case nvme::admin::delete_io_cq:
            done.status = delete_cq(c);
            return true;
        case nvme::admin::set_features:
            done.status = set_features(c, done.dw0);
            return true;
        case nvme::admin::get_features:
            done.status = get_features(c, done.dw0);
            return true;
        case nvme::admin::abort:
            // §5.1: dword 0 bit 0 set: the command was not aborted (it completes by itself).
            done.dw0 = 1;
            return true;
        case nvme::admin::async_event_request:
            // §5.2: completes when an event occurs; this controller raises none, so it is held
            // (and dropped by a reset), up to AERL + 1 at a time.
            if (held_events_.size() >= kAsyncEventLimit) {
                done.status = sc::async_event_limit;
                return true;
            }
            held_events_.push_back(c.command_id);
            return false;
        default:
            done.status = sc::invalid_opcode;
            return true;
    }
}

std::uint16_t NvmeController::identify(const SubmissionEntry& c) {
    std::fill(scratch_.begin(), scratch_.end(), std::byte{0});
    std::vector<std::byte>& page = scratch_;
    const unsigned namespaces = options_.namespaces;
    switch (c.cdw10 & 0xff) {
        case nvme::cns::controller: {             // §5.17.2.1, Figure 275
            put(page, 0, std::uint16_t{0x1b36});  // VID
            put(page, 2, std::uint16_t{0x1b36});  // SSVID
            put_text(page, 4, 20, "RING3EMU0001");
            put_text(page, 24, 40, "ring3 emulated NVMe controller");
            put_text(page, 64, 8, "0.1");
            put(page, 72, std::uint8_t{6});                      // RAB
            put(page, 77, options_.mdts);                        // MDTS, in CAP.MPSMIN pages
            put(page, 78, std::uint16_t{1});                     // CNTLID
            put(page, 80, std::uint32_t{0x00010400});            // VER 1.4
            put(page, 111, std::uint8_t{1});                     // CNTRLTYPE: I/O controller
            put(page, 258, std::uint8_t{kAbortLimit - 1});       // ACL
            put(page, 259, std::uint8_t{kAsyncEventLimit - 1});  // AERL
            put(page, 260, std::uint8_t{1 << 1});                // FRMW: one slot
            put(page, 512, std::uint8_t{0x66});                  // SQES: 64 bytes
            put(page, 513, std::uint8_t{0x44});                  // CQES: 16 bytes
            put(page, 516, std::uint32_t{namespaces});           // NN
            // ONCS: Dataset Management (bit 2), Write Zeroes (bit 3).
            put(page, 520, std::uint16_t{(1u << 2) | (1u << 3)});
            put(page, 536, std::uint32_t{1});  // SGLS 01b: SGLs supported, no alignment rule
            put_text(page, 768, 256, "nqn.2026-11.dev.ring3:emu-nvme");
            break;
        }
        case nvme::cns::namespace_: {  // NVM Command Set 1.0 §4.1.5.1, Figure 97
            if (c.nsid == 0 || (c.nsid > namespaces && c.nsid != 0xffffffff)) {
                return sc::invalid_namespace;
            }
            if (c.nsid != 0xffffffff) {
                put(page, 0, namespace_blocks_);   // NSZE
                put(page, 8, namespace_blocks_);   // NCAP
                put(page, 16, namespace_blocks_);  // NUSE
            }
            // NLBAF = 0 (one format), FLBAS = 0; LBA format 0: no metadata, LBADS.
            put(page, 128, std::uint32_t{options_.lbads} << 16);
            break;
        }
        case nvme::cns::active_namespaces: {  // §5.17.2.2: ids above NSID, ascending
            if (c.nsid >= 0xfffffffe) {
                return sc::invalid_namespace;
            }
            std::size_t at = 0;
            for (std::uint32_t id = c.nsid + 1; id <= namespaces && at < 4096; ++id, at += 4) {
                put(page, at, id);
            }
            break;
        }
        case nvme::cns::namespace_descriptors: {  // §5.17.2.3: one Command Set descriptor
            if (c.nsid == 0 || c.nsid > namespaces) {
                return sc::invalid_namespace;
            }
            put(page, 0, nvme::descriptor::command_set);
            put(page, 1, std::uint8_t{1});
            put(page, 4, nvme::csi::nvm);
            break;
        }
        default:
            return sc::invalid_field;
    }
    return transfer(c, page, true);
}

// §5.16: the Error Information, SMART / Health and Firmware Slot logs, all zeros here (no
// errors logged, no warnings, nothing measured).
std::uint16_t NvmeController::get_log_page(const SubmissionEntry& c) {
    const std::uint8_t id = static_cast<std::uint8_t>(c.cdw10 & 0xff);
    if (id != nvme::log_page::error_information && id != nvme::log_page::smart_health &&
        id != 0x03) {
        return sc::invalid_log_page;
    }
    const std::uint64_t dwords = ((c.cdw10 >> 16) | (std::uint64_t{c.cdw11 & 0xffff} << 16)) + 1;
    const std::uint64_t bytes = dwords * 4;
    if (bytes > (kPage << options_.mdts)) {
        return sc::invalid_field;
    }
    std::vector<std::byte> zeros(bytes);
    return transfer(c, zeros, true);
}

// §5.4 Create I/O Completion Queue.
std::uint16_t NvmeController::create_cq(const SubmissionEntry& c) {
    const std::uint32_t id = c.cdw10 & 0xffff;
    const std::uint32_t entries = (c.cdw10 >> 16) + 1;
    const unsigned vector = c.cdw11 >> 16;
    if (id == 0 || id > queue_limit() || cqs_[id].live) {
        return sc::invalid_queue_id;
    }
    if (entries < 2 || entries > options_.mqes + 1u) {
        return sc::invalid_queue_size;
    }
    if ((c.cdw11 & 1u) == 0 || (c.dptr[0] & (kPage - 1)) != 0 || c.dptr[0] == 0) {
        return sc::invalid_field;  // CAP.CQR = 1: physically contiguous, page aligned
    }
    if (vector >= function_.config().msix_vectors()) {
        return sc::invalid_interrupt_vector;
    }
    Cq cq;
    cq.live = true;
    cq.base = c.dptr[0];
    cq.entries = entries;
    cq.interrupts = (c.cdw11 & 2u) != 0;  // IEN
    cq.vector = vector;
    cqs_[id] = cq;
    return sc::success;
}

// §5.5 Create I/O Submission Queue.
std::uint16_t NvmeController::create_sq(const SubmissionEntry& c) {
    const std::uint32_t id = c.cdw10 & 0xffff;
    const std::uint32_t entries = (c.cdw10 >> 16) + 1;
    const std::uint32_t cq = c.cdw11 >> 16;
    if (id == 0 || id > queue_limit() || sqs_[id].live) {
        return sc::invalid_queue_id;
    }
    if (entries < 2 || entries > options_.mqes + 1u) {
        return sc::invalid_queue_size;
    }
    if ((c.cdw11 & 1u) == 0 || (c.dptr[0] & (kPage - 1)) != 0 || c.dptr[0] == 0) {
        return sc::invalid_field;
    }
    if (cq == 0 || cq >= cqs_.size() || !cqs_[cq].live) {
        return sc::completion_queue_invalid;
    }
    sqs_[id] = Sq{true, c.dptr[0], entries, 0, static_cast<std::uint16_t>(cq)};
    // The tail doorbell of a new queue starts at 0 (§3.1.3.25).
    std::memset(doorbells_.data() + 8 * std::size_t{id}, 0, 4);
    return sc::success;
}

// §5.7 Delete I/O Submission Queue: its outstanding commands are gone with it.
std::uint16_t NvmeController::delete_sq(const SubmissionEntry& c) {
    const std::uint32_t id = c.cdw10 & 0xffff;
    if (id == 0 || id >= sqs_.size() || !sqs_[id].live) {
        return sc::invalid_queue_id;
    }
    sqs_[id] = Sq{};
    return sc::success;
}

// §5.6 Delete I/O Completion Queue: refused while an SQ still uses it.
std::uint16_t NvmeController::delete_cq(const SubmissionEntry& c) {
    const std::uint32_t id = c.cdw10 & 0xffff;
    if (id == 0 || id >= cqs_.size() || !cqs_[id].live) {
        return sc::invalid_queue_id;
    }
    for (const Sq& sq : sqs_) {
        if (sq.live && sq.cq == id) {
            return sc::invalid_queue_deletion;
        }
    }
    cqs_[id] = Cq{};
    std::memset(doorbells_.data() + 8 * std::size_t{id} + 4, 0, 4);
    return sc::success;
}

// §5.27 Set Features: Number of Queues (§5.27.1.5) is granted up to what the controller has,
// both counts 0-based; others are accepted and remembered where the driver reads them back.
std::uint16_t NvmeController::set_features(const SubmissionEntry& c, std::uint32_t& dw0) {
    switch (c.cdw10 & 0xff) {
        case nvme::feature::number_of_queues: {
            const std::uint32_t sqs = (c.cdw11 & 0xffff) + 1;
            const std::uint32_t cqs = (c.cdw11 >> 16) + 1;
            if (sqs == 0x10000 || cqs == 0x10000) {
                return sc::invalid_field;  // 65535 (0-based) is reserved
            }
            granted_ = std::min<std::uint32_t>({sqs, cqs, options_.queues});
            dw0 = ((granted_ - 1) << 16) | (granted_ - 1);
            return sc::success;
        }
        case nvme::feature::async_event_configuration:
            async_event_config_ = c.cdw11;
            return sc::success;
        case 0x01:  // Arbitration
        case 0x02:  // Power Management
        case 0x04:  // Temperature Threshold
        case 0x05:  // Error Recovery
        case nvme::feature::interrupt_coalescing:
        case 0x09:  // Interrupt Vector Configuration
        case 0x0a:  // Write Atomicity Normal
            return sc::success;
        default:
            return sc::invalid_field;  // incl. Volatile Write Cache: there is none (VWC = 0)
    }
}

std::uint16_t NvmeController::get_features(const SubmissionEntry& c, std::uint32_t& dw0) {
    switch (c.cdw10 & 0xff) {
        case nvme::feature::number_of_queues: {
            const std::uint32_t n = queue_limit();
            dw0 = ((n - 1) << 16) | (n - 1);
            return sc::success;
        }
        case nvme::feature::async_event_configuration:
            dw0 = async_event_config_;
            return sc::success;
        case 0x01:
        case 0x02:
        case 0x04:
        case 0x05:
        case nvme::feature::interrupt_coalescing:
        case 0x09:
        case 0x0a:
            dw0 = 0;
            return sc::success;
        default:
            return sc::invalid_field;
    }
}

// --- Data pointers (§4.3) ---------------------------------------------------------------------

std::uint16_t NvmeController::data_runs(const SubmissionEntry& c, std::uint64_t bytes,
                                        std::vector<Run>& runs) {
    runs.clear();
    const unsigned psdt = c.flags >> 6;
    if (psdt == 1) {
        // §4.3.2: one SGL descriptor in the command: a Data Block, or a Last Segment naming a
        // list of Data Blocks in memory. Descriptors may describe more than the transfer.
        nvme::SglDescriptor sgl;
        std::memcpy(&sgl, c.dptr, sizeof sgl);
        std::vector<nvme::SglDescriptor> blocks;
        if (sgl.type == 0x00) {
            blocks.push_back(sgl);
        } else if (sgl.type == 0x30) {
            const std::uint64_t count = sgl.length / sizeof sgl;
            if (sgl.length % sizeof sgl != 0 || count == 0 || count > kMaxSglDescriptors) {
                return sc::sgl_length_invalid;
            }
            const std::byte* list = function_.dma(sgl.address, sgl.length, false);
            if (list == nullptr) {
                return sc::data_transfer_error;
            }
            blocks.resize(count);
            std::memcpy(blocks.data(), list, count * sizeof sgl);
        } else {
            return sc::sgl_descriptor_type_invalid;
        }
        std::uint64_t left = bytes;
        for (const nvme::SglDescriptor& block : blocks) {
            if (block.type != 0x00) {
                return sc::sgl_descriptor_type_invalid;
            }
            if (left == 0) {
                break;
            }
            const std::uint64_t take = std::min<std::uint64_t>(left, block.length);
            if (take != 0) {
                runs.push_back({block.address, take});
            }
            left -= take;
        }
        return left == 0 ? sc::success : sc::sgl_length_invalid;
    }
    if (psdt != 0) {
        return sc::invalid_field;  // SGL with a metadata SGL (10b) or reserved (11b)
    }
    // §4.3.1: PRP1 may point anywhere dword aligned in a page; PRP2 is the second page when two
    // suffice, else a PRP list whose entries are page addresses, chained through the last entry
    // of each list page.
    const std::uint64_t prp1 = c.dptr[0];
    if ((prp1 & 3u) != 0) {
        return sc::prp_offset_invalid;
    }
    const std::uint64_t first = std::min(bytes, kPage - (prp1 & (kPage - 1)));
    runs.push_back({prp1, first});
    std::uint64_t left = bytes - first;
    if (left == 0) {
        return sc::success;
    }
    if (left <= kPage) {
        if ((c.dptr[1] & (kPage - 1)) != 0) {
            return sc::prp_offset_invalid;
        }
        runs.push_back({c.dptr[1], left});
        return sc::success;
    }
    std::uint64_t list = c.dptr[1];
    while (left != 0) {
        const std::uint64_t room = (kPage - (list & (kPage - 1))) / 8;
        if ((list & 7u) != 0 || room < 2) {
            return sc::prp_offset_invalid;  // a list must hold an entry and a chain pointer
        }
        const std::uint64_t needed = (left + kPage - 1) / kPage;
        const std::uint64_t here = needed <= room ? needed : room - 1;
        const std::byte* entries = function_.dma(list, (here + (needed > room ? 1 : 0)) * 8, false);
        if (entries == nullptr) {
            return sc::data_transfer_error;
        }
        for (std::uint64_t i = 0; i < here; ++i) {
            std::uint64_t page = 0;
            std::memcpy(&page, entries + 8 * i, sizeof page);
            if ((page & (kPage - 1)) != 0) {
                return sc::prp_offset_invalid;
            }
            const std::uint64_t run = std::min(left, kPage);
            runs.push_back({page, run});
            left -= run;
        }
        if (left != 0) {
            std::memcpy(&list, entries + 8 * here, sizeof list);
        }
    }
    return sc::success;
}

std::uint16_t NvmeController::transfer(const SubmissionEntry& c, std::span<std::byte> local,
                                       bool to_client) {
    if (const std::uint16_t status = data_runs(c, local.size(), runs_); status != sc::success) {
        return status;
    }
    std::size_t at = 0;
    for (const Run& run : runs_) {
        std::byte* memory = function_.dma(run.iova, run.length, to_client);
        if (memory == nullptr) {
            return sc::data_transfer_error;
        }
        if (to_client) {
            std::memcpy(memory, local.data() + at, run.length);
        } else {
            std::memcpy(local.data() + at, memory, run.length);
        }
        at += run.length;
    }
    return sc::success;
}

// --- I/O commands (NVM Command Set 1.0 §3) ----------------------------------------------------

std::uint16_t NvmeController::execute_io(const SubmissionEntry& c) {
    if (c.nsid == 0 || c.nsid > options_.namespaces) {
        return sc::invalid_namespace;
    }
    const unsigned shift = options_.lbads;
    std::byte* ns = storage_.data() + (std::uint64_t{c.nsid - 1} * namespace_blocks_ << shift);
    const std::uint64_t lba = c.cdw10 | (std::uint64_t{c.cdw11} << 32);
    const std::uint64_t blocks = (c.cdw12 & 0xffff) + 1ull;
    const auto in_range = [&] {
        return lba < namespace_blocks_ && blocks <= namespace_blocks_ - lba;
    };
    switch (c.opcode) {
        case nvme::io::flush:  // §3.2.1 (nothing is cached; a file is written back)
            if (!options_.backing.empty()) {
                msync(storage_.get(), storage_.size(), MS_SYNC);
            }
            return sc::success;
        case nvme::io::dataset_management:  // §3.2.3: hints only
            return sc::success;
        case nvme::io::write_zeroes:  // §3.2.8
            if (!in_range()) {
                return sc::lba_out_of_range;
            }
            std::memset(ns + (lba << shift), 0, blocks << shift);
            return sc::success;
        case nvme::io::read:   // §3.2.4
        case nvme::io::write:  // §3.2.6
            break;
        default:
            return sc::invalid_opcode;
    }
    const std::uint64_t bytes = blocks << shift;
    if (bytes > (kPage << options_.mdts)) {
        return sc::invalid_field;  // larger than MDTS (§5.17.2.1)
    }
    if (!in_range()) {
        return sc::lba_out_of_range;
    }
    return transfer(c, {ns + (lba << shift), bytes}, c.opcode == nvme::io::read);
}

}  // namespace ring3::emu
