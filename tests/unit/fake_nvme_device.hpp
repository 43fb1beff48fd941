// An NVMe controller model over testing::FakeDevice (NVM Express Base Specification 2.0, NVM
// Command Set Specification 1.0; sections cited where a rule is implemented). BAR0 is not
// mappable, so every register access and every doorbell write reaches the model through the
// FakeDevice's region hooks: CC.EN enables and resets the controller at once, a submission queue
// tail doorbell makes the model execute that queue's new commands synchronously (or later, on
// demand), against an in-memory namespace, walking PRP1/PRP2/PRP lists and SGL data block
// descriptors through the FakeDevice's IOVA space. Each I/O command's data pointer is recorded.
// Faults on demand: commands held forever (never completed), completion entries written raw
// (garbage command ids, SQ heads), Abort that succeeds or not, MDTS and SGL support.
#pragma once

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "fake_device.hpp"
#include "ring3/nvme/registers.hpp"
#include "ring3/nvme/spec.hpp"

namespace ring3::nvme::testing {

struct FakeNvmeOptions {
    std::uint8_t mdts = 5;     // 2^5 x 4 KiB = 128 KiB; 0: no limit
    bool sgl = true;           // SGLS bits 1:0 = 01b (§5.17.2.1: SGLs supported)
    std::uint16_t mqes = 255;  // CAP.MQES, 0-based
    std::uint16_t max_io_queues = 4;
    std::uint64_t blocks = 4096;
    std::uint8_t lbads = 9;  // 512-byte blocks
    bool abort_succeeds = false;
    std::size_t bar_size = 0x4000;
};

// Status field values (§4.6.1.2), as SCT << 8 | SC.
namespace status {
inline constexpr std::uint16_t success = 0x0000;
inline constexpr std::uint16_t invalid_opcode = 0x0001;
inline constexpr std::uint16_t invalid_field = 0x0002;
inline constexpr std::uint16_t data_transfer_error = 0x0004;
inline constexpr std::uint16_t abort_requested = 0x0007;
inline constexpr std::uint16_t sgl_length_invalid = 0x000f;
inline constexpr std::uint16_t prp_offset_invalid = 0x0013;
inline constexpr std::uint16_t lba_out_of_range = 0x0080;
inline constexpr std::uint16_t completion_queue_invalid = 0x0100;
inline constexpr std::uint16_t invalid_queue_id = 0x0101;
inline constexpr std::uint16_t invalid_queue_size = 0x0102;
inline constexpr std::uint16_t invalid_queue_deletion = 0x010c;
}  // namespace status

class FakeNvme {
  public:
    using Options = FakeNvmeOptions;
    static constexpr std::uint64_t kPage = 4096;

    // How one I/O command described its data (§4.3).
    enum class Form { none, prp, prp_list, sgl };
    struct Transfer {
        std::uint16_t sq_id = 0;
        std::uint16_t command_id = 0;
        std::uint8_t opcode = 0;
        std::uint64_t lba = 0;
        std::uint32_t blocks = 0;
        Form form = Form::none;
        std::uint64_t prp1 = 0;
        std::uint64_t prp2 = 0;
        std::vector<std::uint64_t> prp_list;  // the list entries read, in order
        std::uint64_t sgl_address = 0;
        std::uint32_t sgl_length = 0;
        std::uint16_t status = 0;
    };
    struct Created {
        std::uint8_t opcode = 0;  // create_io_cq or create_io_sq
        std::uint16_t id = 0;
        std::uint32_t entries = 0;
        std::uint64_t address = 0;
        std::uint32_t cdw11 = 0;
        std::uint16_t status = 0;
    };

    explicit FakeNvme(const Options& options = Options()) : options_(options) {
        disk.resize(options.blocks << options.lbads);
        device.set_ids(0x1b36, 0x0010, 0x010802);
        device.set_irq_count(IrqKind::msix, 8);
        device.add_bar(0, options.bar_size, false);
        // §3.1.3.1 CAP: MQES, CQR = 1, TO = 1 (500 ms), DSTRD = 0, CSS bit 0 (NVM), MPSMIN = 0.
        const std::uint64_t cap = options.mqes | (1ull << 16) | (1ull << 24) | (1ull << 37);
        device.poke<std::uint64_t>(0, reg::Cap::offset, cap);
        device.poke<std::uint32_t>(0, reg::Vs::offset, 0x00020000);  // §3.1.3.2: 2.0
        device.on_write(0, [this](std::uint64_t offset, unsigned width, std::uint64_t value) {
            written(offset, width, value);
        });
    }

    // The device; take() hands ownership to a driver (destroy the driver before the model).
    std::unique_ptr<ring3::testing::FakeDevice> owned =
        std::make_unique<ring3::testing::FakeDevice>("fake:nvme");
    ring3::testing::FakeDevice& device = *owned;
    std::unique_ptr<Device> take() { return std::move(owned); }

    std::vector<std::byte> disk;
    bool serve = true;  // execute a queue's commands when its tail doorbell is written
    // A command for which this returns true is fetched and never completed (until a reset or
    // a successful Abort).
    std::function<bool(std::uint16_t sq_id, const SubmissionEntry&)> hold;
    std::optional<std::uint16_t> next_sq_head;  // replaces the SQ head of the next completion

    // What the driver did.
    std::vector<std::pair<std::uint16_t, SubmissionEntry>> admin_commands;
    std::vector<Transfer> transfers;
    std::vector<Created> created;
    std::vector<std::pair<std::uint16_t, std::uint16_t>> held;  // (SQ id, command id)
    unsigned enables = 0;
    unsigned disables = 0;  // CC.EN 1 -> 0
    unsigned shutdowns = 0;
    std::uint32_t requested_queues = 0;  // NSQR + 1 of the last Number of Queues

    bool io_cq_exists(std::uint16_t id) const { return cqs_.count(id) != 0 && id != 0; }
    bool io_sq_exists(std::uint16_t id) const { return sqs_.count(id) != 0 && id != 0; }
    std::uint32_t max_transfer() const {
        return options_.mdts == 0 ? 0 : static_cast<std::uint32_t>(kPage << options_.mdts);
    }

    // Executes the new commands of SQ `id` (what a tail doorbell write does when `serve`).
    void process(std::uint16_t id) {
        auto it = sqs_.find(id);
        if (it == sqs_.end()) {
            return;
        }
        Sq& sq = it->second;
        while (sq.head != sq.tail) {
            auto* slot = device.dma().dma(sq.address + std::uint64_t{sq.head} * 64, 64);
            sq.head = (sq.head + 1) % sq.entries;
            if (slot == nullptr) {
                continue;
            }
            SubmissionEntry command;
            std::memcpy(&command, slot, sizeof command);
            if (hold && hold(id, command)) {
                held.emplace_back(id, command.command_id);
                continue;
            }
            std::uint32_t dw0 = 0;
            const std::uint16_t result =
                id == 0 ? execute_admin(command, dw0) : execute_io(id, command);
            if (id == 0 && command.opcode == admin::async_event_request) {
                continue;  // §5.2: completes only when an event occurs (none here)
            }
            // Process may have been re-entered (Abort completing a held command) or the queue
            // deleted by this very command: look the SQ up again.
            if (sqs_.count(id) == 0) {
                return;
            }
            post(sq.cq_id, id, command.command_id, result, dw0);
        }
    }

    // Writes a raw completion entry into CQ `cq_id` with the right phase tag, as a misbehaving
    // controller might (§4.6: the entry's fields are whatever it wrote).
    void post_raw(std::uint16_t cq_id, std::uint16_t command_id, std::uint16_t sq_head,
                  std::uint16_t sq_id, std::uint16_t code = 0, std::uint32_t dw0 = 0) {
        auto it = cqs_.find(cq_id);
        if (it == cqs_.end()) {
            return;
        }
        Cq& cq = it->second;
        CompletionEntry entry{};
        entry.dw0 = dw0;
        entry.sq_head = sq_head;
        entry.sq_id = sq_id;
        entry.command_id = command_id;
        entry.status = static_cast<std::uint16_t>((code << 1) | cq.phase);
        if (auto* slot = device.dma().dma(cq.address + std::uint64_t{cq.tail} * 16, 16)) {
            std::memcpy(slot, &entry, sizeof entry);
        }
        cq.tail = (cq.tail + 1) % cq.entries;
        if (cq.tail == 0) {
            cq.phase ^= 1u;  // §4.6: the phase tag inverts on each pass through the queue
        }
        if (cq.interrupts) {
            device.raise(IrqKind::msix, cq.vector);
        }
    }

    // Completes a held command with `code` (e.g. to release it late).
    void complete_held(std::size_t index, std::uint16_t code = status::success) {
        const auto [sq_id, cid] = held.at(index);
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(index));
        post(sqs_.at(sq_id).cq_id, sq_id, cid, code, 0);
    }

  private:
    struct Sq {
        std::uint64_t address = 0;
        std::uint32_t entries = 0;
        std::uint16_t cq_id = 0;
        std::uint32_t head = 0;
        std::uint32_t tail = 0;
    };
    struct Cq {
        std::uint64_t address = 0;
        std::uint32_t entries = 0;
        std::uint32_t tail = 0;
        std::uint16_t phase = 1;
        bool interrupts = false;
        unsigned vector = 0;
    };

    void post(std::uint16_t cq_id, std::uint16_t sq_id, std::uint16_t cid, std::uint16_t code,
              std::uint32_t dw0) {
        std::uint16_t head = static_cast<std::uint16_t>(sqs_.count(sq_id) ? sqs_[sq_id].head : 0);
        if (next_sq_head) {
            head = *next_sq_head;
            next_sq_head.reset();
        }
        post_raw(cq_id, cid, head, sq_id, code, dw0);
    }

    template <typename T>
    T reg(std::uint64_t offset) {
        return device.peek<T>(0, offset);
    }

    void written(std::uint64_t offset, unsigned width, std::uint64_t value) {
        if (offset >= reg::kDoorbellBase) {
            // §3.1.3.25 (stride 4 bytes, CAP.DSTRD = 0): SQ y tail at 0x1000 + 8y, CQ y head
            // at 0x1000 + 8y + 4.
            const std::uint64_t index = (offset - reg::kDoorbellBase) / 4;
            const auto id = static_cast<std::uint16_t>(index / 2);
            if (width != 4 || index % 2 != 0) {
                return;  // CQ head: the model never runs out of CQ room in these tests
            }
            auto it = sqs_.find(id);
            if (it != sqs_.end() && value < it->second.entries) {
                it->second.tail = static_cast<std::uint32_t>(value);
                if (serve) {
                    process(id);
                }
            }
            return;
        }
        if (offset == reg::Cc::offset) {
            const auto cc = static_cast<std::uint32_t>(value);
            const bool enabled = (reg<std::uint32_t>(reg::Csts::offset) & 1u) != 0;
            if ((cc & 1u) != 0 && !enabled) {
                enable();
            } else if ((cc & 1u) == 0 && enabled) {
                // §3.7.2 Controller Reset: CC.EN 1 -> 0 deletes every I/O queue and drops what
                // was in flight; CSTS.RDY follows at once.
                ++disables;
                clear();
                device.poke<std::uint32_t>(0, reg::Csts::offset, 0);
            }
            if (((cc >> 14) & 3u) == 1u && (cc & 1u) != 0) {
                // §3.6.1: a normal shutdown completes at once: CSTS.SHST = 10b.
                ++shutdowns;
                device.poke<std::uint32_t>(0, reg::Csts::offset, 1u | (2u << 2));
            }
        }
    }

    // §3.5.1 step 7: CC.EN 0 -> 1 takes the admin queue from AQA/ASQ/ACQ; CSTS.RDY = 1.
    void enable() {
        ++enables;
        clear();
        const auto aqa = reg<std::uint32_t>(reg::Aqa::offset);
        Sq asq;
        asq.address = reg<std::uint64_t>(reg::Asq::offset);
        asq.entries = (aqa & 0xfff) + 1;
        Cq acq;
        acq.address = reg<std::uint64_t>(reg::Acq::offset);
        acq.entries = ((aqa >> 16) & 0xfff) + 1;
        sqs_[0] = asq;
        cqs_[0] = acq;
        device.poke<std::uint32_t>(0, reg::Csts::offset, 1);
    }
    void clear() {
        sqs_.clear();
        cqs_.clear();
        held.clear();
        granted_ = 0;
    }

    std::uint16_t execute_admin(const SubmissionEntry& c, std::uint32_t& dw0) {
        admin_commands.emplace_back(0, c);
        switch (c.opcode) {
            case admin::identify:
                return identify(c);
            case admin::set_features:
                if ((c.cdw10 & 0xff) == feature::number_of_queues) {
                    // §5.27.1.5: grants up to what the controller has, both 0-based.
                    requested_queues = (c.cdw11 & 0xffff) + 1;
                    granted_ = std::min<std::uint32_t>(requested_queues, options_.max_io_queues);
                    dw0 = ((granted_ - 1) << 16) | (granted_ - 1);
                }
                return status::success;
            case admin::get_features:
            case admin::async_event_request:
                return status::success;
            case admin::get_log_page: {
                const std::uint32_t bytes = ((c.cdw10 >> 16) + 1) * 4;
                if (auto* page =
                        device.dma().dma(c.dptr[0], std::min<std::uint32_t>(bytes, 4096))) {
                    std::memset(page, 0, std::min<std::uint32_t>(bytes, 4096));
                }
                return status::success;
            }
            case admin::create_io_cq:
                return create_cq(c);
            case admin::create_io_sq:
                return create_sq(c);
            case admin::delete_io_sq: {
                const auto id = static_cast<std::uint16_t>(c.cdw10 & 0xffff);
                if (!io_sq_exists(id)) {
                    return status::invalid_queue_id;
                }
                // §5.7: commands of a deleted SQ are aborted; held ones simply go.
                std::erase_if(held, [id](const auto& h) { return h.first == id; });
                sqs_.erase(id);
                return status::success;
            }
            case admin::delete_io_cq: {
                const auto id = static_cast<std::uint16_t>(c.cdw10 & 0xffff);
                if (!io_cq_exists(id)) {
                    return status::invalid_queue_id;
                }
                for (const auto& [sq_id, sq] : sqs_) {
                    if (sq.cq_id == id) {
                        return status::invalid_queue_deletion;  // §5.6: delete its SQs first
                    }
                }
                cqs_.erase(id);
                return status::success;
            }
            case admin::abort: {
                // §5.1: dword 0 bit 0 clear means the command was aborted; that command then
                // completes with Command Abort Requested.
                const auto sq_id = static_cast<std::uint16_t>(c.cdw10 & 0xffff);
                const auto cid = static_cast<std::uint16_t>(c.cdw10 >> 16);
                dw0 = 1;
                for (std::size_t i = 0; options_.abort_succeeds && i < held.size(); ++i) {
                    if (held[i] == std::make_pair(sq_id, cid)) {
                        complete_held(i, status::abort_requested);
                        dw0 = 0;
                        break;
                    }
                }
                return status::success;
            }
            default:
                return status::invalid_opcode;
        }
    }

    // §5.17: one 4 KiB page at PRP1.
    std::uint16_t identify(const SubmissionEntry& c) {
        std::byte* page = device.dma().dma(c.dptr[0], kPage);
        if (page == nullptr) {
            return status::data_transfer_error;
        }
        std::memset(page, 0, kPage);
        const auto put = [page](std::size_t at, auto value) {
            std::memcpy(page + at, &value, sizeof value);
        };
        switch (c.cdw10 & 0xff) {
            case cns::controller:  // §5.17.2.1
                put(0, std::uint16_t{0x1b36});
                std::memcpy(page + 4, "FAKE0001            ", 20);
                std::memcpy(page + 24, "ring3 fake NVMe controller", 26);
                std::memcpy(page + 64, "1.0     ", 8);
                put(77, options_.mdts);
                put(80, std::uint32_t{0x00020000});
                put(258, std::uint8_t{3});  // ACL: 4 aborts
                put(516, std::uint32_t{1});
                put(536, std::uint32_t{options_.sgl ? 1u : 0u});
                return status::success;
            case cns::active_namespaces:  // §5.17.2.2
                put(0, std::uint32_t{c.nsid < 1 ? 1u : 0u});
                return status::success;
            case cns::namespace_:  // NVM Command Set §4.1.5.1
                if (c.nsid != 1) {
                    return status::invalid_field;
                }
                put(0, options_.blocks);
                put(8, options_.blocks);
                put(16, options_.blocks);
                put(128, std::uint32_t{options_.lbads} << 16);  // LBA format 0
                return status::success;
            case cns::namespace_descriptors:  // §5.17.2.3: a CSI descriptor, NVM
                put(0, descriptor::command_set);
                put(1, std::uint8_t{1});
                put(4, csi::nvm);
                return status::success;
            default:
                return status::invalid_field;
        }
    }

    // §5.4 Create I/O Completion Queue.
    std::uint16_t create_cq(const SubmissionEntry& c) {
        Created record{c.opcode,
                       static_cast<std::uint16_t>(c.cdw10 & 0xffff),
                       (c.cdw10 >> 16) + 1,
                       c.dptr[0],
                       c.cdw11,
                       status::success};
        if (record.id == 0 || record.id > granted_ || cqs_.count(record.id) != 0) {
            record.status = status::invalid_queue_id;
        } else if (record.entries < 2 || record.entries > options_.mqes + 1u) {
            record.status = status::invalid_queue_size;
        } else if ((c.cdw11 & 1u) == 0) {
            record.status = status::invalid_field;  // CAP.CQR = 1: PC must be set
        } else {
            Cq cq;
            cq.address = c.dptr[0];
            cq.entries = record.entries;
            cq.interrupts = (c.cdw11 & 2u) != 0;
            cq.vector = c.cdw11 >> 16;
            cqs_[record.id] = cq;
        }
        created.push_back(record);
        return record.status;
    }

    // §5.5 Create I/O Submission Queue.
    std::uint16_t create_sq(const SubmissionEntry& c) {
        Created record{c.opcode,
                       static_cast<std::uint16_t>(c.cdw10 & 0xffff),
                       (c.cdw10 >> 16) + 1,
                       c.dptr[0],
                       c.cdw11,
                       status::success};
        const auto cq_id = static_cast<std::uint16_t>(c.cdw11 >> 16);
        if (record.id == 0 || record.id > granted_ || sqs_.count(record.id) != 0) {
            record.status = status::invalid_queue_id;
        } else if (record.entries < 2 || record.entries > options_.mqes + 1u) {
            record.status = status::invalid_queue_size;
        } else if (!io_cq_exists(cq_id)) {
            record.status = status::completion_queue_invalid;
        } else {
            Sq sq;
            sq.address = c.dptr[0];
            sq.entries = record.entries;
            sq.cq_id = cq_id;
            sqs_[record.id] = sq;
        }
        created.push_back(record);
        return record.status;
    }

    // The (address, length) runs the data pointer describes for `bytes` (§4.3.1 PRPs, §4.3.2
    // SGL data block), or a status when it is malformed.
    std::uint16_t data_runs(const SubmissionEntry& c, std::uint64_t bytes, Transfer& t,
                            std::vector<std::pair<std::uint64_t, std::uint64_t>>& runs) {
        const unsigned psdt = c.flags >> 6;
        if (psdt != 0) {
            if (!options_.sgl || psdt != 1) {
                return status::invalid_field;  // §4.2: PSDT names SGLs the controller lacks
            }
            SglDescriptor sgl;
            std::memcpy(&sgl, c.dptr, sizeof sgl);
            t.form = Form::sgl;
            t.sgl_address = sgl.address;
            t.sgl_length = sgl.length;
            if ((sgl.type >> 4) != 0) {
                return status::invalid_field;  // only Data Block descriptors here
            }
            if (sgl.length != bytes) {
                return status::sgl_length_invalid;
            }
            runs.emplace_back(sgl.address, bytes);
            return status::success;
        }
        // §4.3.1.1: PRP1 may start anywhere dword aligned in a page; every other entry is a page
        // address with offset 0. PRP2 is the second page, or a list when more than two pages.
        t.form = Form::prp;
        t.prp1 = c.dptr[0];
        t.prp2 = c.dptr[1];
        if ((c.dptr[0] & 3u) != 0) {
            return status::prp_offset_invalid;
        }
        const std::uint64_t first = std::min(bytes, kPage - (c.dptr[0] & (kPage - 1)));
        runs.emplace_back(c.dptr[0], first);
        std::uint64_t left = bytes - first;
        if (left == 0) {
            return status::success;
        }
        if (left <= kPage) {
            if ((c.dptr[1] & (kPage - 1)) != 0) {
                return status::prp_offset_invalid;
            }
            runs.emplace_back(c.dptr[1], left);
            return status::success;
        }
        // §4.3.1.2: a PRP list fills to the end of its page; when more entries are needed, the
        // last entry of the page points at the next list page.
        t.form = Form::prp_list;
        std::uint64_t list = c.dptr[1];
        if ((list & 7u) != 0) {
            return status::prp_offset_invalid;
        }
        while (left != 0) {
            const std::uint64_t in_page = (kPage - (list & (kPage - 1))) / 8;
            const auto* entries =
                reinterpret_cast<const std::uint64_t*>(device.dma().dma(list, in_page * 8));
            if (entries == nullptr) {
                return status::data_transfer_error;
            }
            const std::uint64_t needed = (left + kPage - 1) / kPage;
            const std::uint64_t here = needed <= in_page ? needed : in_page - 1;
            for (std::uint64_t i = 0; i < here; ++i) {
                t.prp_list.push_back(entries[i]);
                if ((entries[i] & (kPage - 1)) != 0) {
                    return status::prp_offset_invalid;
                }
                const std::uint64_t run = std::min(left, kPage);
                runs.emplace_back(entries[i], run);
                left -= run;
            }
            if (left != 0) {
                list = entries[in_page - 1];
            }
        }
        return status::success;
    }

    // NVM Command Set 1.0 §3.2: Read, Write, Flush, Write Zeroes, Dataset Management.
    std::uint16_t execute_io(std::uint16_t sq_id, const SubmissionEntry& c) {
        Transfer t;
        t.sq_id = sq_id;
        t.command_id = c.command_id;
        t.opcode = c.opcode;
        t.lba = c.cdw10 | (std::uint64_t{c.cdw11} << 32);
        t.blocks = (c.cdw12 & 0xffff) + 1;
        t.status = execute_io(c, t);
        transfers.push_back(t);
        return t.status;
    }
    std::uint16_t execute_io(const SubmissionEntry& c, Transfer& t) {
        if (c.nsid != 1) {
            return status::invalid_field;
        }
        const std::uint32_t block = 1u << options_.lbads;
        switch (c.opcode) {
            case io::flush:
            case io::dataset_management:
                t.blocks = 0;
                return status::success;
            case io::write_zeroes:
                if (t.lba + t.blocks > options_.blocks) {
                    return status::lba_out_of_range;
                }
                std::memset(disk.data() + t.lba * block, 0, std::uint64_t{t.blocks} * block);
                return status::success;
            case io::read:
            case io::write:
                break;
            default:
                return status::invalid_opcode;
        }
        const std::uint64_t bytes = std::uint64_t{t.blocks} * block;
        std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
        if (const std::uint16_t s = data_runs(c, bytes, t, runs); s != status::success) {
            return s;
        }
        if (max_transfer() != 0 && bytes > max_transfer()) {
            return status::invalid_field;  // §5.17.2.1 MDTS: larger transfers are refused
        }
        if (t.lba + t.blocks > options_.blocks) {
            return status::lba_out_of_range;
        }
        std::byte* at = disk.data() + t.lba * block;
        for (const auto& [address, length] : runs) {
            std::byte* memory = device.dma().dma(address, length);
            if (memory == nullptr) {
                return status::data_transfer_error;
            }
            if (c.opcode == io::read) {
                std::memcpy(memory, at, length);
            } else {
                std::memcpy(at, memory, length);
            }
            at += length;
        }
        return status::success;
    }

    Options options_;
    std::map<std::uint16_t, Sq> sqs_;
    std::map<std::uint16_t, Cq> cqs_;
    std::uint32_t granted_ = 0;
};

}  // namespace ring3::nvme::testing
