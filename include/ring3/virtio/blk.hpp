// virtio-blk (VIRTIO 1.2 §5.2) behind the generic block::BlockDevice face: one virtqueue per
// block::Queue (VIRTIO_BLK_F_MQ gives several), read, write, flush, and discard / write zeroes
// when offered. Requests larger than max_transfer are split; each part is one descriptor chain
// (header, data segments, status byte).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "ring3/block/block_device.hpp"
#include "ring3/block/open.hpp"
#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/timeline.hpp"
#include "ring3/device/device.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/virtio/session.hpp"
#include "ring3/virtio/transport.hpp"
#include "ring3/virtio/virtqueue.hpp"

namespace ring3::virtio {

struct BlkOptions {
    unsigned queues = 1;
    irq::WaitMode mode = irq::WaitMode::poll;  // interrupt vectors are enabled unless poll
    std::uint16_t max_queue_size = 1024;       // ring entries, below the device's maximum
    std::uint32_t max_transfer = 512 * 1024;   // bytes per chain (a request above it is split)
    dma::ArenaOptions arena;
    TransportOptions transport;
    Timeline* timeline = nullptr;  // start-up steps are marked on it when given
};

// Names of the virtio-blk feature bits (§5.2.3), for logs.
const char* blk_feature_name(unsigned bit);

// The device configuration as the driver uses it (§5.2.4).
struct BlkConfig {
    std::uint64_t capacity = 0;  // 512-byte sectors
    std::uint32_t block_size = kSectorSize;
    std::uint32_t size_max = 0;  // 0: no limit given
    std::uint32_t seg_max = 0;
    std::uint16_t num_queues = 1;
    std::uint32_t max_discard_sectors = 0;
    std::uint32_t max_write_zeroes_sectors = 0;
    bool writeback = true;
};

class BlkDevice;

class BlkQueue final : public block::Queue {
  public:
    BlkQueue(BlkDevice& owner, std::unique_ptr<SplitQueue> queue, irq::Interrupt* interrupt);
    ~BlkQueue() override;

    int enqueue(const block::Request& request) noexcept override;
    void flush() noexcept override;
    unsigned poll(unsigned max = 0) noexcept override;
    unsigned wait(std::chrono::microseconds timeout) override;
    unsigned outstanding() const noexcept override { return outstanding_; }
    unsigned depth() const noexcept override { return depth_; }
    block::QueueStats stats() const noexcept override;

    void set_mode(irq::WaitMode mode, unsigned depth) noexcept;
    SplitQueue& virtqueue() noexcept { return *queue_; }
    irq::Interrupt* interrupt() const noexcept { return interrupt_; }
    // Status bytes other than OK / IOERR / UNSUPP, and chains the device left without a status.
    std::uint64_t bad_status() const noexcept { return bad_status_; }

  private:
    struct Parent {
        block::Callback callback = nullptr;
        void* context = nullptr;
        std::uint32_t parts_left = 0;
        block::Status status;
    };
    // Per chain (indexed by its head): the header and status the device reads and writes, and
    // with VIRTIO_F_INDIRECT_DESC the chain's indirect descriptor table right after them.
    struct alignas(16) Slot {
        BlkRequestHeader header;
        BlkDiscardWriteZeroes range;
        std::uint8_t status;
    };
    Slot& slot(std::uint16_t head) noexcept {
        return *reinterpret_cast<Slot*>(slots_.data() + std::size_t{head} * slot_stride_);
    }
    static void on_used(void* owner, void* context, std::uint16_t head,
                        std::uint32_t written) noexcept;
    unsigned fail_with_device() noexcept;

    BlkDevice& owner_;
    std::unique_ptr<SplitQueue> queue_;
    irq::Interrupt* interrupt_;
    irq::WaitMode mode_ = irq::WaitMode::poll;
    unsigned depth_ = 0;
    unsigned outstanding_ = 0;  // block requests (not chains)
    dma::DmaBuffer slots_;
    std::size_t slot_stride_ = sizeof(Slot);
    bool indirect_ = false;
    std::vector<Parent> parents_;
    std::vector<std::uint32_t> free_parents_;
    CycleClock::time_point last_health_check_{};
    std::vector<Segment> segments_;  // scratch for one chain
    std::uint64_t bad_status_ = 0;
    bool failed_ = false;  // the device broke the queue: it needs a reset
};

class BlkDevice final : public block::BlockDevice {
  public:
    BlkDevice(std::unique_ptr<Device> device, const BlkOptions& options);
    ~BlkDevice() override;

    std::string name() const override;
    block::Geometry geometry() const override;
    block::Queue& open_queue(unsigned index, unsigned depth = 0,
                             irq::WaitMode mode = irq::WaitMode::poll) override;
    dma::DmaPool& dma_pool() override { return session_->pool(); }

    PciTransport& transport() noexcept { return session_->transport(); }
    // The device's health (Session::check_health), and the reset that must come before
    // requests still with a failed device are given back (it stops the device's DMA).
    int check_health(CycleClock::time_point& last_check) noexcept {
        return session_->check_health(last_check);
    }
    int failure() const noexcept { return session_->failure(); }
    int fail(int error, std::string_view why) noexcept { return session_->fail(error, why); }
    void reset_device() noexcept { session_->reset_device(); }
    const BlkConfig& config() const noexcept { return config_; }
    std::uint32_t max_transfer() const noexcept { return max_transfer_; }
    std::uint32_t max_data_segments() const noexcept { return max_segments_; }
    std::uint64_t segment_limit() const noexcept { return segment_limit_; }
    bool indirect() const noexcept { return session_->has(feature::indirect_desc); }
    dma::DmaArena& arena() noexcept { return session_->arena(); }
    std::size_t space_index() const noexcept { return session_->space_index(); }
    const std::vector<irq::Interrupt>& interrupts() const noexcept {
        return session_->interrupts();
    }

  private:
    void start(std::unique_ptr<Device> device);
    void stop() noexcept;

    BlkOptions options_;
    std::unique_ptr<Session> session_;  // outlives the queues (their rings are in its pool)
    BlkConfig config_;
    std::uint32_t max_transfer_ = 0;
    std::uint32_t max_segments_ = 0;   // data descriptors per chain
    std::uint64_t segment_limit_ = 0;  // bytes per data descriptor
    std::uint16_t ring_size_ = 0;
    std::vector<std::unique_ptr<BlkQueue>> queues_;
};

// The block-face factory the driver registry calls (vendor 1af4, device 1042; and 1001, the
// transitional id, to say clearly that a legacy-only device is not driven).
std::unique_ptr<block::BlockDevice> open_blk(std::unique_ptr<Device> device,
                                             const block::OpenBlockOptions& options);

}  // namespace ring3::virtio
