// An emulated NVMe controller served over vfio-user (NVM Express Base Specification 2.0, NVM
// Command Set Specification 1.0; sections cited where each rule is implemented).
//
// BAR0 is 16 KiB: the controller registers (0x0-0xfff) are trapped into REGION_READ/WRITE, the
// doorbells (0x1000 to the BAR's end, CAP.DSTRD = 0) are shared memory the client maps and a
// polling thread watches, so I/O takes no message round trip (the spec's own sparse-mmap
// example). The MSI-X table and PBA sit apart in BAR4, so that everything from 0x1000 on can be
// mapped (the driver opens one register window for all doorbells). Namespaces are slices of one
// backing store: memory, or a file mapped shared (so it holds the data afterwards).
//
// Faults are injected per run, deterministically, counted over I/O commands (admin commands do
// not count) from the controller's creation: see emu::Faults.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ring3/core/mapping.hpp"
#include "ring3/emu/server.hpp"
#include "ring3/nvme/spec.hpp"

namespace ring3::emu {

struct Faults {
    std::uint64_t delay_us = 0;      // delay:US    every completion is posted US µs late
    std::uint64_t drop_io = 0;       // drop:N      the Nth I/O command is never completed
    std::uint64_t corrupt_io = 0;    // corrupt:N   the Nth I/O completion has a wrong command id
    std::uint64_t fatal_after = 0;   // cfs:N       CSTS.CFS is set after N I/O commands
    std::uint64_t vanish_after = 0;  // vanish:N    the connection is dropped after N I/O commands
};
// Adds one `KIND[:ARG]` (as above) to `faults`; throws ring3::Error naming the bad text.
void parse_fault(std::string_view text, Faults& faults);

struct NvmeOptions {
    std::uint64_t size = 1ull << 30;  // bytes of the backing store, split among the namespaces
    std::string backing;              // a file (created/extended to `size`); empty: memory
    unsigned namespaces = 1;
    unsigned queues = 4;        // I/O queue pairs offered (Number of Queues, §5.27.1.5)
    std::uint8_t mdts = 7;      // 2^7 x 4 KiB = 512 KiB per command
    std::uint16_t mqes = 1023;  // CAP.MQES, 0-based
    std::uint8_t lbads = 9;     // 512-byte blocks
    Faults faults;
};

class NvmeController final : public DeviceModel {
  public:
    static constexpr std::uint64_t kBarSize = 0x4000;
    static constexpr std::uint64_t kDoorbells = 0x1000;
    static constexpr unsigned kMsixBar = 4;
    static constexpr std::uint64_t kMsixBarSize = 0x4000;
    static constexpr std::uint32_t kMsixTable = 0x0;
    static constexpr std::uint32_t kMsixPba = 0x2000;

    // Declares the function's config space and BAR0 and starts the polling thread. Throws
    // ring3::Error for bad options or a backing file that cannot be used.
    NvmeController(PciFunction& function, NvmeOptions options);
    NvmeController(const NvmeController&) = delete;
    NvmeController& operator=(const NvmeController&) = delete;
    ~NvmeController() override;  // stops the poller; writes a file backing back

    void reset() override;  // under the function's lock

    // Counters (any thread).
    std::uint64_t io_commands() const noexcept { return io_commands_.load(); }
    std::uint64_t admin_commands() const noexcept { return admin_commands_.load(); }
    // The backing store (namespace n starts at (n - 1) * namespace_bytes()).
    std::span<std::byte> storage() const noexcept { return storage_.bytes(); }
    std::uint64_t namespace_blocks() const noexcept { return namespace_blocks_; }

  private:
    struct Sq {
        bool live = false;
        std::uint64_t base = 0;
        std::uint32_t entries = 0;
        std::uint32_t head = 0;
        std::uint16_t cq = 0;
    };
    struct Cq {
        bool live = false;
        std::uint64_t base = 0;
        std::uint32_t entries = 0;
        std::uint32_t tail = 0;
        std::uint32_t head = 0;      // as the client last rang it
        std::uint32_t reserved = 0;  // completions owed (waiting in pending_)
        std::uint16_t phase = 1;
        bool interrupts = false;
        unsigned vector = 0;
        bool raise = false;  // an entry was posted in this pass
    };
    struct Completion {
        std::chrono::steady_clock::time_point due;
        std::uint16_t cq = 0;
        std::uint16_t sq = 0;
        std::uint16_t command_id = 0;
        std::uint16_t status = 0;  // SCT << 8 | SC
        std::uint32_t dw0 = 0;
    };
    // A run of client memory a command's data pointer names.
    struct Run {
        std::uint64_t iova = 0;
        std::uint64_t length = 0;
    };

    // Registers (§3.1.3), BAR0 0x0-0xfff.
    std::uint64_t register_read(std::uint64_t offset, unsigned width);
    void register_write(std::uint64_t offset, unsigned width, std::uint64_t value);
    std::uint32_t reg32(std::size_t offset) const noexcept;
    std::uint64_t reg64(std::size_t offset) const noexcept;
    void set_reg32(std::size_t offset, std::uint32_t value) noexcept;
    void enable();
    void disable();

    // The poller and the queues.
    void poll_loop();
    bool poll_once();
    std::uint32_t doorbell(std::size_t index) const noexcept;
    void complete(const Completion& completion);
    bool post(const Completion& completion);
    void post_due(std::chrono::steady_clock::time_point now);
    void raise_interrupts();

    // Commands (nvme_admin.cpp, nvme_io.cpp).
    bool execute_admin(const nvme::SubmissionEntry& c, Completion& done);
    std::uint16_t identify(const nvme::SubmissionEntry& c);
    std::uint16_t get_log_page(const nvme::SubmissionEntry& c);
    std::uint16_t create_cq(const nvme::SubmissionEntry& c);
    std::uint16_t create_sq(const nvme::SubmissionEntry& c);
    std::uint16_t delete_sq(const nvme::SubmissionEntry& c);
    std::uint16_t delete_cq(const nvme::SubmissionEntry& c);
    std::uint16_t set_features(const nvme::SubmissionEntry& c, std::uint32_t& dw0);
    std::uint16_t get_features(const nvme::SubmissionEntry& c, std::uint32_t& dw0);
    std::uint16_t execute_io(const nvme::SubmissionEntry& c);
    std::uint16_t data_runs(const nvme::SubmissionEntry& c, std::uint64_t bytes,
                            std::vector<Run>& runs);
    // Copies between client memory (through runs) and `local`; to_client: a read's direction.
    std::uint16_t transfer(const nvme::SubmissionEntry& c, std::span<std::byte> local,
                           bool to_client);
    std::uint32_t queue_limit() const noexcept;

    PciFunction& function_;
    NvmeOptions options_;
    Mapping storage_;
    std::uint64_t namespace_blocks_ = 0;
    std::span<std::byte> doorbells_;
    std::uint8_t regs_[0x40] = {};
    std::vector<Sq> sqs_;
    std::vector<Cq> cqs_;
    std::deque<Completion> pending_;
    std::vector<std::uint16_t> held_events_;  // Asynchronous Event Request command ids
    std::uint32_t granted_ = 0;               // I/O queue pairs granted by Set Features
    std::uint32_t async_event_config_ = 0;
    bool ready_ = false;
    bool halted_ = false;             // fatal status, shutdown or vanished: no more commands
    std::vector<Run> runs_;           // scratch for data_runs
    std::vector<std::byte> scratch_;  // identify / log pages
    std::atomic<std::uint64_t> io_commands_{0};
    std::atomic<std::uint64_t> admin_commands_{0};
    std::atomic<bool> stop_{false};
    std::thread poller_;
};

}  // namespace ring3::emu
