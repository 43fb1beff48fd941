// An NVMe controller driven from user space through ring3's Device API (VFIO, UIO, vfio-user:
// the same code). NVM Express Base Specification 2.0; see src/drivers/nvme/README.md for the
// sections implemented.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ring3/core/timeline.hpp"
#include "ring3/device/device.hpp"
#include "ring3/device/register_window.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/irq/interrupt.hpp"
#include "ring3/mmio/register.hpp"
#include "ring3/nvme/queue_pair.hpp"
#include "ring3/nvme/registers.hpp"

namespace ring3::nvme {

// §5.17.2.1 Identify Controller data structure (the fields the driver and tools use).
struct ControllerInfo {
    std::uint16_t vendor_id = 0;
    std::uint16_t subsystem_vendor_id = 0;
    std::string serial;
    std::string model;
    std::string firmware;
    std::uint8_t mdts = 0;  // maximum data transfer, 2^n minimum pages; 0: no limit
    std::uint16_t controller_id = 0;
    std::uint32_t version = 0;
    std::uint16_t oacs = 0;              // optional admin commands
    std::uint8_t abort_limit = 0;        // ACL, 0-based
    std::uint8_t async_event_limit = 0;  // AERL, 0-based
    std::uint8_t log_page_attributes = 0;
    std::uint8_t error_log_entries = 0;  // ELPE, 0-based
    std::uint16_t max_commands = 0;
    std::uint32_t namespace_count = 0;  // NN
    std::uint16_t oncs = 0;             // optional NVM commands (bit 2 DSM, bit 3 write zeroes)
    bool volatile_write_cache = false;  // VWC bit 0
    std::uint32_t sgl_support = 0;      // SGLS; bits 1:0 non-zero: SGLs supported
    std::string subsystem_nqn;

    bool supports_sgl() const noexcept { return (sgl_support & 3u) != 0; }
    bool supports_write_zeroes() const noexcept { return (oncs & (1u << 3)) != 0; }
    bool supports_deallocate() const noexcept { return (oncs & (1u << 2)) != 0; }
};

struct LbaFormat {
    std::uint16_t metadata_size = 0;
    std::uint32_t data_size = 0;  // bytes
    std::uint8_t relative_performance = 0;
};

// NVM Command Set 1.0 §4.1.5.1 Identify Namespace data structure.
struct NamespaceInfo {
    std::uint32_t id = 0;
    std::uint64_t size = 0;         // NSZE, blocks
    std::uint64_t capacity = 0;     // NCAP
    std::uint64_t utilization = 0;  // NUSE
    std::vector<LbaFormat> formats;
    unsigned format_index = 0;            // FLBAS bits 3:0 (and 6:5 for more than 16 formats)
    bool metadata_extended = false;       // FLBAS bit 4: metadata at the end of each block's data
    std::uint8_t protection = 0;          // DPS bits 2:0: end-to-end protection type, 0 none
    std::uint8_t command_set = csi::nvm;  // from the namespace's CSI descriptor (§5.17.2.3)
    std::uint32_t block_size() const noexcept { return formats.at(format_index).data_size; }
    std::uint16_t metadata_size() const noexcept { return formats.at(format_index).metadata_size; }
};

// §5.16.1.3 SMART / Health Information log.
struct SmartLog {
    std::uint8_t critical_warning = 0;
    unsigned temperature_kelvin = 0;
    unsigned available_spare = 0;  // percent
    unsigned available_spare_threshold = 0;
    unsigned percentage_used = 0;
    double data_units_read = 0;  // in 1000 x 512 bytes
    double data_units_written = 0;
    double host_read_commands = 0;
    double host_write_commands = 0;
    double power_cycles = 0;
    double power_on_hours = 0;
    double unsafe_shutdowns = 0;
    double media_errors = 0;
    double error_log_entries = 0;
};

// §5.2 Asynchronous Event Request completion, dword 0.
struct AsyncEvent {
    std::uint8_t type = 0;  // 0 error, 1 SMART/health, 2 notice, 6 I/O command set, 7 vendor
    std::uint8_t info = 0;
    std::uint8_t log_page = 0;  // the log page to read to clear the event
    std::string describe() const;
};

// Time and sleep, injected so tests can step the state machines without waiting.
struct Clock {
    std::function<std::chrono::steady_clock::time_point()> now = [] {
        return std::chrono::steady_clock::now();
    };
    std::function<void(std::chrono::microseconds)> sleep;  // default: std::this_thread::sleep_for
};

struct ControllerOptions {
    unsigned admin_entries = 32;
    std::chrono::milliseconds admin_timeout{5000};
    dma::ArenaOptions arena;  // the DMA memory of the controller's queues and of data buffers
    Clock clock;
    Timeline* timeline = nullptr;  // bring-up steps are marked on it when given
};

class Controller {
  public:
    // Resets and enables the controller (§3.5.1), identifies it and its active namespaces.
    // Throws ring3::Error with what failed (CSTS.CFS, a timeout bounded by CAP.TO, an admin
    // command's status).
    Controller(Device& device, const ControllerOptions& options = {});
    ~Controller();
    Controller(const Controller&) = delete;
    Controller& operator=(const Controller&) = delete;

    Device& device() noexcept { return device_; }
    const ControllerInfo& info() const noexcept { return info_; }
    const std::vector<NamespaceInfo>& namespaces() const noexcept { return namespaces_; }
    const NamespaceInfo& namespace_info(std::uint32_t nsid) const;
    std::uint32_t max_transfer_bytes() const noexcept { return max_transfer_; }
    std::uint32_t max_queue_entries() const noexcept { return max_queue_entries_; }
    std::uint32_t doorbell_stride() const noexcept { return doorbell_stride_; }
    std::chrono::milliseconds ready_timeout() const noexcept { return ready_timeout_; }
    dma::DmaArena& arena() noexcept { return *arena_; }
    dma::DmaPool& pool() noexcept { return *pool_; }

    // ---- admin commands (synchronous, on the admin queue; throw on failure) ----
    // Runs `command` and returns its completion; throws when the status is not success or no
    // completion comes within the admin timeout.
    CompletionEntry admin(SubmissionEntry command, const char* what);
    // Runs several independent commands with one doorbell write and waits for all of them;
    // throws for the first that failed (after all completed or the admin timeout passed).
    std::vector<CompletionEntry> admin_all(const std::vector<SubmissionEntry>& commands,
                                           const char* what);
    // Queues an admin command without waiting: its handler runs from poll_admin() (or from a
    // later admin()). For callers that wait on the admin queue's interrupt (vector 0) themselves.
    void submit_admin(SubmissionEntry command, QueuePair::Handler handler, void* context);
    NamespaceInfo identify_namespace(std::uint32_t nsid);
    std::vector<std::uint32_t> active_namespaces();
    // Number of Queues feature: asks for `wanted` I/O SQ/CQ pairs, returns how many were granted.
    unsigned set_queue_count(unsigned wanted);
    void set_interrupt_coalescing(unsigned threshold, unsigned time_100us);
    std::uint32_t get_feature(std::uint32_t feature_id);
    SmartLog smart_log();
    // Error Information log entries (64 bytes each), newest first.
    std::vector<std::vector<std::byte>> error_log(unsigned entries);
    // Abort (§5.1): returns dword 0 of its completion (bit 0 set: the command was not aborted).
    std::uint32_t abort(std::uint16_t sq_id, std::uint16_t command_id);

    // ---- I/O queues ----
    // Creates I/O CQ + SQ `id` (1-based) with `entries`; `vector`: the interrupt vector of the
    // CQ, or -1 for none (poll).
    std::unique_ptr<QueuePair> create_io_queue(std::uint16_t id, std::uint32_t entries, int vector);
    // Creates the queue pair's CQ and SQ in the controller again, on the memory it already has
    // (after reset(); the rings must have been emptied with QueuePair::reset_rings()).
    void register_io_queue(const QueuePair& queue, int vector);
    void delete_io_queue(const QueuePair& queue);

    // ---- events ----
    // Keeps `count` Asynchronous Event Requests outstanding; events are collected by
    // poll_admin() (call it now and then, e.g. from a management thread) and handed to
    // `handler`.
    void enable_async_events(std::function<void(const AsyncEvent&)> handler, unsigned count = 1);
    unsigned poll_admin();

    // Disables the controller (CC.EN = 0) and waits for CSTS.RDY = 0 within CAP.TO: after that the
    // device no longer touches any queue or buffer. `after_disable` runs then (to complete what
    // was in flight). Then enables it again with a fresh admin queue, asks again for the queue
    // count, and re-arms asynchronous events. I/O queues must be registered again by the caller.
    void reset(const std::function<void()>& after_disable = {});
    // Normal shutdown (§3.6.1): CC.SHN = 01b, wait for CSTS.SHST = 10b.
    void shutdown() noexcept;

    // BAR0: mapped when the backend can map it, else every access (doorbells included) is a
    // Device::region_read/region_write call.
    mmio::RegisterIo& registers() noexcept { return *registers_; }

  private:
    void initialize(const std::function<void()>& when_disabled);
    void wait_ready(bool ready, const char* step);
    void identify();
    std::vector<std::uint32_t> parse_namespace_list(const std::byte* page) const;
    NamespaceInfo decode_namespace(std::uint32_t nsid, const std::byte* data) const;
    void submit_async_event_request();

    Device& device_;
    ControllerOptions options_;
    RegisterWindows windows_;
    std::unique_ptr<mmio::RegisterIo> registers_;  // BAR0 0x0-0xfff
    std::unique_ptr<mmio::RegisterIo> doorbells_;  // BAR0 from 0x1000
    std::unique_ptr<dma::DmaArena> arena_;
    std::size_t space_index_ = 0;
    std::unique_ptr<dma::DmaPool> pool_;
    std::unique_ptr<QueuePair> admin_;
    ControllerInfo info_;
    std::vector<NamespaceInfo> namespaces_;
    std::uint32_t doorbell_stride_ = 4;
    std::uint32_t max_queue_entries_ = 2;
    std::uint32_t max_transfer_ = 0;
    std::chrono::milliseconds ready_timeout_{500};
    std::function<void(const AsyncEvent&)> event_handler_;
    unsigned events_outstanding_ = 0;
    unsigned events_wanted_ = 0;
    unsigned queues_requested_ = 0;
};

}  // namespace ring3::nvme
