// One queue's request loop of `ring3 perf blk`: issuing, completing, verifying, figures
// (perf_worker.hpp).
#include "perf_worker.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

#include "ring3/block/pattern.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"

namespace ring3::block::detail {

std::string error_text(int error) {
    return std::system_category().message(error);
}

Worker::Worker(Shared& shared, unsigned index, Queue& queue, dma::DmaPool& pool)
    : shared_(shared),
      options_(shared.options),
      layout_(shared.layout),
      index_(index),
      queue_(queue),
      buffers_(std::in_place, pool, options_.request_bytes, options_.queue_depth, kBufferAlignment),
      slots_(options_.queue_depth),
      free_(options_.queue_depth),
      retry_(options_.queue_depth),
      random_{options_.seed ^ (0xd1b54a32d192ed03ull * (index + 1))} {
    for (std::uint32_t i = 0; i < options_.queue_depth; ++i) {
        Slot& slot = slots_[i];
        slot.worker = this;
        if (!buffers_->get(slot.buffer)) {
            throw Error::invalid("perf blk", "buffer pool", "fewer buffers than the queue depth");
        }
        // Something other than zeros for writes without verify; overwritten when verifying,
        // and not needed at all when the run only reads (it costs start-up time).
        for (std::uint32_t b = 0; has_writes(options_.workload) && b < layout_.slot_blocks; ++b) {
            fill_pattern(
                {slot.buffer.data + std::size_t{b} * layout_.block_size, layout_.block_size}, b,
                options_.seed);
        }
        slot.request.data = slot.buffer.data;
        slot.request.callback = &Worker::on_completion;
        slot.request.context = &slot;
    }
}

void Worker::start_phase(Phase phase) {
    phase_ = phase;
    result_ = PhaseResult{};
    issuing_ = true;
    issued_ = 0;
    in_flight_ = 0;
    free_top_ = 0;
    retry_top_ = 0;
    for (std::uint32_t i = options_.queue_depth; i-- > 0;) {
        free_[free_top_++] = i;
    }
    published_ios_.store(0, std::memory_order_relaxed);
    published_bytes_.store(0, std::memory_order_relaxed);
    // Sequential and verify: each worker its own share of the range, in order.
    std::tie(begin_, end_) = share(layout_.slots, index_, options_.queues);
    cursor_ = begin_;
    if (phase == Phase::verify) {
        quota_ = ~std::uint64_t{0};  // every written slot once
        check_reads_ = true;
        return;
    }
    const auto [first, last] = share(options_.ios, index_, options_.queues);
    quota_ = options_.ios == 0 ? ~std::uint64_t{0} : last - first;
    check_reads_ = options_.verify;
}

// Chooses the next request into `slot`.
bool Worker::prepare(Slot& slot) noexcept {
    if (issued_ >= quota_) {
        return false;
    }
    Op op = Op::read;
    std::uint64_t index = 0;
    if (phase_ == Phase::verify) {
        while (cursor_ < end_ && !shared_.written->test(cursor_)) {
            ++cursor_;
        }
        if (cursor_ == end_) {
            return false;
        }
        index = cursor_++;
    } else {
        const Workload w = options_.workload;
        if (w == Workload::rw || w == Workload::randrw) {
            op = random_.below(100) < options_.read_percent ? Op::read : Op::write;
        } else {
            op = has_writes(w) ? Op::write : Op::read;
        }
        if (is_random(w)) {
            index = random_.below(layout_.full_slots);
        } else {
            if (cursor_ == end_) {
                if (options_.single_pass || begin_ == end_) {
                    return false;
                }
                cursor_ = begin_;  // wrap around
            }
            index = cursor_++;
        }
    }
    slot.slot = index;
    slot.attempts = 0;
    slot.request.op = op;
    slot.check = op == Op::read && check_reads_ &&
                 (phase_ == Phase::verify || !shared_.written || shared_.written->test(index));
    slot.request.lba = layout_.first_lba + index * layout_.slot_blocks;
    slot.request.blocks = layout_.blocks_of(index);
    if (op == Op::write && options_.verify) {
        for (std::uint32_t b = 0; b < slot.request.blocks; ++b) {
            fill_pattern(
                {slot.buffer.data + std::size_t{b} * layout_.block_size, layout_.block_size},
                slot.request.lba + b, options_.seed);
        }
    }
    return true;
}

void Worker::on_completion(void* context, const Status& status) {
    auto& slot = *static_cast<Slot*>(context);
    slot.worker->complete(slot, status);
}

void Worker::complete(Slot& slot, const Status& status) noexcept {
    if (abandoned_) {
        return;
    }
    const auto now = Clock::now();
    if (first_completion_ == Clock::time_point{}) {
        first_completion_ = now;
    }
    // Cycle counters of two CPUs may disagree a little: a thread moved between them can see time
    // go back, which counts as zero rather than as an enormous latency.
    result_.latency.record(
        static_cast<std::uint64_t>(std::max<Clock::rep>(0, (now - slot.submitted).count())));
    --in_flight_;
    const auto index = static_cast<std::uint32_t>(&slot - slots_.data());
    const Request& request = slot.request;
    if (!status.ok() && slot.attempts < options_.retries) {
        ++slot.attempts;
        ++result_.retried;
        retry_[retry_top_++] = index;  // the loop submits it again, as prepared
        return;
    }
    free_[free_top_++] = index;
    if (!status.ok()) {
        ++result_.errors;
        if (first_errors_.size() < options_.max_reported) {
            try {
                first_errors_.push_back(
                    fmt::format("{} of LBA {} ({} blocks) failed: {} (device status {:#06x})",
                                to_string(request.op), request.lba, request.blocks,
                                error_text(status.error), status.device_code));
            } catch (...) {  // out of memory on the error path: the count still says it
            }
        }
        return;
    }
    ++result_.ios;
    result_.bytes += std::uint64_t{request.blocks} * layout_.block_size;
    if (request.op == Op::write) {
        ++result_.writes;
        if (shared_.written) {
            shared_.written->mark(slot.slot);
        }
    } else {
        ++result_.reads;
        if (slot.check) {
            check(slot);
        }
    }
}

void Worker::check(const Slot& slot) noexcept {
    for (std::uint32_t b = 0; b < slot.request.blocks; ++b) {
        const std::span<const std::byte> block{
            slot.buffer.data + std::size_t{b} * layout_.block_size, layout_.block_size};
        ++blocks_checked_;
        try {
            // A match returns an empty string, which allocates nothing.
            std::string problem = check_pattern(block, slot.request.lba + b, options_.seed);
            if (!problem.empty()) {
                ++mismatches_;
                if (first_mismatches_.size() < options_.max_reported) {
                    first_mismatches_.push_back(std::move(problem));
                }
            }
        } catch (...) {
            ++mismatches_;
        }
    }
}

void Worker::stop_with(std::string message) noexcept {
    issuing_ = false;
    if (fatal_.empty()) {
        fatal_ = std::move(message);
    }
}

void Worker::run(Phase phase) noexcept {
    started_ = Clock::now();
    deadline_ = phase == Phase::run && shared_.run_time.count() > 0 ? started_ + shared_.run_time
                                                                    : Clock::time_point::max();
    first_completion_ = {};
    try {
        start_phase(phase);
        loop();
    } catch (const std::exception& e) {
        stop_with(fmt::format("queue {}: {}", index_, e.what()));
    } catch (...) {
        stop_with(fmt::format("queue {}: unknown exception", index_));
    }
    finished_ = Clock::now();
    first_completion_age_ = first_completion_ == Clock::time_point{}
                                ? Clock::duration{-1}
                                : finished_ - first_completion_;
    end_steady_ = std::chrono::steady_clock::now();
    end_wall_ = std::chrono::system_clock::now();
    published_ios_.store(result_.ios, std::memory_order_relaxed);
    published_bytes_.store(result_.bytes, std::memory_order_relaxed);
}

// The hot loop: fill the queue up to the depth (one burst, one flush), wait for completions,
// repeat. A request refused with -EAGAIN stays prepared in its slot and goes first next time.
void Worker::loop() {
    Slot* pending = nullptr;
    auto last_progress = Clock::now();
    std::uint64_t last_completed = 0;
    for (;;) {
        bool refused = false;
        // Retries go first, and also after the workload stopped issuing (unless a queue failed).
        while ((issuing_ || (retry_top_ != 0 && fatal_.empty())) &&
               in_flight_ < options_.queue_depth) {
            if (pending == nullptr && retry_top_ != 0) {
                pending = &slots_[retry_[--retry_top_]];
            }
            if (pending == nullptr) {
                if (!issuing_) {
                    break;
                }
                Slot& slot = slots_[free_[--free_top_]];
                if (!prepare(slot)) {
                    free_[free_top_++] = static_cast<std::uint32_t>(&slot - slots_.data());
                    issuing_ = false;
                    break;
                }
                pending = &slot;
            }
            pending->submitted = Clock::now();
            const int rc = queue_.enqueue(pending->request);
            if (rc == -EAGAIN) {
                ++result_.queue_full;
                refused = true;
                break;
            }
            if (rc != 0) {
                stop_with(fmt::format("queue {}: submit {} of LBA {} ({} blocks) refused: {}",
                                      index_, to_string(pending->request.op), pending->request.lba,
                                      pending->request.blocks, error_text(-rc)));
                break;
            }
            last_progress = pending->submitted;
            if (pending->attempts == 0) {
                ++issued_;  // a retry is not a new request
            }
            pending = nullptr;
            ++in_flight_;
            result_.max_in_flight = std::max(result_.max_in_flight, in_flight_);
        }
        // The whole burst goes to the device with one notification.
        queue_.flush();
        if (!issuing_ && pending != nullptr && (pending->attempts == 0 || !fatal_.empty())) {
            result_.errors += pending->attempts != 0 ? 1 : 0;  // a retry the failure cut off
            free_[free_top_++] = static_cast<std::uint32_t>(pending - slots_.data());
            pending = nullptr;
        }
        if (in_flight_ == 0 && pending == nullptr && (retry_top_ == 0 || !fatal_.empty())) {
            result_.errors += retry_top_;  // failed, and left unretried because the run failed
            return;
        }
        if (in_flight_ == 0) {
            // Refused with nothing in flight: the driver is busy (a reset under way).
            std::this_thread::yield();
        } else {
            queue_.wait(kWaitSlice);
        }
        const auto now = Clock::now();
        const std::uint64_t completed = result_.ios + result_.errors;
        published_ios_.store(result_.ios, std::memory_order_relaxed);
        published_bytes_.store(result_.bytes, std::memory_order_relaxed);
        if (completed != last_completed) {
            last_completed = completed;
            last_progress = now;
        } else if (now - last_progress > options_.stall_timeout) {
            stop_with(fmt::format(
                "queue {}: no progress for {} ms with {} request(s) in flight{}; abandoned", index_,
                options_.stall_timeout.count(), in_flight_, refused ? " (submits refused)" : ""));
            if (pending != nullptr) {
                free_[free_top_++] = static_cast<std::uint32_t>(pending - slots_.data());
            }
            result_.errors += retry_top_;
            return;  // whatever is in flight stays with the device: the Worker is not freed
        }
        const bool cancelled =
            options_.cancel != nullptr && options_.cancel->load(std::memory_order_relaxed);
        if (cancelled || now >= deadline_) {
            issuing_ = false;
        }
    }
}

}  // namespace ring3::block::detail
