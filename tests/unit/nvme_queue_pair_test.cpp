// The NVMe queue pair against a completion ring the test writes as a (hostile) device would.
#include "ring3/nvme/queue_pair.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "fake_iova_space.hpp"

namespace ring3::nvme {
namespace {

class QueuePairTest : public ::testing::Test {
  protected:
    QueuePairTest() {
        dma::ArenaOptions options;
        options.chunk_size = 64 * 1024;
        options.max_size = 16 * options.chunk_size;
        options.huge_pages = dma::HugePages::never;
        arena = dma::DmaArena::create(options);
        space = arena->attach(iommu);
        pool.emplace(*arena, space);
    }

    // Writes completion entry `index` of `queue` as the controller would.
    void post(QueuePair& queue, std::uint32_t index, std::uint16_t command_id,
              std::uint16_t sq_head, std::uint16_t phase, std::uint16_t status = 0) {
        CompletionEntry entry{};
        entry.sq_head = sq_head;
        entry.sq_id = queue.id();
        entry.command_id = command_id;
        entry.status = static_cast<std::uint16_t>((status << 1) | phase);
        std::memcpy(queue.completion_ring().data() + index * sizeof entry, &entry, sizeof entry);
    }

    static void count(void* context, const CompletionEntry& entry) {
        static_cast<std::vector<std::uint16_t>*>(context)->push_back(entry.command_id);
    }

    int submit(QueuePair& queue) {
        SubmissionEntry command{};
        command.opcode = io::read;
        const int cid = queue.enqueue(command, count, &completed);
        queue.ring_doorbell();
        return cid;
    }

    dma::testing::FakeIovaSpace iommu{dma::IovaSpace::kAnyGranule, false};
    std::unique_ptr<dma::DmaArena> arena;
    std::size_t space = 0;
    std::optional<dma::DmaPool> pool;
    volatile std::uint32_t doorbells[2] = {0, 0};
    mmio::MappedIo doorbell_io{
        reinterpret_cast<std::byte*>(const_cast<std::uint32_t*>(&doorbells[0])), sizeof doorbells};
    std::vector<std::uint16_t> completed;
};

TEST_F(QueuePairTest, CompletesWhatWasSubmittedAndRingsTheDoorbells) {
    QueuePair queue(*pool, 1, 8, doorbell_io, 0, 4);
    const int cid = submit(queue);
    ASSERT_GE(cid, 0);
    EXPECT_EQ(doorbells[0], 1u);  // SQ tail
    EXPECT_EQ(queue.outstanding(), 1u);
    EXPECT_EQ(queue.process_completions(), 0u);  // nothing posted yet
    post(queue, 0, static_cast<std::uint16_t>(cid), 1, 1);
    EXPECT_EQ(queue.process_completions(), 1u);
    EXPECT_EQ(completed, (std::vector<std::uint16_t>{static_cast<std::uint16_t>(cid)}));
    EXPECT_EQ(doorbells[1], 1u);  // CQ head
    EXPECT_EQ(queue.outstanding(), 0u);
}

TEST_F(QueuePairTest, GarbageFromTheDeviceIsCountedNotTrusted) {
    QueuePair queue(*pool, 1, 8, doorbell_io, 0, 4);
    const int cid = submit(queue);
    post(queue, 0, 200, 1, 1);                                  // id outside the table
    post(queue, 1, static_cast<std::uint16_t>(cid + 1), 1, 1);  // id not in flight
    post(queue, 2, static_cast<std::uint16_t>(cid), 99, 1);     // SQ head outside the ring
    EXPECT_EQ(queue.process_completions(), 1u);  // only the real one reaches a handler
    EXPECT_EQ(completed.size(), 1u);
    EXPECT_EQ(queue.counters().invalid_command_id, 1u);
    EXPECT_EQ(queue.counters().stale_command_id, 1u);
    EXPECT_EQ(queue.counters().invalid_sq_head, 1u);
    // A completion of the same id again (stale now) is dropped too.
    post(queue, 3, static_cast<std::uint16_t>(cid), 1, 1);
    EXPECT_EQ(queue.process_completions(), 0u);
    EXPECT_EQ(queue.counters().stale_command_id, 2u);
}

TEST_F(QueuePairTest, PhaseFlipsWhenTheRingWraps) {
    QueuePair queue(*pool, 1, 4, doorbell_io, 0, 4);
    std::uint16_t phase = 1;
    for (std::uint32_t i = 0; i < 10; ++i) {
        const int cid = submit(queue);
        ASSERT_GE(cid, 0) << i;
        post(queue, i % 4, static_cast<std::uint16_t>(cid), 0, phase);
        ASSERT_EQ(queue.process_completions(), 1u) << i;
        if (i % 4 == 3) {
            phase ^= 1;
        }
    }
    EXPECT_EQ(completed.size(), 10u);
    // An entry left over from the previous lap (old phase) is not taken for a new one.
    submit(queue);
    EXPECT_EQ(queue.process_completions(), 0u);
}

TEST_F(QueuePairTest, FullQueueRefusesAndLazyDoorbellFreesRoomWhenNeeded) {
    QueuePair queue(*pool, 1, 8, doorbell_io, 0, 4);
    queue.set_lazy_completion_doorbell(true);
    std::vector<int> ids;
    for (int i = 0; i < 7; ++i) {
        ids.push_back(submit(queue));
    }
    EXPECT_EQ(submit(queue), -1);  // one ring slot always stays empty
    post(queue, 0, static_cast<std::uint16_t>(ids[0]), 1, 1);
    EXPECT_EQ(queue.process_completions(), 1u);
    EXPECT_EQ(doorbells[1], 0u);        // lazy: not acknowledged yet...
    EXPECT_EQ(queue.free_slots(), 0u);  // ...so its CQ entry still counts as used
    EXPECT_GE(submit(queue), 0);        // a submission that needs the room acknowledges first
    EXPECT_EQ(doorbells[1], 1u);
}

TEST_F(QueuePairTest, FailAllCompletesEverythingInFlight) {
    QueuePair queue(*pool, 1, 8, doorbell_io, 0, 4);
    submit(queue);
    submit(queue);
    queue.fail_all(0x0008);
    EXPECT_EQ(completed.size(), 2u);
    EXPECT_EQ(queue.outstanding(), 0u);
}

}  // namespace
}  // namespace ring3::nvme
