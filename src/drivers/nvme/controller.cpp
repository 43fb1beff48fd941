// NVMe controller lifecycle: bring-up, the admin queue (submission and waiting), I/O queue
// creation and deletion, asynchronous events, reset and shutdown. NVM Express Base Specification
// 2.0: §3.5.1 (controller initialization), §3.6.1 (shutdown), §5 (admin commands). Identify is
// decoded in identify.cpp, features and log pages in admin_commands.cpp.
#include "ring3/nvme/controller.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/nvme/initializer.hpp"

#include "admin_data.hpp"

namespace ring3::nvme {
namespace {

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

using detail::expect_success;
using detail::load;

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
    // Two windows: the registers, and the doorbells after them (§3.1.3.25), so that a device
    // that traps its registers but lets the doorbell page be mapped (vfio-user's sparse mmap)
    // still rings doorbells with plain stores.
    registers_ = windows_.open(0, 0, reg::kDoorbellBase);
    doorbells_ = windows_.open(0, reg::kDoorbellBase, bar0.size - reg::kDoorbellBase);

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
    admin_ = std::make_unique<QueuePair>(
        *pool_, 0, admin_entries, *doorbells_,
        reg::sq_tail_doorbell(0, doorbell_stride_) - reg::kDoorbellBase,
        reg::cq_head_doorbell(0, doorbell_stride_) - reg::kDoorbellBase);
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

std::unique_ptr<QueuePair> Controller::create_io_queue(std::uint16_t id, std::uint32_t entries,
                                                       int vector) {
    if (entries > max_queue_entries_) {
        throw Error::invalid(fmt::format("create I/O queue {}", id), device_.name(),
                             fmt::format("{} entries exceed the controller's maximum {} "
                                         "(CAP.MQES + 1)",
                                         entries, max_queue_entries_),
                             EINVAL);
    }
    auto queue = std::make_unique<QueuePair>(
        *pool_, id, entries, *doorbells_,
        reg::sq_tail_doorbell(id, doorbell_stride_) - reg::kDoorbellBase,
        reg::cq_head_doorbell(id, doorbell_stride_) - reg::kDoorbellBase);
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
