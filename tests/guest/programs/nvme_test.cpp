// NVMe driver checks inside a QEMU guest (tests/guest/cases/nvme-*.sh put the controller on
// vfio-pci or uio_pci_generic and name it in RING3_NVME; RING3_BACKEND is "vfio" or "uio").
#include <gtest/gtest.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <new>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "ring3/block/open.hpp"
#include "ring3/block/pattern.hpp"
#include "ring3/core/error.hpp"
#include "ring3/nvme/block_device.hpp"
#include "test_support.hpp"

namespace ring3 {
namespace {

std::string env(const char* name) {
    return testing::required_env(name);
}

std::string spec() {
    return env("RING3_BACKEND") + ":" + env("RING3_NVME");
}

struct Tracker {
    unsigned done = 0;
    unsigned failed = 0;
    block::Status last;
};

void on_done(void* context, const block::Status& status) {
    auto* tracker = static_cast<Tracker*>(context);
    ++tracker->done;
    if (!status.ok()) {
        ++tracker->failed;
        tracker->last = status;
    }
}

// Writes (or reads and checks) `count` requests of `bs` bytes from LBA `start`, `depth` in flight.
void run(block::BlockDevice& device, block::Queue& queue, bool write, std::uint32_t bs,
         std::uint64_t start, unsigned count, std::uint64_t seed) {
    const auto g = device.geometry();
    const std::uint32_t blocks = bs / g.block_size;
    constexpr unsigned kDepth = 8;
    std::vector<dma::DmaBuffer> buffers;
    for (unsigned i = 0; i < kDepth; ++i) {
        buffers.push_back(device.dma_pool().allocate(bs, 4096));
    }
    Tracker tracker;
    unsigned submitted = 0;
    std::vector<std::uint64_t> lba_of(kDepth);
    std::vector<unsigned> finished_before(kDepth, 0);
    // Simple rounds: fill every buffer slot, wait for all, check, repeat.
    while (submitted < count) {
        const unsigned round = std::min(kDepth, count - submitted);
        for (unsigned i = 0; i < round; ++i) {
            const std::uint64_t lba = start + std::uint64_t{submitted + i} * blocks;
            lba_of[i] = lba;
            if (write) {
                for (std::uint32_t b = 0; b < blocks; ++b) {
                    block::fill_pattern(
                        buffers[i].bytes().subspan(std::size_t{b} * g.block_size, g.block_size),
                        lba + b, seed);
                }
            } else {
                std::memset(buffers[i].data(), 0, bs);
            }
            block::Request request;
            request.op = write ? block::Op::write : block::Op::read;
            request.lba = lba;
            request.blocks = blocks;
            request.data = buffers[i].data();
            request.callback = on_done;
            request.context = &tracker;
            ASSERT_EQ(queue.submit(request), 0);
        }
        const unsigned target = tracker.done + round;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (tracker.done < target) {
            queue.wait(std::chrono::milliseconds(100));
            ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "requests did not complete";
        }
        ASSERT_EQ(tracker.failed, 0u)
            << "error " << tracker.last.error << " device status " << tracker.last.device_code;
        if (!write) {
            for (unsigned i = 0; i < round; ++i) {
                for (std::uint32_t b = 0; b < blocks; ++b) {
                    const std::string problem = block::check_pattern(
                        buffers[i].bytes().subspan(std::size_t{b} * g.block_size, g.block_size),
                        lba_of[i] + b, seed);
                    ASSERT_EQ(problem, "");
                }
            }
        }
        submitted += round;
    }
}

TEST(Nvme, IdentifiesQemusController) {
    auto device = open_device(spec());
    nvme::Controller controller(*device);
    EXPECT_EQ(controller.info().serial, "ring3-nvme0");
    EXPECT_EQ(controller.info().version, 0x00010400u);
    ASSERT_FALSE(controller.namespaces().empty());
    EXPECT_EQ(controller.namespaces()[0].id, 1u);
    EXPECT_GT(controller.namespaces()[0].size, 0u);
    std::printf("model '%s' mdts %u max transfer %u sgl %d\n", controller.info().model.c_str(),
                controller.info().mdts, controller.max_transfer_bytes(),
                controller.info().supports_sgl());
}

class NvmeSizes : public ::testing::TestWithParam<std::tuple<std::uint32_t, std::string, bool>> {};

TEST_P(NvmeSizes, WritesAndReadsBackThePattern) {
    const auto [bs, mode_name, sgl] = GetParam();
    nvme::BlockOptions options;
    options.mode = *irq::parse_wait_mode(mode_name);
    options.use_sgl = sgl;
    auto device = std::make_unique<nvme::NvmeBlockDevice>(open_device(spec()), options);
    auto& queue = device->open_queue(0, 32, options.mode);
    EXPECT_EQ(static_cast<nvme::IoQueue&>(queue).uses_sgl(), sgl);
    const std::uint64_t seed = 0x5eed0000u + bs;
    const unsigned count = std::min<unsigned>(64, static_cast<unsigned>((8u << 20) / bs));
    run(*device, queue, true, bs, 0, count, seed);
    run(*device, queue, false, bs, 0, count, seed);
    std::printf("%s: %u x %u bytes written and verified (%s mode, %s)\n", device->name().c_str(),
                count, bs, mode_name.c_str(), sgl ? "SGL" : "PRP");
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, NvmeSizes,
    ::testing::Values(std::make_tuple(4096u, std::string("poll"), false),
                      std::make_tuple(8192u, std::string("poll"), false),     // PRP2
                      std::make_tuple(65536u, std::string("poll"), false),    // PRP list
                      std::make_tuple(2u << 20, std::string("poll"), false),  // split at MDTS
                      std::make_tuple(65536u, std::string("poll"), true),
                      std::make_tuple(2u << 20, std::string("poll"), true),
                      std::make_tuple(65536u, std::string("interrupt"), false),
                      std::make_tuple(65536u, std::string("adaptive"), true)));

}  // namespace
}  // namespace ring3

namespace ring3 {
namespace {

// ---- faults: timeouts, IOMMU containment ----

struct Waiter {
    bool done = false;
    block::Status status;
};

void on_wait_done(void* context, const block::Status& status) {
    auto* waiter = static_cast<Waiter*>(context);
    waiter->status = status;
    waiter->done = true;
}

struct CompletionEntryResult {
    bool done = false;
    nvme::CompletionEntry entry{};
};

// Runs one raw command on `pair` and returns its completion (the tests build commands the
// block face would refuse to send).
CompletionEntryResult raw_command(nvme::QueuePair& pair, nvme::SubmissionEntry command) {
    CompletionEntryResult result;
    const auto handler = [](void* context, const nvme::CompletionEntry& entry) {
        auto* r = static_cast<CompletionEntryResult*>(context);
        r->entry = entry;
        r->done = true;
    };
    EXPECT_GE(pair.enqueue(command, handler, &result), 0);
    pair.ring_doorbell();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!result.done && std::chrono::steady_clock::now() < deadline) {
        pair.process_completions();
    }
    EXPECT_TRUE(result.done) << "no completion within 10 s";
    return result;
}

TEST(NvmeFaults, SlowNamespaceTimesOutAndTheDriverRecovers) {
    const auto slow_nsid = static_cast<std::uint32_t>(std::stoul(env("RING3_SLOW_NSID")));
    nvme::BlockOptions options;
    options.namespace_id = slow_nsid;
    options.io_timeout = std::chrono::milliseconds(2000);
    auto device = std::make_unique<nvme::NvmeBlockDevice>(open_device(spec()), options);
    auto& queue = static_cast<nvme::IoQueue&>(device->open_queue(0, 16));
    const auto cap_to = device->controller().ready_timeout();
    auto buffer = device->dma_pool().allocate(4096, 4096);

    Waiter waiter;
    block::Request request;
    request.op = block::Op::read;
    request.lba = 0;
    request.blocks = 4096 / device->geometry().block_size;
    request.data = buffer.data();
    request.callback = on_wait_done;
    request.context = &waiter;
    const auto start = std::chrono::steady_clock::now();
    ASSERT_EQ(queue.submit(request), 0);
    while (!waiter.done &&
           std::chrono::steady_clock::now() - start < options.io_timeout + cap_to * 2) {
        queue.wait(std::chrono::milliseconds(100));
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(waiter.done) << "the request never completed";
    EXPECT_EQ(waiter.status.error, ETIMEDOUT);
    EXPECT_EQ(device->resets(), 1u);
    EXPECT_LT(elapsed, options.io_timeout + cap_to) << "must fail within timeout + CAP.TO";
    std::printf(
        "slow namespace %u: request failed with ETIMEDOUT after %lld ms (timeout %lld ms, "
        "CAP.TO %lld ms); controller reset\n",
        slow_nsid,
        static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()),
        static_cast<long long>(options.io_timeout.count()), static_cast<long long>(cap_to.count()));

    // The re-created queue works: a read of namespace 1 through it.
    nvme::SubmissionEntry read{};
    read.opcode = nvme::io::read;
    read.nsid = 1;
    read.dptr[0] = buffer.iova();
    read.cdw12 = 0;  // one block
    const auto result = raw_command(queue.pair(), read);
    EXPECT_EQ(result.entry.status >> 1, 0) << nvme::status_name(result.entry.status >> 1);
}

// The IOMMU keeps the device inside what we mapped: a PRP list at an unmapped IOVA fails the
// command (QEMU: Data Transfer Error); a data page at an unmapped IOVA faults in the IOMMU (the
// case script checks dmesg) and a canary buffer stays untouched; other queues go on working.
TEST(NvmeFaults, IommuContainsTheDevice) {
    nvme::BlockOptions options;
    options.queues = 2;
    auto device = std::make_unique<nvme::NvmeBlockDevice>(open_device(spec()), options);
    ASSERT_EQ(device->geometry().queue_count, 2u);
    auto& victim = static_cast<nvme::IoQueue&>(device->open_queue(0, 16));
    auto& other = device->open_queue(1, 16);
    const std::uint32_t bs = device->geometry().block_size;
    auto canary = device->dma_pool().allocate(64 << 10, 4096);
    std::memset(canary.data(), 0xa5, canary.size());
    auto data = device->dma_pool().allocate(64 << 10, 4096);
    constexpr std::uint64_t kUnmapped = 0x7f0000000000ull;  // inside the IOMMU's window, not mapped

    nvme::SubmissionEntry list_read{};
    list_read.opcode = nvme::io::read;
    list_read.nsid = 1;
    list_read.dptr[0] = data.iova();
    list_read.dptr[1] = kUnmapped;  // a PRP list, as the transfer spans 16 pages
    list_read.cdw12 = (64u << 10) / bs - 1;
    const auto listed = raw_command(victim.pair(), list_read);
    const nvme::StatusField list_status{static_cast<std::uint16_t>(listed.entry.status >> 1)};
    EXPECT_FALSE(list_status.ok());
    EXPECT_EQ(list_status.code_and_type(), 0x0004)
        << nvme::status_name(list_status.code_and_type());
    std::printf("PRP list at unmapped IOVA %#llx: %s\n", static_cast<unsigned long long>(kUnmapped),
                nvme::status_name(list_status.code_and_type()).c_str());

    nvme::SubmissionEntry page_read{};
    page_read.opcode = nvme::io::read;
    page_read.nsid = 1;
    page_read.dptr[0] = kUnmapped;
    page_read.cdw12 = 4096 / bs - 1;
    const auto paged = raw_command(victim.pair(), page_read);
    std::printf(
        "data page at unmapped IOVA: completion status %#x (QEMU reports success and "
        "logs a DMAR fault)\n",
        paged.entry.status >> 1);
    for (std::size_t i = 0; i < canary.size(); ++i) {
        ASSERT_EQ(std::to_integer<int>(canary.data()[i]), 0xa5) << "canary changed at " << i;
    }

    // The other queue, and the victim queue itself, still move data.
    const std::uint64_t seed = 77;
    run(*device, other, true, 4096, 1000, 16, seed);
    run(*device, other, false, 4096, 1000, 16, seed);
    run(*device, victim, false, 4096, 1000, 16, seed);
}

TEST(NvmeEvents, SmartCriticalWarningArrivesAsAnEvent) {
    auto device = open_device(spec());
    nvme::Controller controller(*device);
    std::vector<nvme::AsyncEvent> events;
    controller.enable_async_events([&](const nvme::AsyncEvent& e) { events.push_back(e); });
    // The host runs this QMP command when it sees the marker (tests/guest/run-guest).
    std::printf("RING3-HOST-ACTION qom-set nvme0 smart_critical_warning 1\n");
    std::fflush(stdout);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (events.empty() && std::chrono::steady_clock::now() < deadline) {
        controller.poll_admin();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_FALSE(events.empty()) << "no asynchronous event within 60 s";
    std::printf("%s\n", events.front().describe().c_str());
    EXPECT_EQ(events.front().type, 1u);  // SMART / health status
    EXPECT_EQ(events.front().log_page, nvme::log_page::smart_health);
    const auto smart = controller.smart_log();  // reading the page clears the event
    EXPECT_NE(smart.critical_warning, 0u);
}

// ---- bad input ----

TEST(NvmeErrors, BadRequestsAreRefusedClearly) {
    auto device = block::open_block_device(spec());
    const auto g = device->geometry();
    auto& queue = device->open_queue(0, 8);
    auto buffer = device->dma_pool().allocate(8192, 4096);
    Waiter waiter;
    block::Request request;
    request.op = block::Op::read;
    request.data = buffer.data();
    request.blocks = 1;
    request.callback = on_wait_done;
    request.context = &waiter;

    request.lba = g.block_count;  // past the end
    EXPECT_EQ(queue.submit(request), -EINVAL);
    request.lba = g.block_count - 1;
    request.blocks = 2;  // runs past the end
    EXPECT_EQ(queue.submit(request), -EINVAL);
    request.lba = 0;
    request.blocks = 1;
    request.data = buffer.data() + 1;  // not dword aligned
    EXPECT_EQ(queue.submit(request), -EINVAL);
    std::vector<std::byte> heap(8192);
    request.data = heap.data();  // not DMA memory
    EXPECT_EQ(queue.submit(request), -EINVAL);
    EXPECT_FALSE(waiter.done);

    const std::string message = [&] {
        try {
            device->open_queue(1 % std::max(1u, g.queue_count), g.max_queue_depth + 1);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    }();
    EXPECT_NE(message.find("the controller allows at most"), std::string::npos) << message;
}

}  // namespace
}  // namespace ring3

// ---- the hot path: no allocation, no system call ----

// Counted by the replacement operator new in counting_new.cpp (its own translation unit, so the
// compiler cannot pair an inlined delete with malloc).
extern std::atomic<std::uint64_t> g_allocations;

namespace ring3 {
namespace {

struct PollLoopResult {
    std::uint64_t completed = 0;
    std::uint64_t failed = 0;
    std::uint64_t allocations = 0;
    std::uint64_t commands = 0;       // from the queue's stats, over the measured loop
    std::uint64_t notifications = 0;  // SQ doorbell writes: one per burst, not per request
};

void count_completion(void* context, const block::Status& status) {
    auto* result = static_cast<PollLoopResult*>(context);
    ++result->completed;
    if (!status.ok()) {
        ++result->failed;
    }
}

// The steady state of poll mode, bursts of enqueue with one flush, then poll, runs in a child
// process under seccomp strict mode, where any system call but read, write, exit and sigreturn
// kills it with SIGKILL; a counting operator new shows it allocates nothing, and the queue's
// stats that a burst took one doorbell write.
TEST(NvmePollMode, SteadyStateMakesNoAllocationAndNoSystemCall) {
    auto device = block::open_block_device(spec());
    const std::uint32_t bs = device->geometry().block_size;
    auto& queue = device->open_queue(0, 32);
    constexpr unsigned kDepth = 16;
    constexpr std::uint64_t kRequests = 4000;
    std::vector<dma::DmaBuffer> buffers;
    for (unsigned i = 0; i < kDepth; ++i) {
        buffers.push_back(device->dma_pool().allocate(4096, 4096));
    }
    PollLoopResult result;
    block::Request request;
    request.op = block::Op::read;
    request.blocks = 4096 / bs;
    request.callback = count_completion;
    request.context = &result;
    const auto run_loop = [&](std::uint64_t count) {
        std::uint64_t submitted = 0;
        std::uint64_t lba = 0;
        while (result.completed < count) {
            while (submitted < count && submitted - result.completed < kDepth) {
                request.data = buffers[submitted % kDepth].data();
                request.lba = (lba += request.blocks) % (device->geometry().block_count - 8);
                if (queue.enqueue(request) != 0) {
                    break;
                }
                ++submitted;
            }
            queue.flush();
            queue.poll();
        }
    };
    run_loop(1000);  // warm-up, in this process
    result = {};

    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(fds[0]);
        if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) {
            ::_exit(3);
        }
        const std::uint64_t before = g_allocations.load();
        const block::QueueStats stats_before = queue.stats();
        run_loop(kRequests);
        result.allocations = g_allocations.load() - before;
        const block::QueueStats stats_after = queue.stats();
        result.commands = stats_after.requests - stats_before.requests;
        result.notifications = stats_after.notifications - stats_before.notifications;
        [[maybe_unused]] const auto n = ::write(fds[1], &result, sizeof result);
        ::syscall(SYS_exit, 0);  // strict mode allows exit, not exit_group
    }
    ::close(fds[1]);
    PollLoopResult child_result;
    const auto n = ::read(fds[0], &child_result, sizeof child_result);
    ::close(fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status))
        << "the poll loop was killed (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
        << "): it made a system call seccomp strict mode forbids";
    EXPECT_EQ(WEXITSTATUS(status), 0);
    ASSERT_EQ(n, static_cast<ssize_t>(sizeof child_result));
    EXPECT_EQ(child_result.completed, kRequests);
    EXPECT_EQ(child_result.failed, 0u);
    EXPECT_EQ(child_result.allocations, 0u);
    EXPECT_EQ(child_result.commands, kRequests);
    // A burst refills what one poll reaped: fewer doorbell writes than requests, never more.
    EXPECT_GT(child_result.notifications, 0u);
    EXPECT_LT(child_result.notifications, child_result.commands);
    std::printf("poll mode under seccomp strict: %llu reads completed, %llu allocations, %llu SQ "
                "doorbell writes\n",
                static_cast<unsigned long long>(child_result.completed),
                static_cast<unsigned long long>(child_result.allocations),
                static_cast<unsigned long long>(child_result.notifications));
}

}  // namespace
}  // namespace ring3
