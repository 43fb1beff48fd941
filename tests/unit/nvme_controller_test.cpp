// The NVMe controller and its block face over an NVMe controller model (fake_nvme_device.hpp) on
// testing::FakeDevice: data pointers, MDTS splitting, hostile completions, timeout recovery. No
// device, no QEMU; every test runs in milliseconds.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "fake_device.hpp"
#include "fake_nvme_device.hpp"
#include "ring3/nvme/block_device.hpp"
#include "test_support.hpp"

namespace ring3::nvme {
namespace {

using namespace std::chrono_literals;
using testing::FakeNvme;
using Form = FakeNvme::Form;

BlockOptions small_options() {
    BlockOptions o;
    o.controller.arena.chunk_size = 2 << 20;
    o.controller.arena.max_size = 16 << 20;
    o.controller.arena.huge_pages = dma::HugePages::never;
    o.controller.admin_timeout = 100ms;
    return o;
}

struct Completion {
    int calls = 0;
    block::Status status;
    static void done(void* context, const block::Status& status) {
        auto* c = static_cast<Completion*>(context);
        ++c->calls;
        c->status = status;
    }
};

struct Rig {
    FakeNvme model;
    std::unique_ptr<NvmeBlockDevice> nvme;
    explicit Rig(const FakeNvme::Options& o = FakeNvme::Options(),
                 const BlockOptions& options = small_options())
        : model(o) {
        nvme = std::make_unique<NvmeBlockDevice>(model.take(), options);
    }
    ~Rig() { nvme.reset(); }
    std::uint64_t iova(const std::byte* p) {
        return nvme->controller().arena().iova(p, nvme->controller().pool().space_index());
    }
};

void run_to_completion(block::Queue& queue, const block::Request& request, Completion& c) {
    ASSERT_EQ(queue.submit(request), 0);
    for (int i = 0; i < 100 && c.calls == 0; ++i) {
        queue.wait(1ms);
    }
    ASSERT_EQ(c.calls, 1);
}

void fill(dma::DmaBuffer& buffer, unsigned seed) {
    for (std::size_t i = 0; i < buffer.size(); ++i) {
        buffer.data()[i] = static_cast<std::byte>(i * 31 + seed);
    }
}

// ---- bring-up and the non-mmap path ------------------------------------------------------------

TEST(NvmeController, RunsWithBar0NotMappableEveryAccessThroughRegionReadWrite) {
    Rig rig;
    auto& model = rig.model;
    auto& device = model.device;
    EXPECT_EQ(device.maps, 0u);  // BAR0 cannot be mapped: the driver never mapped it
    EXPECT_EQ(model.enables, 1u);
    EXPECT_EQ(rig.nvme->controller().info().model, "ring3 fake NVMe controller");
    EXPECT_EQ(rig.nvme->controller().info().serial, "FAKE0001");
    const auto g = rig.nvme->geometry();
    EXPECT_EQ(g.block_size, 512u);
    EXPECT_EQ(g.block_count, 4096u);
    EXPECT_EQ(g.max_transfer, 128u * 1024);
    EXPECT_EQ(g.queue_count, 1u);
    auto& q = rig.nvme->open_queue(0, 16);
    auto out = rig.nvme->dma_pool().allocate(8 * 512, 4096);
    auto in = rig.nvme->dma_pool().allocate(8 * 512, 4096);
    fill(out, 3);
    const std::size_t mark = device.accesses.size();
    Completion w;
    run_to_completion(q, {block::Op::write, 200, 8, out.data(), &Completion::done, &w}, w);
    EXPECT_TRUE(w.status.ok());
    EXPECT_EQ(std::memcmp(model.disk.data() + 200 * 512, out.data(), out.size()), 0);
    Completion r;
    run_to_completion(q, {block::Op::read, 200, 8, in.data(), &Completion::done, &r}, r);
    EXPECT_TRUE(r.status.ok());
    EXPECT_EQ(std::memcmp(in.data(), out.data(), out.size()), 0);
    // The I/O went through BAR0's region calls: SQ 1 tail doorbell (0x1008) once per request,
    // each a 4-byte write of the new tail. (The CQ head doorbell is written lazily in poll mode.)
    std::vector<std::uint64_t> tails;
    for (std::size_t i = mark; i < device.accesses.size(); ++i) {
        const auto& a = device.accesses[i];
        EXPECT_EQ(a.region, 0u);
        if (a.write && a.offset == 0x1008) {
            EXPECT_EQ(a.width, 4u);
            tails.push_back(a.value);
        }
    }
    EXPECT_EQ(tails, (std::vector<std::uint64_t>{1, 2}));
    // Bring-up too: CAP read as 8 bytes at offset 0, CC written, admin SQ tail doorbell rung.
    bool cap = false, cc = false, admin_doorbell = false;
    for (const auto& a : device.accesses) {
        cap |= !a.write && a.offset == 0 && a.width == 8;
        cc |= a.write && a.offset == 0x14 && (a.value & 1u) != 0;
        admin_doorbell |= a.write && a.offset == 0x1000;
    }
    EXPECT_TRUE(cap);
    EXPECT_TRUE(cc);
    EXPECT_TRUE(admin_doorbell);
    EXPECT_TRUE(device.dma().faults.empty());
    // Queue 1 was created as §5.4/§5.5 say: CQ then SQ, 64 entries, PC set, SQ bound to CQ 1.
    ASSERT_EQ(model.created.size(), 2u);
    EXPECT_EQ(model.created[0].opcode, admin::create_io_cq);
    EXPECT_EQ(model.created[0].entries, 64u);
    EXPECT_EQ(model.created[0].cdw11, 1u);  // PC, no interrupts (poll)
    EXPECT_EQ(model.created[1].opcode, admin::create_io_sq);
    EXPECT_EQ(model.created[1].cdw11, 1u | (1u << 16));
}

TEST(NvmeController, ShutsDownAndDeletesItsQueuesWhenDestroyed) {
    FakeNvme::Options o;
    Rig rig(o);
    rig.nvme->open_queue(0, 8);
    ASSERT_TRUE(rig.model.io_sq_exists(1));
    rig.nvme.reset();
    EXPECT_FALSE(rig.model.io_sq_exists(1));
    EXPECT_FALSE(rig.model.io_cq_exists(1));
    EXPECT_EQ(rig.model.shutdowns, 1u);
    const auto& cmds = rig.model.admin_commands;
    ASSERT_GE(cmds.size(), 2u);
    EXPECT_EQ(cmds[cmds.size() - 2].second.opcode, admin::delete_io_sq);
    EXPECT_EQ(cmds.back().second.opcode, admin::delete_io_cq);
}

TEST(NvmeController, InterruptModeSleepsOnTheQueueVector) {
    BlockOptions options = small_options();
    options.mode = irq::WaitMode::interrupt;
    Rig rig(FakeNvme::Options(), options);
    EXPECT_EQ(rig.model.device.enabled_vectors(IrqKind::msix), 2u);  // admin + one I/O queue
    auto& q = rig.nvme->open_queue(0, 8, irq::WaitMode::interrupt);
    // §5.4: PC, IEN, IV = 1 (vector 0 serves the admin queue).
    EXPECT_EQ(rig.model.created.at(0).cdw11, 1u | 2u | (1u << 16));
    auto buffer = rig.nvme->dma_pool().allocate(512, 512);
    rig.model.serve = false;  // commands wait in the SQ until the test runs them
    Completion c;
    ASSERT_EQ(q.submit({block::Op::write, 1, 1, buffer.data(), &Completion::done, &c}), 0);
    EXPECT_EQ(q.wait(1ms), 0u);
    EXPECT_EQ(c.calls, 0);
    rig.model.process(1);  // completes and raises vector 1
    EXPECT_EQ(q.wait(1s), 1u);
    EXPECT_EQ(c.calls, 1);
    EXPECT_TRUE(c.status.ok());
    rig.model.serve = true;  // the queues are deleted at the end
}

TEST(NvmeController, AnAdminCommandThatTimesOutLeavesNothingBehindThatCanBeWrittenLater) {
    BlockOptions options = small_options();
    options.controller.admin_timeout = 5ms;
    Rig rig(FakeNvme::Options(), options);
    auto& model = rig.model;
    model.hold = [](std::uint16_t sq, const SubmissionEntry& c) {
        return sq == 0 && c.opcode == admin::get_features;
    };
    const auto message =
        ring3::testing::error_of([&] { rig.nvme->controller().get_feature(0x07); }, ETIMEDOUT);
    EXPECT_EQ(message, "Get Features fake:nvme: no completion within 5 ms");
    ASSERT_EQ(model.held.size(), 1u);
    // The controller answers late: the waiter is gone, the completion is consumed quietly (it
    // used to be written into the waiter's freed memory), and the admin queue goes on.
    model.complete_held(0);
    EXPECT_EQ(rig.nvme->controller().poll_admin(), 1u);
    model.hold = [](std::uint16_t sq, const SubmissionEntry& c) {
        return sq == 0 && c.opcode == admin::get_features;
    };
    EXPECT_EQ(
        ring3::testing::error_of([&] { rig.nvme->controller().get_feature(0x07); }, ETIMEDOUT),
        message);
    model.hold = nullptr;
    EXPECT_EQ(rig.nvme->controller().get_feature(0x07), 0u);
    // The one still held is failed by the destructor's shutdown path, again into nothing.
}

// ---- data pointers: PRP1/PRP2, PRP lists, SGL ---------------------------------------------------

TEST(NvmeDataPointer, PrpEntriesAndListsAreExact) {
    FakeNvme::Options o;
    o.sgl = false;  // the controller takes PRPs only
    Rig rig(o);
    auto& q = rig.nvme->open_queue(0, 16);
    auto buffer = rig.nvme->dma_pool().allocate(64 * 1024, 4096);
    fill(buffer, 7);
    const std::uint64_t base = rig.iova(buffer.data());
    ASSERT_EQ(base % 4096, 0u);
    auto& t = rig.model.transfers;

    Completion a;  // one block at the start of a page: PRP1 only
    run_to_completion(q, {block::Op::write, 0, 1, buffer.data(), &Completion::done, &a}, a);
    ASSERT_EQ(t.size(), 1u);
    EXPECT_EQ(t[0].form, Form::prp);
    EXPECT_EQ(t[0].prp1, base);
    EXPECT_EQ(t[0].prp2, 0u);

    Completion b;  // 4 KiB starting 512 bytes into a page: PRP1 with offset, PRP2 the next page
    run_to_completion(q, {block::Op::write, 8, 8, buffer.data() + 512, &Completion::done, &b}, b);
    ASSERT_EQ(t.size(), 2u);
    EXPECT_EQ(t[1].form, Form::prp);
    EXPECT_EQ(t[1].prp1, base + 512);
    EXPECT_EQ(t[1].prp2, base + 4096);

    Completion c;  // exactly two pages: still no list
    run_to_completion(q, {block::Op::write, 16, 16, buffer.data(), &Completion::done, &c}, c);
    EXPECT_EQ(t[2].form, Form::prp);
    EXPECT_EQ(t[2].prp1, base);
    EXPECT_EQ(t[2].prp2, base + 4096);

    Completion d;  // 16 KiB from offset 512: PRP1 = 3584 bytes, then a list of four pages
    run_to_completion(q, {block::Op::write, 100, 32, buffer.data() + 512, &Completion::done, &d},
                      d);
    ASSERT_EQ(t.size(), 4u);
    EXPECT_EQ(t[3].form, Form::prp_list);
    EXPECT_EQ(t[3].prp1, base + 512);
    EXPECT_EQ(t[3].prp2 % 4096, 0u);  // the list page
    EXPECT_EQ(t[3].prp_list, (std::vector<std::uint64_t>{base + 4096, base + 2 * 4096,
                                                         base + 3 * 4096, base + 4 * 4096}));
    EXPECT_TRUE(d.status.ok());
    EXPECT_EQ(std::memcmp(rig.model.disk.data() + 100 * 512, buffer.data() + 512, 32 * 512), 0);
    for (const auto& transfer : t) {
        EXPECT_EQ(transfer.status, 0u);
    }
    // And back: a 64 KiB read through a 16-entry list lands where the write came from.
    auto in = rig.nvme->dma_pool().allocate(64 * 1024, 4096);
    Completion e;
    run_to_completion(q, {block::Op::read, 100, 32, in.data(), &Completion::done, &e}, e);
    EXPECT_EQ(t.back().form, Form::prp_list);
    EXPECT_EQ(t.back().prp_list.size(), 3u);  // 16 KiB page aligned: PRP1 + 3 list entries
    EXPECT_EQ(std::memcmp(in.data(), buffer.data() + 512, 32 * 512), 0);
    EXPECT_TRUE(rig.model.device.dma().faults.empty());
}

TEST(NvmeDataPointer, SglDataBlockReplacesAListWhenTheControllerOffersSgls) {
    Rig rig;  // SGLS = 1
    ASSERT_TRUE(rig.nvme->controller().info().supports_sgl());
    auto& q = rig.nvme->open_queue(0, 16);
    EXPECT_TRUE(static_cast<IoQueue&>(q).uses_sgl());
    auto buffer = rig.nvme->dma_pool().allocate(64 * 1024, 4096);
    fill(buffer, 9);
    const std::uint64_t base = rig.iova(buffer.data());
    auto& t = rig.model.transfers;
    Completion big;
    run_to_completion(q, {block::Op::write, 64, 64, buffer.data() + 1024, &Completion::done, &big},
                      big);
    ASSERT_EQ(t.size(), 1u);
    EXPECT_EQ(t[0].form, Form::sgl);
    EXPECT_EQ(t[0].sgl_address, base + 1024);
    EXPECT_EQ(t[0].sgl_length, 64u * 512);
    EXPECT_TRUE(big.status.ok());
    EXPECT_EQ(std::memcmp(rig.model.disk.data() + 64 * 512, buffer.data() + 1024, 64 * 512), 0);
    // Two pages or less: PRPs are still used (cheaper for any controller).
    Completion small;
    run_to_completion(q, {block::Op::read, 0, 16, buffer.data(), &Completion::done, &small}, small);
    EXPECT_EQ(t[1].form, Form::prp);
    EXPECT_EQ(t[1].prp2, base + 4096);
}

TEST(NvmeDataPointer, SglsTurnedOffByOptionMeanPrpLists) {
    BlockOptions options = small_options();
    options.use_sgl = false;
    Rig rig(FakeNvme::Options(), options);
    auto& q = rig.nvme->open_queue(0, 16);
    EXPECT_FALSE(static_cast<IoQueue&>(q).uses_sgl());
    auto buffer = rig.nvme->dma_pool().allocate(32 * 1024, 4096);
    Completion c;
    run_to_completion(q, {block::Op::read, 0, 64, buffer.data(), &Completion::done, &c}, c);
    EXPECT_EQ(rig.model.transfers.at(0).form, Form::prp_list);
    EXPECT_EQ(rig.model.transfers.at(0).prp_list.size(), 7u);
}

// ---- MDTS ---------------------------------------------------------------------------------------

TEST(NvmeMdts, ALargeRequestIsSplitIntoCommandsWithinMdts) {
    FakeNvme::Options o;
    o.mdts = 1;  // 8 KiB = 16 blocks
    o.sgl = false;
    Rig rig(o);
    EXPECT_EQ(rig.nvme->geometry().max_transfer, 8192u);
    auto& q = rig.nvme->open_queue(0, 16);
    auto buffer = rig.nvme->dma_pool().allocate(40 * 512, 4096);
    fill(buffer, 1);
    const std::uint64_t base = rig.iova(buffer.data());
    Completion c;
    run_to_completion(q, {block::Op::write, 100, 40, buffer.data(), &Completion::done, &c}, c);
    EXPECT_TRUE(c.status.ok());
    EXPECT_EQ(c.calls, 1);  // one callback for the three commands
    const auto& t = rig.model.transfers;
    ASSERT_EQ(t.size(), 3u);
    const std::uint64_t lbas[] = {100, 116, 132};
    const std::uint32_t counts[] = {16, 16, 8};
    for (std::size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(t[i].opcode, io::write);
        EXPECT_EQ(t[i].lba, lbas[i]) << i;
        EXPECT_EQ(t[i].blocks, counts[i]) << i;
        EXPECT_EQ(t[i].prp1, base + 8192 * i) << i;
        EXPECT_EQ(t[i].status, 0u) << i;
    }
    EXPECT_EQ(q.stats().requests, 3u);
    EXPECT_EQ(std::memcmp(rig.model.disk.data() + 100 * 512, buffer.data(), buffer.size()), 0);
}

TEST(NvmeMdts, NoLimitIsCappedAtTwoMebibytes) {
    FakeNvme::Options o;
    o.mdts = 0;
    Rig rig(o);
    EXPECT_EQ(rig.nvme->geometry().max_transfer, 2u << 20);
}

// ---- hostile completions
// -------------------------------------------------------------------------

TEST(NvmeGarbage, CompletionsWithBadIdsOrHeadsAreCountedNotTrusted) {
    Rig rig;
    auto& model = rig.model;
    auto& q = rig.nvme->open_queue(0, 16);
    auto& io = static_cast<IoQueue&>(q);
    auto buffer = rig.nvme->dma_pool().allocate(4096, 4096);
    // A read the controller keeps: it stays in flight while garbage arrives.
    model.hold = [](std::uint16_t sq, const SubmissionEntry& c) {
        return sq == 1 && c.opcode == io::read;
    };
    Completion held;
    ASSERT_EQ(q.submit({block::Op::read, 0, 1, buffer.data(), &Completion::done, &held}), 0);
    ASSERT_EQ(model.held.size(), 1u);
    const std::uint16_t cid = model.held[0].second;
    model.post_raw(1, 9999, 1, 1);                                   // id outside the table
    model.post_raw(1, static_cast<std::uint16_t>(cid + 1), 1, 1);    // id not in flight
    model.post_raw(1, 0xffff, 0xffff, 0xffff, 0x3fff, 0xffffffffu);  // all ones
    EXPECT_EQ(q.poll(), 0u);
    EXPECT_EQ(held.calls, 0);
    EXPECT_EQ(q.outstanding(), 1u);
    EXPECT_EQ(io.counters().invalid_command_id, 2u);
    EXPECT_EQ(io.counters().stale_command_id, 1u);
    EXPECT_EQ(io.counters().invalid_sq_head, 1u);  // the all-ones entry's head
    EXPECT_EQ(q.stats().garbage, 3u);
    // A real completion with an SQ head outside the ring: counted, the request still completes.
    model.next_sq_head = 4000;
    model.complete_held(0);
    EXPECT_EQ(q.poll(), 1u);
    EXPECT_EQ(held.calls, 1);
    EXPECT_TRUE(held.status.ok());
    EXPECT_EQ(io.counters().invalid_sq_head, 2u);
    // The same id once more: stale now, dropped; nothing calls back twice.
    model.post_raw(1, cid, 2, 1);
    EXPECT_EQ(q.poll(), 0u);
    EXPECT_EQ(held.calls, 1);
    EXPECT_EQ(io.counters().stale_command_id, 2u);
    EXPECT_EQ(q.stats().garbage, 4u);
    // The queue still works.
    model.hold = nullptr;
    Completion after;
    run_to_completion(q, {block::Op::read, 1, 1, buffer.data(), &Completion::done, &after}, after);
    EXPECT_TRUE(after.status.ok());
    EXPECT_TRUE(model.device.dma().faults.empty());
}

TEST(NvmeGarbage, ADeviceErrorStatusReachesTheCallback) {
    Rig rig;
    auto& q = rig.nvme->open_queue(0, 16);
    auto buffer = rig.nvme->dma_pool().allocate(4096, 4096);
    rig.model.hold = [](std::uint16_t sq, const SubmissionEntry&) { return sq == 1; };
    Completion c;
    ASSERT_EQ(q.submit({block::Op::read, 0, 1, buffer.data(), &Completion::done, &c}), 0);
    rig.model.complete_held(0, testing::status::lba_out_of_range);
    q.poll();
    ASSERT_EQ(c.calls, 1);
    EXPECT_EQ(c.status.error, EIO);
    EXPECT_EQ(c.status.device_code, testing::status::lba_out_of_range);
}

// ---- timeout, abort, reset
// ------------------------------------------------------------------------

TEST(NvmeRecovery, ATimeoutAbortsThenResetsFailsWhatWasInFlightAndRecreatesTheQueues) {
    BlockOptions options = small_options();
    options.io_timeout = 5ms;
    Rig rig(FakeNvme::Options(), options);
    auto& model = rig.model;
    auto& q = rig.nvme->open_queue(0, 16);
    const auto sq_address = model.created.at(1).address;
    const auto cq_address = model.created.at(0).address;
    auto buffer = rig.nvme->dma_pool().allocate(8192, 4096);
    model.hold = [](std::uint16_t sq, const SubmissionEntry& c) {
        return sq == 1 && c.opcode == io::read;
    };
    Completion late, other, done;
    ASSERT_EQ(q.enqueue({block::Op::read, 0, 1, buffer.data(), &Completion::done, &late}), 0);
    ASSERT_EQ(q.enqueue({block::Op::read, 1, 1, buffer.data() + 512, &Completion::done, &other}),
              0);
    ASSERT_EQ(q.enqueue({block::Op::write, 2, 1, buffer.data() + 4096, &Completion::done, &done}),
              0);
    q.flush();
    ASSERT_EQ(model.held.size(), 2u);
    const std::uint16_t late_cid = model.held[0].second;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 200 && late.calls == 0; ++i) {
        q.wait(1ms);
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
    EXPECT_EQ(done.calls, 1);
    EXPECT_TRUE(done.status.ok());
    // The late command failed with ETIMEDOUT, the other with ECANCELED, each exactly once.
    ASSERT_EQ(late.calls, 1);
    EXPECT_EQ(late.status.error, ETIMEDOUT);
    ASSERT_EQ(other.calls, 1);
    EXPECT_EQ(other.status.error, ECANCELED);
    EXPECT_EQ(other.status.device_code, kAbortedByReset);
    EXPECT_EQ(q.outstanding(), 0u);
    // Abort was tried first (§5.1: CDW10 = CID << 16 | SQID), the model refused, then a reset.
    bool aborted = false;
    for (const auto& [sq, c] : model.admin_commands) {
        aborted |= c.opcode == admin::abort && c.cdw10 == (std::uint32_t{late_cid} << 16 | 1u);
    }
    EXPECT_TRUE(aborted);
    EXPECT_EQ(model.disables, 1u);
    EXPECT_EQ(model.enables, 2u);
    EXPECT_EQ(rig.nvme->resets(), 1u);
    EXPECT_FALSE(rig.nvme->failed());
    // The queues were created again on the same memory, CQ before SQ, with the same sizes.
    ASSERT_EQ(model.created.size(), 4u);
    EXPECT_EQ(model.created[2].opcode, admin::create_io_cq);
    EXPECT_EQ(model.created[2].id, 1u);
    EXPECT_EQ(model.created[2].address, cq_address);
    EXPECT_EQ(model.created[2].entries, 64u);
    EXPECT_EQ(model.created[2].status, 0u);
    EXPECT_EQ(model.created[3].opcode, admin::create_io_sq);
    EXPECT_EQ(model.created[3].address, sq_address);
    EXPECT_EQ(model.created[3].cdw11, 1u | (1u << 16));
    EXPECT_EQ(model.created[3].status, 0u);
    EXPECT_EQ(model.requested_queues, 1u);  // Number of Queues asked again after the reset
    // And I/O works again, from ring slot 0 (SQ tail doorbell 1).
    model.hold = nullptr;
    Completion again;
    run_to_completion(q, {block::Op::read, 0, 1, buffer.data(), &Completion::done, &again}, again);
    EXPECT_TRUE(again.status.ok());
    EXPECT_EQ(model.device.peek<std::uint32_t>(0, 0x1008), 1u);
    // Requests that reuse the contexts of the failed ones (the late one included) succeed: a
    // context does not remember that it once timed out.
    Completion three[3];
    for (unsigned i = 0; i < 3; ++i) {
        ASSERT_EQ(q.enqueue({block::Op::read, i, 1, buffer.data() + 512 * i, &Completion::done,
                             &three[i]}),
                  0);
    }
    q.flush();
    for (int i = 0; i < 200 && (three[0].calls + three[1].calls + three[2].calls) < 3; ++i) {
        q.wait(1ms);
    }
    for (const Completion& c : three) {
        ASSERT_EQ(c.calls, 1);
        EXPECT_TRUE(c.status.ok()) << c.status.error;
    }
}

TEST(NvmeRecovery, AResetFailsTheOtherQueuesRequestsOnTheirNextPollAndRecreatesEveryQueue) {
    BlockOptions options = small_options();
    options.io_timeout = 5ms;
    options.queues = 2;
    Rig rig(FakeNvme::Options(), options);
    auto& model = rig.model;
    EXPECT_EQ(model.requested_queues, 2u);
    auto& first = rig.nvme->open_queue(0, 8);
    auto& second = rig.nvme->open_queue(1, 8);
    ASSERT_EQ(model.created.size(), 4u);
    auto buffer = rig.nvme->dma_pool().allocate(4096, 4096);
    model.hold = [](std::uint16_t, const SubmissionEntry& c) { return c.opcode == io::read; };
    Completion late, other;
    ASSERT_EQ(first.submit({block::Op::read, 0, 1, buffer.data(), &Completion::done, &late}), 0);
    ASSERT_EQ(
        second.submit({block::Op::read, 8, 1, buffer.data() + 512, &Completion::done, &other}), 0);
    for (int i = 0; i < 200 && late.calls == 0; ++i) {
        first.wait(1ms);
    }
    ASSERT_EQ(late.calls, 1);
    EXPECT_EQ(late.status.error, ETIMEDOUT);
    // Queue 2's request is failed on queue 2's own thread, at its next poll.
    EXPECT_EQ(other.calls, 0);
    EXPECT_EQ(second.poll(), 1u);
    ASSERT_EQ(other.calls, 1);
    EXPECT_EQ(other.status.error, ECANCELED);
    EXPECT_EQ(second.outstanding(), 0u);
    // Both queue pairs were created again with the addresses and sizes of the first time.
    ASSERT_EQ(model.created.size(), 8u);
    for (std::size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(model.created[4 + i].opcode, model.created[i].opcode) << i;
        EXPECT_EQ(model.created[4 + i].id, model.created[i].id) << i;
        EXPECT_EQ(model.created[4 + i].address, model.created[i].address) << i;
        EXPECT_EQ(model.created[4 + i].entries, model.created[i].entries) << i;
        EXPECT_EQ(model.created[4 + i].cdw11, model.created[i].cdw11) << i;
        EXPECT_EQ(model.created[4 + i].status, 0u) << i;
    }
    EXPECT_TRUE(model.io_sq_exists(2));
    model.hold = nullptr;
    Completion again;
    run_to_completion(second, {block::Op::read, 8, 1, buffer.data(), &Completion::done, &again},
                      again);
    EXPECT_TRUE(again.status.ok());
}

TEST(NvmeRecovery, AnAbortTheControllerHonoursNeedsNoReset) {
    FakeNvme::Options o;
    o.abort_succeeds = true;
    BlockOptions options = small_options();
    options.io_timeout = 5ms;
    Rig rig(o, options);
    auto& q = rig.nvme->open_queue(0, 16);
    auto buffer = rig.nvme->dma_pool().allocate(4096, 4096);
    rig.model.hold = [](std::uint16_t sq, const SubmissionEntry&) { return sq == 1; };
    Completion late;
    ASSERT_EQ(q.submit({block::Op::read, 0, 1, buffer.data(), &Completion::done, &late}), 0);
    for (int i = 0; i < 200 && late.calls == 0; ++i) {
        q.wait(1ms);
    }
    ASSERT_EQ(late.calls, 1);
    EXPECT_EQ(late.status.error, EIO);
    EXPECT_EQ(late.status.device_code, testing::status::abort_requested);
    EXPECT_EQ(rig.model.disables, 0u);
    EXPECT_EQ(rig.nvme->resets(), 0u);
    EXPECT_EQ(rig.model.created.size(), 2u);
}

}  // namespace
}  // namespace ring3::nvme
