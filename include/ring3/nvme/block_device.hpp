// NVMe behind the generic block::BlockDevice face (one namespace per BlockDevice).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "ring3/block/block_device.hpp"
#include "ring3/core/cycle_clock.hpp"
#include "ring3/nvme/controller.hpp"

namespace ring3::nvme {

// The status the driver gives commands it completes itself after a controller reset.
inline constexpr std::uint16_t kAbortedByReset = 0x0008;  // Command Aborted due to SQ Deletion

struct BlockOptions {
    std::uint32_t namespace_id = 1;
    unsigned queues = 1;
    irq::WaitMode mode = irq::WaitMode::poll;  // interrupt vectors are enabled unless poll
    bool use_sgl = true;                       // when the controller supports SGLs
    // A command older than this is aborted, and when the controller will not abort it, the
    // controller is reset: every request in flight then completes with an error (ETIMEDOUT for
    // the late one, ECANCELED for the rest, each on its own queue's thread) and the queues are
    // created again. Recovery runs on the thread that noticed, inside Queue::wait(), once the
    // other queues' threads are out of their calls (they are woken if they sleep).
    std::chrono::milliseconds io_timeout{30000};
    ControllerOptions controller;
};

class NvmeBlockDevice;

// Why the block face cannot drive namespace `ns` as a plain array of blocks, or "" when it can:
// a namespace of another command set (zoned: writes only at a zone's write pointer), or one
// formatted with metadata or end-to-end protection information (which requests do not carry).
std::string block_face_refusal(const NamespaceInfo& ns);

class IoQueue final : public block::Queue {
  public:
    // `depth`: commands the caller keeps in flight; PRP-list pages are pooled for that many
    // (fewer when SGLs describe the data, where a list is only a fallback).
    IoQueue(NvmeBlockDevice& owner, Controller& controller, const NamespaceInfo& ns,
            std::unique_ptr<QueuePair> pair, unsigned depth, irq::Interrupt* interrupt, int vector,
            irq::WaitMode mode, bool use_sgl, std::chrono::milliseconds io_timeout);
    ~IoQueue() override;

    int enqueue(const block::Request& request) noexcept override;
    void flush() noexcept override;
    unsigned poll(unsigned max = 0) noexcept override;
    unsigned wait(std::chrono::microseconds timeout) override;
    unsigned outstanding() const noexcept override { return pair_->outstanding(); }
    unsigned depth() const noexcept override { return pair_->entries() - 1; }
    block::QueueStats stats() const noexcept override;

    QueuePair& pair() noexcept { return *pair_; }
    const QueueCounters& counters() const noexcept { return pair_->counters(); }
    bool uses_sgl() const noexcept { return use_sgl_; }
    int vector() const noexcept { return vector_; }
    irq::Interrupt* interrupt() const noexcept { return interrupt_; }

    // Recovery (see BlockOptions::io_timeout). A queue is "active" while its owner is inside
    // submit/poll/wait; recovery waits until every other queue is inactive, and new calls see it
    // under way and back off. Each queue then fails its own requests on its own thread.
    bool active() const noexcept { return active_.load(std::memory_order_seq_cst); }
    void fail_in_flight(int timed_out) noexcept;  // the late queue, on the recovering thread
    void mark_failed_by_reset() noexcept;         // the others: they fail on their next poll

  private:
    // A block request split into several commands completes when its last part does.
    struct Parent {
        IoQueue* queue = nullptr;
        block::Callback callback = nullptr;
        void* context = nullptr;
        std::uint32_t parts_left = 0;
        block::Status status;
        bool timed_out = false;
    };
    void check_timeout(bool force);
    unsigned poll_active(unsigned max) noexcept;

    // Marks the queue active for the duration of a call (a Dekker-style handshake with recovery:
    // store our flag, then read theirs; recovery stores its flag, then reads ours).
    class Activity {
      public:
        explicit Activity(IoQueue& queue) noexcept;
        ~Activity();
        explicit operator bool() const noexcept { return entered_; }

      private:
        IoQueue& queue_;
        bool entered_;
        bool outermost_;
    };
    static void on_completion(void* context, const CompletionEntry& entry);
    // Whether describing `bytes` at `data` takes a PRP list page.
    bool needs_list(const std::byte* data, std::uint64_t bytes) const noexcept;
    static bool fits_prp_pair(std::uint64_t first_iova, std::uint64_t bytes) noexcept;
    bool sgl_for(std::uint64_t first_iova, const std::byte* data,
                 std::uint64_t bytes) const noexcept;
    void set_data_pointer(SubmissionEntry& command, std::uint16_t cid, std::byte* data,
                          std::uint64_t bytes) noexcept;
    void release_list(std::uint16_t cid) noexcept;

    NvmeBlockDevice& owner_;
    Controller& controller_;
    dma::DmaArena& arena_;
    std::size_t space_;
    std::uint32_t nsid_;
    std::uint32_t block_size_;
    std::uint64_t block_count_;
    std::uint32_t max_transfer_;
    std::unique_ptr<QueuePair> pair_;
    irq::Interrupt* interrupt_;
    int vector_;
    irq::WaitMode mode_;
    bool use_sgl_;
    std::chrono::milliseconds io_timeout_;
    std::atomic<bool> active_{false};
    std::atomic<bool> pending_failure_{false};
    unsigned calls_since_sweep_ = 0;
    static constexpr std::chrono::seconds kLostProbe{1};
    CycleClock::time_point last_lost_probe_{};
    std::vector<Parent> parents_;
    std::vector<std::uint32_t> free_parents_;
    // PRP list pages (§4.3.1.2), taken per command and given back at its completion; sized by
    // the depth in use, not by the ring. kNoList where a command holds none.
    static constexpr std::uint32_t kNoList = ~std::uint32_t{0};
    std::optional<dma::BufferPool> lists_;  // none when no command can need one
    std::vector<std::uint32_t> list_of_command_;
    // One Dataset Management range (16 bytes, NVM Command Set §3.2.3) per command id.
    dma::DmaBuffer ranges_;
};

class NvmeBlockDevice final : public block::BlockDevice {
  public:
    NvmeBlockDevice(std::unique_ptr<Device> device, const BlockOptions& options);
    ~NvmeBlockDevice() override;

    std::string name() const override;
    block::Geometry geometry() const override;
    block::Queue& open_queue(unsigned index, unsigned depth = 0,
                             irq::WaitMode mode = irq::WaitMode::poll) override;
    dma::DmaPool& dma_pool() override;

    Controller& controller() noexcept { return *controller_; }
    const NamespaceInfo& namespace_info() const noexcept { return namespace_; }
    const std::vector<irq::Interrupt>& interrupts() const noexcept { return interrupts_; }
    unsigned resets() const noexcept { return resets_; }
    bool recovering() const noexcept { return recovering_.load(std::memory_order_seq_cst); }
    bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }

    // Called by a queue whose command `command_id` outlived the I/O timeout.
    // `lost`: the device is gone (Device::lost()); everything fails with it, no reset.
    // `replaced`: the device is a fresh one (Device::incarnation() changed): reset, no abort.
    void recover(IoQueue& queue, std::uint16_t command_id,
                 std::optional<std::string> lost = std::nullopt, bool replaced = false);
    // The Device::incarnation() the controller was last brought up on (queues compare).
    std::atomic<std::uint64_t> incarnation_{0};

  private:
    std::unique_ptr<Device> device_;
    BlockOptions options_;
    std::vector<irq::Interrupt> interrupts_;
    std::optional<IrqKind> vector_kind_;
    std::unique_ptr<Controller> controller_;
    NamespaceInfo namespace_;
    unsigned granted_queues_ = 0;
    std::vector<std::unique_ptr<IoQueue>> queues_;
    unsigned resets_ = 0;
    std::atomic<bool> recovering_{false};
    std::atomic<bool> failed_{false};
    std::atomic<bool> lost_{false};  // Device::lost() said so: no more admin commands
};

}  // namespace ring3::nvme
