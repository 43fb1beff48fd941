// NVMe controller bring-up and admin commands. NVM Express Base Specification 2.0:
// §3.5.1 (controller initialization), §3.6.1 (shutdown), §5 (admin commands).
#include "ring3/nvme/controller.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/nvme/initializer.hpp"

namespace ring3::nvme {
namespace {

std::string trimmed_text(const std::byte* data, std::size_t length) {
    std::string text(reinterpret_cast<const char*>(data), length);
    const auto end = text.find_last_not_of(std::string(" \0", 2));
    text.erase(end == std::string::npos ? 0 : end + 1);
    for (char& c : text) {
        if (c < 0x20 || c > 0x7e) {
            c = '?';  // a device's strings are hostile input: keep them printable
        }
    }
    return text;
}

template <typename T>
T load(const std::byte* data, std::size_t offset) {
    T value;
    std::memcpy(&value, data + offset, sizeof value);
    return value;
}

// A 128-bit little-endian counter as a double (SMART counters, §5.16.1.3).
double load_u128(const std::byte* data, std::size_t offset) {
    const auto low = load<std::uint64_t>(data, offset);
    const auto high = load<std::uint64_t>(data, offset + 8);
    return static_cast<double>(high) * 18446744073709551616.0 + static_cast<double>(low);
}

struct AdminWait {
    bool done = false;
    int command_id = -1;
    CompletionEntry entry{};
};

void admin_done(void* context, const CompletionEntry& entry) {
    auto* wait = static_cast<AdminWait*>(context);
    wait->entry = entry;
    wait->done = true;
}

}  // namespace

std::string AsyncEvent::describe() const {
    static constexpr const char* kTypes[] = {"error",           "SMART/health",   "notice",
                                             "type 3",          "type 4",         "type 5",
                                             "I/O command set", "vendor specific"};
    std::string text = fmt::format(
        "asynchronous event: {} (type {}), info {:#04x}, log page "
        "{:#04x}",
        kTypes[type & 7], type, info, log_page);
    if (type == 1) {
        static constexpr const char* kHealth[] = {"reliability degraded", "temperature threshold",
                                                  "spare below threshold"};
        if (info < 3) {
            text += fmt::format(" ({})", kHealth[info]);
        }
    }
    return text;
}

Controller::Controller(Device& device, const ControllerOptions& options)
    : device_(device), options_(options), windows_(device) {
    if (!options_.clock.sleep) {
        options_.clock.sleep = [](std::chrono::microseconds us) {
            std::this_thread::sleep_for(us);
        };
    }
    const RegionInfo bar0 = device.region_info(0);
    if (bar0.size < 0x2000) {
        throw Error::invalid("open NVMe controller", device.name(),
                             fmt::format("BAR0 is {} bytes; an NVMe controller has at least 8 KiB "
                                         "(registers and doorbells)",
                                         bar0.size),
                             ENODEV);
    }
    registers_ = windows_.open(0, 0, bar0.size);

    const auto cap = registers_->read<reg::Cap>();
    if (cap.raw() == ~0ull) {
        throw Error::invalid("open NVMe controller", device.name(),
                             "CAP reads all ones: the device is not responding (removed?)", EIO);
    }
    max_queue_entries_ = static_cast<std::uint32_t>(cap.get<reg::Cap::Mqes>()) + 1;
    if (max_queue_entries_ < 2) {
        throw Error::invalid("open NVMe controller", device.name(),
                             "CAP.MQES says queues of 1 entry: garbage", EIO);
    }
    doorbell_stride_ = 4u << cap.get<reg::Cap::Dstrd>();
    ready_timeout_ =
        std::chrono::milliseconds(500 * std::max<std::uint64_t>(1, cap.get<reg::Cap::To>()));
    if (cap.get<reg::Cap::Mpsmin>() != 0) {
        throw Error::invalid("open NVMe controller", device.name(),
                             fmt::format("the smallest memory page it supports is {} bytes; "
                                         "ring3 uses 4 KiB pages",
                                         4096u << cap.get<reg::Cap::Mpsmin>()),
                             ENOTSUP);
    }
    if ((cap.get<reg::Cap::Css>() & 1u) == 0) {
        throw Error::invalid("open NVMe controller", device.name(),
                             "the NVM command set is not supported (CAP.CSS bit 0)", ENOTSUP);
    }
    if (bar0.size < reg::cq_head_doorbell(0, doorbell_stride_) + 4) {
        throw Error::invalid("open NVMe controller", device.name(), "BAR0 too small for doorbells",
                             ENODEV);
    }

    arena_ = dma::DmaArena::create(options_.arena);
    space_index_ = arena_->attach(device.iova_space());
    pool_ = std::make_unique<dma::DmaPool>(*arena_, space_index_);

    device.set_bus_master(true);
    mark(options_.timeline, "DMA arena");
    const std::uint32_t admin_entries =
        std::clamp<std::uint32_t>(options_.admin_entries, 2, std::min(max_queue_entries_, 4096u));
    admin_ = std::make_unique<QueuePair>(*pool_, 0, admin_entries, *registers_,
                                         reg::sq_tail_doorbell(0, doorbell_stride_),
                                         reg::cq_head_doorbell(0, doorbell_stride_));
    initialize({});
    mark(options_.timeline, "controller enable");
    identify();
    mark(options_.timeline, "identify");
}

Controller::~Controller() {
    if (admin_) {
        shutdown();
        admin_->fail_all(0x0008);  // Command Aborted due to SQ Deletion: not a success
    }
    try {
        device_.set_bus_master(false);
    } catch (const Error& e) {
        log_warn("{}: turning bus mastering off: {}", device_.name(), e.what());
    }
    admin_.reset();
    pool_.reset();
    if (arena_) {
        arena_->detach(device_.iova_space());
    }
}

const NamespaceInfo& Controller::namespace_info(std::uint32_t nsid) const {
    for (const auto& ns : namespaces_) {
        if (ns.id == nsid) {
            return ns;
        }
    }
    std::string ids;
    for (const auto& ns : namespaces_) {
        ids += fmt::format("{}{}", ids.empty() ? "" : ", ", ns.id);
    }
    throw Error::invalid(
        fmt::format("namespace {}", nsid), device_.name(),
        fmt::format("not an active namespace (active: {})", ids.empty() ? "none" : ids), ENODEV);
}

// §3.5.1 by the steppable Initializer, sleeping between the steps that wait. `when_disabled` runs
// once the controller reads CSTS.RDY = 0, before the admin queue is programmed again.
void Controller::initialize(const std::function<void()>& when_disabled) {
    Initializer init(*registers_, {admin_->sq_iova(), admin_->cq_iova(), admin_->entries()});
    bool disabled = false;
    std::chrono::microseconds pause{10};
    for (;;) {
        const auto before = init.state();
        const auto state = init.step(options_.clock.now());
        if (state == Initializer::State::done) {
            return;
        }
        if (state == Initializer::State::failed) {
            throw Error::invalid("initialize NVMe controller", device_.name(), init.error(),
                                 init.error_code());
        }
        if (state == Initializer::State::configure && !disabled) {
            disabled = true;
            if (when_disabled) {
                when_disabled();
            }
        }
        // Controllers (QEMU's among them) often change CSTS.RDY at once: a wait that was just
        // entered looks again without sleeping; then the sleeps grow from 10 us to 1 ms, so a
        // slow controller is not polled needlessly.
        if (init.waiting() && state == before) {
            options_.clock.sleep(pause);
            pause = std::min(pause * 2, std::chrono::microseconds(1000));
        }
    }
}

// Bounded by CAP.TO (plus slack for a slow emulator), never forever; CSTS.CFS ends it at once.
void Controller::wait_ready(bool ready, const char* step) {
    const auto deadline = options_.clock.now() + ready_timeout_ + std::chrono::milliseconds(500);
    std::chrono::microseconds pause{10};
    for (;;) {
        const auto csts = registers_->read<reg::Csts>();
        if (csts.raw() == ~0u) {
            throw Error::invalid(step, device_.name(),
                                 "CSTS reads all ones: the device stopped responding", EIO);
        }
        if ((csts.get<reg::Csts::Rdy>() != 0) == ready) {
            return;
        }
        if (csts.get<reg::Csts::Cfs>() != 0 && ready) {
            throw Error::invalid(step, device_.name(), "controller fatal status (CSTS.CFS = 1)",
                                 EIO);
        }
        if (options_.clock.now() > deadline) {
            throw Error::invalid(step, device_.name(),
                                 fmt::format("CSTS.RDY did not become {} within CAP.TO = {} ms",
                                             ready ? 1 : 0, ready_timeout_.count()),
                                 ETIMEDOUT);
        }
        options_.clock.sleep(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
}

CompletionEntry Controller::admin(SubmissionEntry command, const char* what) {
    const CompletionEntry entry = admin_all({command}, what).front();
    const StatusField status{static_cast<std::uint16_t>(entry.status >> 1)};
    if (!status.ok()) {
        throw Error::invalid(what, device_.name(), status_name(status.code_and_type()), EIO);
    }
    return entry;
}

void Controller::submit_admin(SubmissionEntry command, QueuePair::Handler handler, void* context) {
    if (admin_->enqueue(command, handler, context) < 0) {
        throw Error::invalid("submit admin command", device_.name(), "the admin queue is full",
                             EBUSY);
    }
    admin_->ring_doorbell();
}

std::vector<CompletionEntry> Controller::admin_all(const std::vector<SubmissionEntry>& commands,
                                                   const char* what) {
    if (commands.size() > admin_->free_slots()) {
        throw Error::invalid(what, device_.name(),
                             admin_->free_slots() == 0
                                 ? std::string("the admin queue is full")
                                 : fmt::format("{} commands at once; the admin queue has room "
                                               "for {}",
                                               commands.size(), admin_->free_slots()),
                             EBUSY);
    }
    std::vector<AdminWait> waits(commands.size());
    for (std::size_t i = 0; i < commands.size(); ++i) {
        waits[i].command_id = admin_->enqueue(commands[i], admin_done, &waits[i]);
    }
    admin_->ring_doorbell();
    const auto deadline = options_.clock.now() + options_.admin_timeout;
    std::size_t done = 0;
    // An admin command takes tens of microseconds on most controllers: spin on the completion
    // queue for up to 2 ms (a sleep costs far more than that under emulation), then sleep 20 us
    // at a time.
    const auto spin_until = options_.clock.now() + std::chrono::milliseconds(2);
    while (done < waits.size()) {
        if (admin_->process_completions() == 0) {
            if (options_.clock.now() > deadline) {
                // The late commands stay the controller's, but `waits` dies with this frame:
                // their completions (or a reset's fail_all) must not write into it.
                for (const auto& wait : waits) {
                    if (!wait.done && wait.command_id >= 0) {
                        admin_->detach(static_cast<std::uint16_t>(wait.command_id));
                    }
                }
                throw Error::invalid(
                    what, device_.name(),
                    waits.size() == 1
                        ? fmt::format("no completion within {} ms", options_.admin_timeout.count())
                        : fmt::format("{} of {} commands completed within {} ms", done,
                                      waits.size(), options_.admin_timeout.count()),
                    ETIMEDOUT);
            }
            if (options_.clock.now() > spin_until) {
                options_.clock.sleep(std::chrono::microseconds(20));
            }
        }
        done = static_cast<std::size_t>(
            std::count_if(waits.begin(), waits.end(), [](const AdminWait& w) { return w.done; }));
    }
    std::vector<CompletionEntry> entries;
    entries.reserve(waits.size());
    for (const auto& wait : waits) {
        entries.push_back(wait.entry);
    }
    return entries;
}

namespace {

void expect_success(const CompletionEntry& entry, const char* what, const std::string& device) {
    const StatusField status{static_cast<std::uint16_t>(entry.status >> 1)};
    if (!status.ok()) {
        throw Error::invalid(what, device, status_name(status.code_and_type()), EIO);
    }
}

SubmissionEntry identify_command(std::uint32_t cns, std::uint32_t nsid, std::uint64_t iova) {
    SubmissionEntry command{};
    command.opcode = admin::identify;
    command.nsid = nsid;
    command.dptr[0] = iova;
    command.cdw10 = cns;
    return command;
}

// §5.17.2.3: descriptors of (type, length, 2 reserved bytes, value) until a type of 0. The
// device wrote it: every length is checked against the page.
std::uint8_t command_set_of(const std::byte* page, std::size_t size) {
    std::size_t at = 0;
    while (at + 4 <= size) {
        const auto type = static_cast<std::uint8_t>(page[at]);
        const auto length = static_cast<std::uint8_t>(page[at + 1]);
        if (type == 0 || at + 4 + length > size) {
            break;
        }
        if (type == descriptor::command_set && length == 1) {
            return static_cast<std::uint8_t>(page[at + 4]);
        }
        at += 4 + length;
    }
    return csi::nvm;  // no descriptor: the NVM command set (controllers before 1.4)
}

}  // namespace

// §5.17: Identify Controller and the active namespace list are independent, so they go with one
// doorbell write; then each namespace's Identify Namespace and descriptor list, all together.
void Controller::identify() {
    auto controller_page = pool_->allocate(4096, 4096);
    auto list_page = pool_->allocate(4096, 4096);
    const auto first = admin_all({identify_command(cns::controller, 0, controller_page.iova()),
                                  identify_command(cns::active_namespaces, 0, list_page.iova())},
                                 "Identify Controller and Active Namespace List");
    expect_success(first[0], "Identify Controller", device_.name());
    expect_success(first[1], "Identify Active Namespace List", device_.name());
    const std::byte* d = controller_page.data();
    info_.vendor_id = load<std::uint16_t>(d, 0);
    info_.subsystem_vendor_id = load<std::uint16_t>(d, 2);
    info_.serial = trimmed_text(d + 4, 20);
    info_.model = trimmed_text(d + 24, 40);
    info_.firmware = trimmed_text(d + 64, 8);
    info_.mdts = load<std::uint8_t>(d, 77);
    info_.controller_id = load<std::uint16_t>(d, 78);
    info_.version = load<std::uint32_t>(d, 80);
    info_.oacs = load<std::uint16_t>(d, 256);
    info_.abort_limit = load<std::uint8_t>(d, 258);
    info_.async_event_limit = load<std::uint8_t>(d, 259);
    info_.log_page_attributes = load<std::uint8_t>(d, 261);
    info_.error_log_entries = load<std::uint8_t>(d, 262);
    info_.max_commands = load<std::uint16_t>(d, 514);
    info_.namespace_count = load<std::uint32_t>(d, 516);
    info_.oncs = load<std::uint16_t>(d, 520);
    info_.volatile_write_cache = (load<std::uint8_t>(d, 525) & 1u) != 0;
    info_.sgl_support = load<std::uint32_t>(d, 536);
    info_.subsystem_nqn = trimmed_text(d + 768, 256);
    // MDTS is in units of the minimum page size (4 KiB here); 0 means no limit, which we cap at
    // 2 MiB so one PRP list page always suffices.
    const std::uint64_t limit =
        info_.mdts == 0 || info_.mdts > 9 ? (2u << 20) : (4096ull << info_.mdts);
    max_transfer_ = static_cast<std::uint32_t>(limit);

    // The descriptor list is mandatory from NVMe 1.3 on; older controllers only have NVM.
    const bool descriptors = info_.version >= 0x00010300;
    const std::vector<std::uint32_t> ids = parse_namespace_list(list_page.data());
    namespaces_.clear();
    const std::size_t per_batch = std::max<std::size_t>(1, admin_->free_slots() / 2);
    for (std::size_t from = 0; from < ids.size(); from += per_batch) {
        const std::size_t count = std::min(per_batch, ids.size() - from);
        std::vector<dma::DmaBuffer> pages;
        std::vector<SubmissionEntry> commands;
        for (std::size_t i = 0; i < count; ++i) {
            pages.push_back(pool_->allocate(4096, 4096));
            commands.push_back(
                identify_command(cns::namespace_, ids[from + i], pages.back().iova()));
            if (descriptors) {
                pages.push_back(pool_->allocate(4096, 4096));
                commands.push_back(identify_command(cns::namespace_descriptors, ids[from + i],
                                                    pages.back().iova()));
            }
        }
        const auto done = admin_all(commands, "Identify Namespace");
        const std::size_t stride = descriptors ? 2 : 1;
        for (std::size_t i = 0; i < count; ++i) {
            const std::uint32_t nsid = ids[from + i];
            expect_success(done[i * stride], "Identify Namespace", device_.name());
            NamespaceInfo ns = decode_namespace(nsid, pages[i * stride].data());
            if (descriptors) {
                const CompletionEntry& entry = done[i * stride + 1];
                if (StatusField{static_cast<std::uint16_t>(entry.status >> 1)}.ok()) {
                    ns.command_set = command_set_of(pages[i * stride + 1].data(), 4096);
                }
            }
            if (ns.size == 0) {
                log_warn("{}: namespace {} reports size 0; ignored", device_.name(), nsid);
                continue;
            }
            namespaces_.push_back(std::move(ns));
        }
    }
}

std::vector<std::uint32_t> Controller::parse_namespace_list(const std::byte* page) const {
    std::vector<std::uint32_t> ids;
    std::uint32_t previous = 0;
    for (std::size_t i = 0; i < 1024; ++i) {
        const auto nsid = load<std::uint32_t>(page, i * 4);
        if (nsid == 0) {
            break;
        }
        // §5.17.2.2: the list is in increasing order; anything else is garbage.
        if (nsid <= previous || nsid == 0xffffffff) {
            log_warn("{}: active namespace list is not increasing at entry {} ({}); truncated",
                     device_.name(), i, nsid);
            break;
        }
        ids.push_back(nsid);
        previous = nsid;
    }
    return ids;
}

std::vector<std::uint32_t> Controller::active_namespaces() {
    auto page = pool_->allocate(4096, 4096);
    admin(identify_command(cns::active_namespaces, 0, page.iova()),
          "Identify Active Namespace List");
    return parse_namespace_list(page.data());
}

NamespaceInfo Controller::identify_namespace(std::uint32_t nsid) {
    auto page = pool_->allocate(4096, 4096);
    admin(identify_command(cns::namespace_, nsid, page.iova()), "Identify Namespace");
    return decode_namespace(nsid, page.data());
}

// NVM Command Set 1.0 §4.1.5.1.
NamespaceInfo Controller::decode_namespace(std::uint32_t nsid, const std::byte* d) const {
    NamespaceInfo ns;
    ns.id = nsid;
    ns.size = load<std::uint64_t>(d, 0);
    ns.capacity = load<std::uint64_t>(d, 8);
    ns.utilization = load<std::uint64_t>(d, 16);
    const unsigned count = load<std::uint8_t>(d, 25) + 1u;  // NLBAF is 0-based
    const std::uint8_t flbas = load<std::uint8_t>(d, 26);
    ns.format_index = (flbas & 0xfu) | ((flbas >> 1) & 0x30u);
    ns.metadata_extended = (flbas & 0x10u) != 0;
    ns.protection = load<std::uint8_t>(d, 29) & 0x7u;
    for (unsigned i = 0; i < count && i < 64; ++i) {
        const auto word = load<std::uint32_t>(d, 128 + 4 * i);
        LbaFormat format;
        format.metadata_size = static_cast<std::uint16_t>(word & 0xffff);
        const unsigned lbads = (word >> 16) & 0xff;
        format.data_size = lbads >= 9 && lbads < 32 ? 1u << lbads : 0;
        format.relative_performance = static_cast<std::uint8_t>((word >> 24) & 3);
        ns.formats.push_back(format);
    }
    if (ns.format_index >= ns.formats.size() || ns.block_size() == 0) {
        throw Error::invalid(fmt::format("identify namespace {}", nsid), device_.name(),
                             fmt::format("the formatted LBA format {} is invalid ({} formats)",
                                         ns.format_index, ns.formats.size()),
                             EIO);
    }
    return ns;
}

unsigned Controller::set_queue_count(unsigned wanted) {
    queues_requested_ = wanted;
    SubmissionEntry command{};
    command.opcode = admin::set_features;
    command.cdw10 = feature::number_of_queues;
    command.cdw11 = ((wanted - 1) << 16) | (wanted - 1);  // NCQR, NSQR: 0-based
    const CompletionEntry done = admin(command, "Set Features (Number of Queues)");
    const unsigned sqs = (done.dw0 & 0xffff) + 1;
    const unsigned cqs = (done.dw0 >> 16) + 1;
    return std::min({sqs, cqs, wanted});
}

void Controller::set_interrupt_coalescing(unsigned threshold, unsigned time_100us) {
    SubmissionEntry command{};
    command.opcode = admin::set_features;
    command.cdw10 = feature::interrupt_coalescing;
    command.cdw11 = ((time_100us & 0xff) << 8) | (threshold & 0xff);
    admin(command, "Set Features (Interrupt Coalescing)");
}

std::uint32_t Controller::get_feature(std::uint32_t feature_id) {
    SubmissionEntry command{};
    command.opcode = admin::get_features;
    command.cdw10 = feature_id;
    return admin(command, "Get Features").dw0;
}

SmartLog Controller::smart_log() {
    auto page = pool_->allocate(512, 4096);
    SubmissionEntry command{};
    command.opcode = admin::get_log_page;
    command.nsid = 0xffffffff;  // the controller as a whole
    command.dptr[0] = page.iova();
    command.cdw10 = log_page::smart_health | ((512 / 4 - 1) << 16);  // NUMDL, 0-based dwords
    admin(command, "Get Log Page (SMART / Health Information)");
    const std::byte* d = page.data();
    SmartLog log;
    log.critical_warning = load<std::uint8_t>(d, 0);
    log.temperature_kelvin = load<std::uint16_t>(d, 1);
    log.available_spare = load<std::uint8_t>(d, 3);
    log.available_spare_threshold = load<std::uint8_t>(d, 4);
    log.percentage_used = load<std::uint8_t>(d, 5);
    log.data_units_read = load_u128(d, 32);
    log.data_units_written = load_u128(d, 48);
    log.host_read_commands = load_u128(d, 64);
    log.host_write_commands = load_u128(d, 80);
    log.power_cycles = load_u128(d, 112);
    log.power_on_hours = load_u128(d, 128);
    log.unsafe_shutdowns = load_u128(d, 144);
    log.media_errors = load_u128(d, 160);
    log.error_log_entries = load_u128(d, 176);
    return log;
}

std::vector<std::vector<std::byte>> Controller::error_log(unsigned entries) {
    entries = std::clamp(entries, 1u, 64u);
    auto page = pool_->allocate(64 * entries, 4096);
    SubmissionEntry command{};
    command.opcode = admin::get_log_page;
    command.nsid = 0xffffffff;
    command.dptr[0] = page.iova();
    command.cdw10 = log_page::error_information | ((64 * entries / 4 - 1) << 16);
    admin(command, "Get Log Page (Error Information)");
    std::vector<std::vector<std::byte>> result;
    for (unsigned i = 0; i < entries; ++i) {
        result.emplace_back(page.data() + 64 * i, page.data() + 64 * (i + 1));
    }
    return result;
}

std::uint32_t Controller::abort(std::uint16_t sq_id, std::uint16_t command_id) {
    SubmissionEntry command{};
    command.opcode = admin::abort;
    command.cdw10 = (static_cast<std::uint32_t>(command_id) << 16) | sq_id;
    return admin(command, "Abort").dw0;
}

std::unique_ptr<QueuePair> Controller::create_io_queue(std::uint16_t id, std::uint32_t entries,
                                                       int vector) {
    if (entries > max_queue_entries_) {
        throw Error::invalid(fmt::format("create I/O queue {}", id), device_.name(),
                             fmt::format("{} entries exceed the controller's maximum {} "
                                         "(CAP.MQES + 1)",
                                         entries, max_queue_entries_),
                             EINVAL);
    }
    auto queue = std::make_unique<QueuePair>(*pool_, id, entries, *registers_,
                                             reg::sq_tail_doorbell(id, doorbell_stride_),
                                             reg::cq_head_doorbell(id, doorbell_stride_));
    register_io_queue(*queue, vector);
    return queue;
}

void Controller::register_io_queue(const QueuePair& queue, int vector) {
    const std::uint32_t sizes = ((queue.entries() - 1) << 16) | queue.id();
    // §5.4 Create I/O Completion Queue: PC = 1; IEN and IV when a vector is given.
    SubmissionEntry cq{};
    cq.opcode = admin::create_io_cq;
    cq.dptr[0] = queue.cq_iova();
    cq.cdw10 = sizes;
    cq.cdw11 = 1u | (vector >= 0 ? (2u | (static_cast<std::uint32_t>(vector) << 16)) : 0u);
    admin(cq, "Create I/O Completion Queue");
    // §5.5 Create I/O Submission Queue: PC = 1, bound to the CQ of the same id.
    SubmissionEntry sq{};
    sq.opcode = admin::create_io_sq;
    sq.dptr[0] = queue.sq_iova();
    sq.cdw10 = sizes;
    sq.cdw11 = 1u | (static_cast<std::uint32_t>(queue.id()) << 16);
    try {
        admin(sq, "Create I/O Submission Queue");
    } catch (...) {
        SubmissionEntry undo{};
        undo.opcode = admin::delete_io_cq;
        undo.cdw10 = queue.id();
        try {
            admin(undo, "Delete I/O Completion Queue");
        } catch (const Error& e) {
            log_warn("{}", e.what());
        }
        throw;
    }
}

void Controller::delete_io_queue(const QueuePair& queue) {
    SubmissionEntry sq{};
    sq.opcode = admin::delete_io_sq;
    sq.cdw10 = queue.id();
    admin(sq, "Delete I/O Submission Queue");
    SubmissionEntry cq{};
    cq.opcode = admin::delete_io_cq;
    cq.cdw10 = queue.id();
    admin(cq, "Delete I/O Completion Queue");
}

void Controller::enable_async_events(std::function<void(const AsyncEvent&)> handler,
                                     unsigned count) {
    // §5.27.1.7 Asynchronous Event Configuration: report every SMART critical warning (bits 7:0)
    // and namespace attribute changes (bit 8); a controller may report nothing until asked.
    SubmissionEntry configure{};
    configure.opcode = admin::set_features;
    configure.cdw10 = feature::async_event_configuration;
    configure.cdw11 = 0xffu | (1u << 8);
    admin(configure, "Set Features (Asynchronous Event Configuration)");
    event_handler_ = std::move(handler);
    events_wanted_ = std::max(1u, std::min<unsigned>(count, info_.async_event_limit + 1u));
    while (events_outstanding_ < events_wanted_) {
        submit_async_event_request();
    }
}

void Controller::submit_async_event_request() {
    SubmissionEntry command{};
    command.opcode = admin::async_event_request;
    const auto handler = [](void* context, const CompletionEntry& entry) {
        auto* self = static_cast<Controller*>(context);
        --self->events_outstanding_;
        const StatusField status{static_cast<std::uint16_t>(entry.status >> 1)};
        if (!status.ok()) {
            return;  // aborted by a reset, or the limit was exceeded: not an event
        }
        AsyncEvent event;
        event.type = static_cast<std::uint8_t>(entry.dw0 & 0x7);
        event.info = static_cast<std::uint8_t>((entry.dw0 >> 8) & 0xff);
        event.log_page = static_cast<std::uint8_t>((entry.dw0 >> 16) & 0xff);
        if (self->event_handler_) {
            self->event_handler_(event);
        }
    };
    if (admin_->enqueue(command, handler, this) < 0) {
        throw Error::invalid("Asynchronous Event Request", device_.name(),
                             "the admin queue is full", EBUSY);
    }
    admin_->ring_doorbell();
    ++events_outstanding_;
}

unsigned Controller::poll_admin() {
    const unsigned done = admin_->process_completions();
    // §5.2: each request reports one event; keep `events_wanted_` outstanding.
    while (event_handler_ && events_outstanding_ < events_wanted_) {
        submit_async_event_request();
    }
    return done;
}

void Controller::reset(const std::function<void()>& after_disable) {
    initialize([&] {
        // CSTS.RDY = 0: the controller has stopped touching its queues (§3.5.2), so what was in
        // flight can be completed with an error and its memory reused.
        admin_->fail_all(0x0008);  // Generic: Command Aborted due to SQ Deletion
        admin_->reset_rings();
        events_outstanding_ = 0;
        if (after_disable) {
            after_disable();
        }
    });
    if (queues_requested_ != 0) {
        set_queue_count(queues_requested_);  // the feature does not survive a reset (§5.27.1.5)
    }
    if (event_handler_) {
        auto handler = event_handler_;
        enable_async_events(std::move(handler), events_wanted_);
    }
}

void Controller::shutdown() noexcept {
    try {
        auto cc = registers_->read<reg::Cc>();
        if (cc.get<reg::Cc::En>() == 0) {
            return;
        }
        cc.set<reg::Cc::Shn>(1);
        registers_->write(cc);
        const auto deadline = options_.clock.now() + ready_timeout_;
        while (registers_->read<reg::Csts>().get<reg::Csts::Shst>() != 2) {
            if (options_.clock.now() > deadline) {
                log_warn("{}: shutdown did not complete within CAP.TO", device_.name());
                break;
            }
            options_.clock.sleep(std::chrono::microseconds(100));
        }
        cc = registers_->read<reg::Cc>();
        cc.set<reg::Cc::En>(0).set<reg::Cc::Shn>(0);
        registers_->write(cc);
        wait_ready(false, "disable after shutdown");
    } catch (const Error& e) {
        log_warn("{}: shutdown: {}", device_.name(), e.what());
    }
}

}  // namespace ring3::nvme
