// A NetPort in memory for unit tests: each queue has an inbox of frames the test puts there
// (rx_burst() copies them into pool buffers) and an outbox of the frames it sent (tx_burst()
// copies them out and gives the buffer back, like a NIC whose transmit completes at once).
// Packet buffers are real BufferPool buffers in a DmaArena behind the fake IOMMU, with a
// configurable headroom so the engine must honour Packet::offset.
//
// Faults on demand: a transmit ring that takes at most `tx_room` frames per burst, transmit
// refused entirely for the first `refuse_first_bursts` bursts, a queue that fails.
//
// Inboxes and outboxes are under a mutex per queue (a fake has no need to be fast). Fill inboxes
// before a run, read outboxes after it.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fake_iova_space.hpp"
#include "ring3/dma/arena.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/net/net_port.hpp"

namespace ring3::net::testing {

using Frame = std::vector<std::byte>;

struct FakeNetFaults {
    unsigned tx_room = 0;              // frames accepted per tx_burst (0: all)
    unsigned refuse_first_bursts = 0;  // the first n tx_bursts accept nothing
    int fail_with = 0;                 // an errno: the queue reports failure() at once
};

class FakeNetQueue final : public Queue {
  public:
    FakeNetQueue(unsigned index, unsigned depth, irq::WaitMode mode, std::uint16_t headroom,
                 std::uint32_t max_frame, dma::BufferPool& pool, const FakeNetFaults& faults,
                 std::unique_ptr<dma::BufferPool> own)
        : index_(index),
          depth_(depth),
          mode_(mode),
          headroom_(headroom),
          max_frame_(max_frame),
          pool_(pool),
          faults_(faults),
          own_(std::move(own)) {}

    unsigned rx_burst(Packet* packets, unsigned n) noexcept override {
        note_thread();
        const std::lock_guard lock(mutex_);
        unsigned k = 0;
        while (k < n && !inbox_.empty()) {
            dma::Buffer buffer;
            if (!pool_.get(buffer)) {
                break;
            }
            const Frame& frame = inbox_.front();
            std::memcpy(buffer.data + headroom_, frame.data(), frame.size());
            packets[k++] =
                Packet{buffer, headroom_, kNoFlags, static_cast<std::uint32_t>(frame.size())};
            ++stats_.rx_packets;
            stats_.rx_bytes += frame.size();
            inbox_.pop_front();
        }
        return k;
    }

    unsigned tx_burst(Packet* packets, unsigned n) noexcept override {
        note_thread();
        const std::lock_guard lock(mutex_);
        if (bursts_++ < faults_.refuse_first_bursts) {
            return 0;
        }
        const unsigned room = faults_.tx_room == 0 ? n : std::min(n, faults_.tx_room);
        for (unsigned i = 0; i < room; ++i) {
            const Packet& p = packets[i];
            if (p.length < 14 || p.length > max_frame_ || p.offset < headroom_) {
                ++stats_.tx_errors;
            } else {
                outbox_.emplace_back(p.data(), p.data() + p.length);
                ++stats_.tx_packets;
                stats_.tx_bytes += p.length;
            }
            pool_.put(p.buffer);
        }
        if (room != 0) {
            ++stats_.notifications;  // one doorbell per burst, as a NIC driver would
        }
        return room;
    }

    unsigned reclaim() noexcept override { return 0; }
    unsigned tx_pending() const noexcept override { return 0; }
    unsigned wait(unsigned events, std::chrono::microseconds) override {
        note_thread();
        const std::lock_guard lock(mutex_);
        unsigned ready = events & kReadyTx;
        if ((events & kReadyRx) != 0 && !inbox_.empty()) {
            ready |= kReadyRx;
        }
        if (ready == kReadyNone) {
            std::this_thread::yield();
        }
        return ready;
    }
    QueueStats stats() const noexcept override { return stats_; }
    int failure() const noexcept override { return faults_.fail_with; }
    unsigned index() const noexcept override { return index_; }
    unsigned depth() const noexcept override { return depth_; }
    irq::WaitMode mode() const noexcept override { return mode_; }
    dma::BufferPool& pool() noexcept override { return pool_; }
    std::uint16_t headroom() const noexcept override { return headroom_; }

    void push(Frame frame) {
        const std::lock_guard lock(mutex_);
        inbox_.push_back(std::move(frame));
    }
    std::vector<Frame> sent() const {
        const std::lock_guard lock(mutex_);
        return outbox_;
    }
    std::uint64_t bursts() const {
        const std::lock_guard lock(mutex_);
        return bursts_;
    }
    std::set<std::thread::id> threads() const {
        const std::lock_guard lock(threads_mutex_);
        return threads_;
    }

  private:
    void note_thread() {
        const std::lock_guard lock(threads_mutex_);
        threads_.insert(std::this_thread::get_id());
    }

    unsigned index_;
    unsigned depth_;
    irq::WaitMode mode_;
    std::uint16_t headroom_;
    std::uint32_t max_frame_;
    dma::BufferPool& pool_;
    const FakeNetFaults& faults_;
    std::unique_ptr<dma::BufferPool> own_;
    mutable std::mutex mutex_;
    std::deque<Frame> inbox_;
    std::vector<Frame> outbox_;
    std::uint64_t bursts_ = 0;
    QueueStats stats_;
    mutable std::mutex threads_mutex_;
    std::set<std::thread::id> threads_;
};

class FakeNetPort final : public NetPort {
  public:
    explicit FakeNetPort(std::string name = "fake0", unsigned queue_pairs = 4,
                         std::uint16_t headroom = 16)
        : name_(std::move(name)), queues_(queue_pairs) {
        info_.mac = MacAddress{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};
        info_.mtu = 1500;
        info_.max_frame = 1514;
        info_.queue_pairs = queue_pairs;
        info_.max_queue_depth = 1024;
        info_.buffer_size = 2048;
        info_.headroom = headroom;
        dma::ArenaOptions options;
        options.chunk_size = 256 * 1024;
        options.max_size = 8 << 20;
        options.huge_pages = dma::HugePages::never;
        options.name = "fake-net";
        arena_ = dma::DmaArena::create(options);
        arena_->attach(iommu_);
        pool_ = std::make_unique<dma::DmaPool>(*arena_);
    }
    ~FakeNetPort() override { queues_.clear(); }

    std::string name() const override { return name_; }
    PortInfo info() const override { return info_; }
    LinkStatus link() const override { return {true, 10000, true}; }
    Queue& open_queue(unsigned index, unsigned depth = 0, irq::WaitMode mode = irq::WaitMode::poll,
                      dma::BufferPool* pool = nullptr) override {
        if (index >= queues_.size() || depth > info_.max_queue_depth) {
            throw std::invalid_argument(name_ + ": bad queue index or depth");
        }
        if (!queues_[index]) {
            depth = depth == 0 ? 64 : depth;
            std::unique_ptr<dma::BufferPool> own;
            if (pool == nullptr) {
                own = std::make_unique<dma::BufferPool>(*pool_, info_.buffer_size, 2 * depth + 64);
                pool = own.get();
            }
            queues_[index] = std::make_unique<FakeNetQueue>(
                index, depth, mode, info_.headroom, info_.max_frame, *pool, faults, std::move(own));
        }
        return *queues_[index];
    }
    dma::DmaPool& dma_pool() override { return *pool_; }

    FakeNetFaults faults;
    PortInfo& mutable_info() { return info_; }
    FakeNetQueue& queue(unsigned index) {
        open_queue(index);
        return *queues_[index];
    }

  private:
    std::string name_;
    PortInfo info_;
    dma::testing::FakeIovaSpace iommu_{dma::IovaSpace::kAnyGranule, false};
    std::unique_ptr<dma::DmaArena> arena_;
    std::unique_ptr<dma::DmaPool> pool_;
    std::vector<std::unique_ptr<FakeNetQueue>> queues_;
};

}  // namespace ring3::net::testing
