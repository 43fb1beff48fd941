#include "ring3/block/perf.hpp"

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "fake_block_device.hpp"
#include "ring3/block/pattern.hpp"
#include "ring3/core/error.hpp"
#include "test_support.hpp"

namespace ring3::block {
namespace {

using namespace std::chrono_literals;
using ring3::testing::error_of;
using testing::FakeBlockDevice;
using testing::FakeQueue;

PerfOptions by_count(Workload workload, std::uint64_t ios) {
    PerfOptions o;
    o.workload = workload;
    o.request_bytes = 4096;
    o.queue_depth = 8;
    o.ios = ios;
    o.seed = 1234;
    o.stall_timeout = 10s;
    return o;
}

PerfOptions one_pass(Workload workload) {
    PerfOptions o = by_count(workload, 0);
    o.verify = true;
    o.single_pass = true;
    return o;
}

std::string last_line(const std::string& text) {
    const auto end = text.find_last_not_of('\n');
    const auto start = text.rfind('\n', end);
    return text.substr(start == std::string::npos ? 0 : start + 1, end - start);
}

// ---- the parts ----------------------------------------------------------------------------------

TEST(PerfOptions, ParsesSizes) {
    EXPECT_EQ(parse_size("4096", "--bs"), 4096u);
    EXPECT_EQ(parse_size("4k", "--bs"), 4096u);
    EXPECT_EQ(parse_size("8K", "--bs"), 8192u);
    EXPECT_EQ(parse_size("64KiB", "--bs"), 65536u);
    EXPECT_EQ(parse_size("2M", "--bs"), 2u << 20);
    EXPECT_EQ(parse_size("1g", "--size"), 1ull << 30);
    EXPECT_EQ(parse_size("512b", "--size"), 512u);
    EXPECT_EQ(error_of([] { parse_size("4x", "--bs"); }),
              "perf blk --bs 4x: not a size: bytes, or a number with k, m, g or t (powers of "
              "1024)");
    EXPECT_EQ(error_of([] { parse_size("", "--size"); }),
              "perf blk --size : not a size: bytes, or a number with k, m, g or t (powers of "
              "1024)");
    EXPECT_EQ(error_of([] { parse_size("99999999999t", "--size"); }),
              "perf blk --size 99999999999t: too large");
}

TEST(PerfOptions, ParsesDurations) {
    EXPECT_EQ(parse_duration("10s", "--time"), 10s);
    EXPECT_EQ(parse_duration("10", "--time"), 10s);
    EXPECT_EQ(parse_duration("250ms", "--time"), 250ms);
    EXPECT_EQ(parse_duration("40us", "--time"), 40us);
    EXPECT_EQ(parse_duration("2m", "--time"), 120s);
    EXPECT_EQ(error_of([] { parse_duration("10h", "--time"); }),
              "perf blk --time 10h: not a duration: a number with s, ms, us or m (minutes); a bare "
              "number is seconds");
}

TEST(PerfOptions, ParsesWorkloads) {
    for (const char* name : {"randread", "randwrite", "read", "write", "rw", "randrw"}) {
        EXPECT_STREQ(to_string(parse_workload(name)), name);
    }
    EXPECT_EQ(error_of([] { parse_workload("randx"); }),
              "perf blk --rw randx: unknown workload; one of randread, randwrite, read, write, rw, "
              "randrw");
    EXPECT_TRUE(is_random(Workload::randrw));
    EXPECT_FALSE(is_random(Workload::rw));
    EXPECT_TRUE(has_reads(Workload::rw) && has_writes(Workload::rw));
    EXPECT_FALSE(has_writes(Workload::randread));
}

TEST(LatencyHistogram, BucketsAreContiguousAndPrecise) {
    std::size_t previous = 0;
    for (std::uint64_t v = 0; v < (1u << 22); v += 1 + v / 1000) {
        const std::size_t index = LatencyHistogram::index_of(v);
        ASSERT_GE(index, previous) << v;
        ASSERT_LE(index, previous + 1) << v;  // no bucket skipped
        previous = index;
        const std::uint64_t upper = LatencyHistogram::upper_bound_of(index);
        ASSERT_GE(upper, v);
        ASSERT_LE(static_cast<double>(upper - v), static_cast<double>(v) / 128.0) << v;
    }
    EXPECT_EQ(LatencyHistogram::index_of(~0ull), LatencyHistogram::kBuckets - 1);
    EXPECT_EQ(LatencyHistogram::upper_bound_of(LatencyHistogram::kBuckets - 1),
              LatencyHistogram::kMaxValue);
}

TEST(LatencyHistogram, Percentiles) {
    LatencyHistogram h;
    EXPECT_EQ(h.percentile(50), 0u);
    for (std::uint64_t v = 1; v <= 1000; ++v) {
        h.record(v * 1000);  // 1 us .. 1 ms
    }
    EXPECT_EQ(h.count(), 1000u);
    EXPECT_EQ(h.min(), 1000u);
    EXPECT_EQ(h.max(), 1'000'000u);
    EXPECT_DOUBLE_EQ(h.mean(), 500500.0);
    EXPECT_NEAR(static_cast<double>(h.percentile(50)), 500'000, 500'000 / 128.0);
    EXPECT_NEAR(static_cast<double>(h.percentile(99)), 990'000, 990'000 / 128.0);
    EXPECT_NEAR(static_cast<double>(h.percentile(99.9)), 999'000, 999'000 / 128.0);
    EXPECT_EQ(h.percentile(100), 1'000'000u);  // capped at the true max
    LatencyHistogram other;
    other.record(5);
    h.merge(other);
    EXPECT_EQ(h.count(), 1001u);
    EXPECT_EQ(h.min(), 5u);
    EXPECT_EQ(h.percentile(0.01), 5u);  // exact below 256 ns
}

TEST(PerfReport, FormatsTheStatusLine) {
    Progress p;
    p.elapsed = 3200ms;
    p.iops = 7312.4;
    p.mib_per_s = 28.56;
    EXPECT_EQ(format_progress(p), "[ 3s] 7,312 IOPS 28.6 MiB/s");
    p.phase = "verify";
    p.elapsed = 125s;
    p.iops = 1234567;
    EXPECT_EQ(format_progress(p), "[125s] verify 1,234,567 IOPS 28.6 MiB/s");
}

// ---- runs on the fake device
// ---------------------------------------------------------------------

TEST(Perf, RandomReadsCountExactly) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    const PerfReport report = run_perf(device, by_count(Workload::randread, 1000));
    EXPECT_EQ(report.run.ios, 1000u);
    EXPECT_EQ(report.run.reads, 1000u);
    EXPECT_EQ(report.run.writes, 0u);
    EXPECT_EQ(report.run.bytes, 1000u * 4096);
    EXPECT_EQ(report.run.errors, 0u);
    EXPECT_EQ(report.run.latency.count(), 1000u);
    EXPECT_GT(report.run.iops(), 0);
    EXPECT_GT(report.run.elapsed.count(), 0);
    EXPECT_EQ(report.run.max_in_flight, 8u);
    EXPECT_EQ(device.queue(0)->submitted(), 1000u);
    EXPECT_EQ(device.requests().size(), 1000u);
    EXPECT_FALSE(report.verify_pass);
    EXPECT_FALSE(report.failed());
    // Inside the range, aligned to --bs, and spread over it.
    std::set<std::uint64_t> seen;
    for (const auto& [lba, blocks] : device.requests()) {
        EXPECT_EQ(lba % 8, 0u);
        EXPECT_EQ(blocks, 8u);
        EXPECT_LT(lba, 2048u);
        seen.insert(lba);
    }
    EXPECT_GT(seen.size(), 200u);  // of 256 slots
    const std::string text = format_report(report);
    EXPECT_EQ(last_line(text), figure_line(report));
    EXPECT_EQ(figure_line(report).rfind("blk_randread_qd8_iops: ", 0), 0u) << figure_line(report);
    EXPECT_EQ(figure_line(report).substr(figure_line(report).size() - 5), " IOPS");
    EXPECT_NE(text.find("  seed: 1234\n"), std::string::npos) << text;
}

// The loop refills a burst and flushes it once: with all completions reaped per poll (the fake
// completes everything at once), every burst is a whole queue's worth.
TEST(Perf, RefillsABurstWithOneFlush) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    const PerfReport report = run_perf(device, by_count(Workload::randread, 800));
    EXPECT_EQ(report.run.ios, 800u);
    const FakeQueue& queue = *device.queue(0);
    EXPECT_EQ(queue.submitted(), 800u);
    EXPECT_LE(queue.flushes(), 800u / 8 + 2);  // qd 8: about one flush per 8 requests
    ASSERT_EQ(report.queue_stats.size(), 1u);
    EXPECT_EQ(report.queue_stats[0].requests, 800u);
    EXPECT_EQ(report.queue_stats[0].notifications, queue.flushes());
    // The data buffers are in the DMA memory the report counts.
    EXPECT_EQ(report.data_buffer_bytes, 8u * 4096);
    EXPECT_GE(report.dma_in_use_bytes, report.data_buffer_bytes);
    EXPECT_GE(report.dma_mapped_bytes, report.dma_in_use_bytes);
    EXPECT_TRUE(report.first_completion.has_value());
    const auto json = nlohmann::json::parse(format_report_json(report));
    EXPECT_EQ(json["queue_stats"][0]["commands"], 800u);
    EXPECT_EQ(json["dma"]["data_buffer_bytes"], 8u * 4096);
    EXPECT_TRUE(json.contains("first_completion_unix_ns"));
    EXPECT_NE(format_report(report).find("  queue 0: 800 commands, "), std::string::npos)
        << format_report(report);
}

TEST(Perf, RandomOffsetsStayInsideOffsetAndSize) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::randwrite, 500);
    o.offset = 100 * 512;
    o.size = 64 * 4096;  // LBA 100 .. 100 + 512
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.writes, 500u);
    for (const auto& [lba, blocks] : device.requests()) {
        EXPECT_GE(lba, 100u);
        EXPECT_LE(lba + blocks, 100u + 512);
        EXPECT_EQ((lba - 100) % 8, 0u);
    }
}

TEST(Perf, MixedWorkloadHonoursTheReadShare) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::randrw, 2000);
    o.read_percent = 70;
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.reads + report.run.writes, 2000u);
    EXPECT_GT(report.run.reads, 1250u);
    EXPECT_LT(report.run.reads, 1550u);
}

// A mixed random workload with --verify on a device that never held the pattern: reads of slots
// this run has not written yet are not checked (they hold whatever was there), the others are.
TEST(Perf, MixedVerifyChecksOnlyWhatTheRunWrote) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::randrw, 3000);
    o.verify = true;
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.mismatches, 0u)
        << (report.first_mismatches.empty() ? std::string() : report.first_mismatches.front());
    EXPECT_FALSE(report.failed());
    EXPECT_GT(report.blocks_checked, 0u);
}

TEST(Perf, SequentialReadsWrapAroundTheRange) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::read, 300);  // 256 slots: one pass and 44 more
    o.queue_depth = 1;
    run_perf(device, o);
    ASSERT_EQ(device.requests().size(), 300u);
    for (std::size_t i = 0; i < 300; ++i) {
        EXPECT_EQ(device.requests()[i].first, (i % 256) * 8) << i;
    }
}

TEST(Perf, StopsAfterTheTimeAndReportsProgress) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::randread, 0);
    o.time = 150ms;
    o.progress_interval = 20ms;
    std::vector<Progress> seen;
    o.on_progress = [&](const Progress& p) { seen.push_back(p); };
    const auto start = std::chrono::steady_clock::now();
    const PerfReport report = run_perf(device, o);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_GE(report.run.elapsed, 150ms);
    EXPECT_LT(took, 5s);  // a liveness bound, not a speed test
    EXPECT_GT(report.run.ios, 0u);
    ASSERT_GE(seen.size(), 2u);
    EXPECT_STREQ(seen.back().phase, "run");
    EXPECT_GE(seen.back().ios, seen.front().ios);
    EXPECT_LE(seen.back().ios, report.run.ios);
}

TEST(Perf, CancelStopsEarly) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::randread, 0);
    o.time = 60s;
    o.progress_interval = 10ms;
    std::atomic<bool> cancel{false};
    o.cancel = &cancel;
    o.on_progress = [&](const Progress&) { cancel = true; };
    const PerfReport report = run_perf(device, o);
    EXPECT_TRUE(report.cancelled);
    EXPECT_LT(report.run.elapsed, 10s);
    EXPECT_NE(format_report(report).find("(cancelled early)"), std::string::npos);
}

// ---- queues and threads
// --------------------------------------------------------------------------

TEST(Perf, RetriesWhenTheQueueIsFull) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.capacity = 3;  // full before the depth of 8
    device.faults.complete_per_poll = 1;
    const PerfReport report = run_perf(device, by_count(Workload::randread, 1000));
    EXPECT_EQ(report.run.ios, 1000u);
    EXPECT_EQ(device.queue(0)->submitted(), 1000u);
    EXPECT_GT(report.run.queue_full, 0u);
    EXPECT_EQ(report.run.queue_full, device.queue(0)->refused());
    EXPECT_EQ(device.queue(0)->max_outstanding(), 3u);
    EXPECT_EQ(report.run.max_in_flight, 3u);
    EXPECT_FALSE(report.failed());
}

TEST(Perf, RetriesARefusedRequestUnchanged) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.refuse_every = 3;  // refused although there is room
    device.faults.lifo = true;       // and completions out of order
    const PerfReport report = run_perf(device, one_pass(Workload::write));
    EXPECT_GT(report.run.queue_full, 0u);
    EXPECT_EQ(report.run.writes, 256u);
    for (std::uint64_t lba = 0; lba < 2048; ++lba) {
        ASSERT_EQ(device.writes_of(lba), 1u) << lba;
    }
    EXPECT_EQ(report.mismatches, 0u);
    EXPECT_FALSE(report.failed());
}

TEST(Perf, OneThreadPerQueue) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::randread, 1001);
    o.queues = 4;
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.ios, 1001u);
    std::set<std::thread::id> threads;
    std::uint64_t submitted = 0;
    for (unsigned q = 0; q < 4; ++q) {
        ASSERT_NE(device.queue(q), nullptr);
        EXPECT_EQ(device.queue(q)->threads().size(), 1u) << "queue " << q;
        threads.insert(device.queue(q)->threads().begin(), device.queue(q)->threads().end());
        EXPECT_GE(device.queue(q)->submitted(), 250u);
        EXPECT_LE(device.queue(q)->submitted(), 251u);
        submitted += device.queue(q)->submitted();
    }
    EXPECT_EQ(submitted, 1001u);
    EXPECT_EQ(threads.size(), 4u);
    EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
}

TEST(Perf, SequentialQueuesSplitTheRange) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = one_pass(Workload::write);
    o.queues = 3;
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.writes, 256u);
    for (std::uint64_t lba = 0; lba < 2048; ++lba) {
        ASSERT_EQ(device.writes_of(lba), 1u) << lba;
        ASSERT_EQ(device.reads_of(lba), 1u) << lba;  // the read-back pass
    }
    EXPECT_EQ(report.blocks_checked, 2048u);
    EXPECT_FALSE(report.failed());
}

// ---- verify -------------------------------------------------------------------------------------

// The acceptance case: every block written once with --bs 4k, 8k, 64k and 2M, read back
// and checked, on a device whose size is not a multiple of --bs.
TEST(Perf, WriteVerifyCoversEveryBlockOnce) {
    for (const std::uint32_t bs : {4096u, 8192u, 65536u, 2u << 20}) {
        SCOPED_TRACE(bs);
        Geometry g = FakeBlockDevice::small_geometry();
        g.block_count = 8 * 1024 + 40;  // 4 MiB and 20 KiB
        g.max_transfer = 128 * 1024;    // 2M: 16 commands
        const bool big = bs > (256u << 10);
        FakeBlockDevice device(g, big ? bs : 256 << 10, big ? 4 << 20 : 2 << 20);
        PerfOptions o = one_pass(Workload::write);
        o.request_bytes = bs;
        o.queue_depth = big ? 2 : 8;
        o.seed = 0xfeedull * bs;
        const PerfReport report = run_perf(device, o);
        const std::uint64_t slots = (g.block_count * 512 + bs - 1) / bs;
        EXPECT_EQ(report.run.writes, slots);
        EXPECT_TRUE(report.verify_pass);
        EXPECT_EQ(report.verify.reads, slots);
        EXPECT_EQ(report.blocks_checked, g.block_count);
        EXPECT_EQ(report.mismatches, 0u);
        EXPECT_EQ(report.commands_per_request, (bs + 131071) / 131072);
        EXPECT_FALSE(report.failed());
        for (std::uint64_t lba = 0; lba < g.block_count; ++lba) {
            ASSERT_EQ(device.writes_of(lba), 1u) << lba;
            ASSERT_EQ(check_pattern(device.block(lba), lba, o.seed), "");
        }
        const std::string text = format_report(report);
        EXPECT_NE(text.find(fmt::format("  seed: {}\n", o.seed)), std::string::npos) << text;
        EXPECT_NE(text.find("  verify passed\n"), std::string::npos) << text;
    }
}

TEST(Perf, VerifyFailsOnACorruptedBlock) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.corrupt_read_lba = 37;
    device.faults.corrupt_byte = 100;
    const PerfReport report = run_perf(device, one_pass(Workload::write));
    EXPECT_EQ(report.mismatches, 1u);
    ASSERT_EQ(report.first_mismatches.size(), 1u);
    EXPECT_EQ(report.first_mismatches[0], "LBA 37: byte 96 differs");
    EXPECT_TRUE(report.failed());
    const std::string text = format_report(report);
    EXPECT_NE(text.find("  mismatch: LBA 37: byte 96 differs\n"), std::string::npos) << text;
    EXPECT_NE(text.find("  FAILED: 1 mismatches, 0 I/O errors, 0 queue(s) stopped\n"),
              std::string::npos)
        << text;
    EXPECT_EQ(last_line(text), figure_line(report));
}

TEST(Perf, VerifyFailsOnAnotherBlocksData) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.misdirected_read = {{40, 41}};
    const PerfReport report = run_perf(device, one_pass(Workload::write));
    EXPECT_EQ(report.mismatches, 1u);
    ASSERT_EQ(report.first_mismatches.size(), 1u);
    EXPECT_EQ(report.first_mismatches[0], "LBA 40: holds LBA 41's data");
    EXPECT_TRUE(report.failed());
}

TEST(Perf, RandomWritesVerifyWhatTheyWrote) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = by_count(Workload::randwrite, 100);
    o.verify = true;
    o.queues = 2;
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.writes, 100u);
    std::uint64_t written = 0;
    for (std::uint64_t slot = 0; slot < 256; ++slot) {
        written += device.writes_of(slot * 8) != 0 ? 1 : 0;
    }
    EXPECT_EQ(report.verify.reads, written);  // each written slot read back once
    EXPECT_EQ(report.blocks_checked, written * 8);
    EXPECT_FALSE(report.failed());
}

TEST(Perf, ReadVerifyChecksThePatternAlreadyThere) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    for (std::uint64_t lba = 0; lba < 2048; ++lba) {
        fill_pattern(device.block(lba), lba, 1234);
    }
    PerfOptions o = by_count(Workload::randread, 300);
    o.verify = true;
    PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.blocks_checked, 300u * 8);
    EXPECT_EQ(report.mismatches, 0u);
    EXPECT_FALSE(report.verify_pass);  // nothing written, nothing to read back
    EXPECT_FALSE(report.failed());

    o.seed = 99;  // the wrong seed: every block says so
    report = run_perf(device, o);
    EXPECT_EQ(report.mismatches, 300u * 8);
    ASSERT_EQ(report.first_mismatches.size(), o.max_reported);
    EXPECT_NE(report.first_mismatches[0].find(": seed 1234, expected 99"), std::string::npos)
        << report.first_mismatches[0];
    EXPECT_NE(format_report(report).find("  mismatch: ... and 2,392 more\n"), std::string::npos);
    EXPECT_TRUE(report.failed());
}

TEST(Perf, SequentialReadVerifyIsOnePass) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    for (std::uint64_t lba = 0; lba < 2048; ++lba) {
        fill_pattern(device.block(lba), lba, 1234);
    }
    const PerfReport report = run_perf(device, one_pass(Workload::read));
    EXPECT_EQ(report.run.reads, 256u);
    EXPECT_EQ(report.blocks_checked, 2048u);
    EXPECT_FALSE(report.failed());
}

// ---- errors -------------------------------------------------------------------------------------

TEST(Perf, FailedRequestsAreCountedWithTheDeviceStatus) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.fail_lba = 20;
    device.faults.fail_op = Op::write;
    const PerfReport report = run_perf(device, one_pass(Workload::write));
    EXPECT_EQ(report.run.errors, 1u);
    EXPECT_EQ(report.run.writes, 255u);
    ASSERT_EQ(report.first_errors.size(), 1u);
    EXPECT_EQ(report.first_errors[0],
              "write of LBA 16 (8 blocks) failed: Input/output error (device status 0x0281)");
    EXPECT_EQ(report.verify.reads, 255u);  // the failed slot was never written: not read back
    EXPECT_TRUE(report.failed());          // an error with --verify fails the run
    const std::string text = format_report(report);
    EXPECT_NE(text.find("  error: write of LBA 16 (8 blocks) failed: Input/output error (device "
                        "status 0x0281)\n"),
              std::string::npos)
        << text;
}

TEST(Perf, RetriesSubmitAFailedRequestAgainUntilItWorks) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.fail_lba = 20;
    device.faults.fail_op = Op::write;
    device.faults.fail_times = 2;  // fails twice, then the write goes through
    PerfOptions o = one_pass(Workload::write);
    o.retries = 2;
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.errors, 0u);
    EXPECT_EQ(report.run.retried, 2u);
    EXPECT_EQ(report.run.writes, 256u);
    EXPECT_EQ(report.verify.reads, 256u);  // the retried slot was written and is read back
    EXPECT_EQ(report.mismatches, 0u);
    EXPECT_FALSE(report.failed());
    EXPECT_NE(format_report(report).find("; 2 failed request(s) submitted again"),
              std::string::npos);
}

TEST(Perf, ARequestFailingEveryRetryIsAnError) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.fail_lba = 20;
    device.faults.fail_op = Op::write;
    PerfOptions o = one_pass(Workload::write);
    o.retries = 3;
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.errors, 1u);
    EXPECT_EQ(report.run.retried, 3u);
    EXPECT_EQ(report.run.writes, 255u);
    EXPECT_TRUE(report.failed());
}

TEST(Perf, WithoutVerifyErrorsAreReportedButDoNotFail) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.fail_lba = 0;
    device.faults.fail_op = Op::read;
    PerfOptions o = by_count(Workload::read, 512);
    const PerfReport report = run_perf(device, o);
    EXPECT_EQ(report.run.errors, 2u);  // LBA 0 is read twice in 512 sequential requests
    EXPECT_EQ(report.run.ios, 510u);
    EXPECT_FALSE(report.failed());
    const auto json = nlohmann::json::parse(format_report_json(report));
    EXPECT_EQ(json["errors"], 2);
    EXPECT_EQ(json["first_errors"][0],
              "read of LBA 0 (8 blocks) failed: Input/output error (device status 0x0281)");
}

TEST(Perf, AHungQueueIsAbandonedAfterTheStallTimeout) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.hold_completions = true;
    PerfOptions o = by_count(Workload::randread, 100);
    o.stall_timeout = 50ms;
    const PerfReport report = run_perf(device, o);
    ASSERT_EQ(report.fatal.size(), 1u);
    EXPECT_EQ(report.fatal[0],
              "queue 0: no progress for 50 ms with 8 request(s) in flight; "
              "abandoned");
    EXPECT_TRUE(report.failed());
}

TEST(Perf, ARefusedRequestStopsItsQueue) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    device.faults.refuse_error = ENODEV;
    device.faults.refuse_after = 10;
    const PerfReport report = run_perf(device, by_count(Workload::read, 100));
    ASSERT_EQ(report.fatal.size(), 1u);
    EXPECT_EQ(report.fatal[0], "queue 0: submit read of LBA 80 (8 blocks) refused: No such device");
    EXPECT_EQ(report.run.ios, 10u);  // what was accepted still completed
    EXPECT_TRUE(report.failed());
    EXPECT_NE(format_report(report).find("  stopped: queue 0: submit read of LBA 80"),
              std::string::npos);
}

// ---- arguments ----------------------------------------------------------------------------------

TEST(Perf, RejectsArgumentsTheDeviceCannotTake) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    const auto run_with = [&](const std::function<void(PerfOptions&)>& change) {
        PerfOptions o = by_count(Workload::randread, 10);
        change(o);
        return error_of([&] { run_perf(device, o); });
    };
    EXPECT_EQ(run_with([](PerfOptions& o) { o.queue_depth = 0; }),
              "perf blk --qd 0: must be at least 1");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.queue_depth = 65; }),
              "perf blk --qd 65: above fake0's limit of 64 requests in flight per queue");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.queues = 5; }),
              "perf blk --queues 5: fake0 has 4 I/O queue(s)");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.queues = 0; }),
              "perf blk --queues 0: must be at least 1");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.request_bytes = 1000; }),
              "perf blk --bs 1000: not a multiple of the block size, 512 bytes");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.request_bytes = 2u << 20; }),
              "perf blk --bs 2097152: split into 128 commands of at most 16384 bytes, more than "
              "the 64 a queue of fake0 holds");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.size = 2 << 20; }),
              "perf blk --size 2097152: from --offset 0 it ends beyond fake0: 2048 blocks of 512 "
              "bytes = 1048576 bytes");
    EXPECT_EQ(run_with([](PerfOptions& o) {
                  o.offset = 512 * 1024;
                  o.size = 768 * 1024;
              }),
              "perf blk --size 786432: from --offset 524288 it ends beyond fake0: 2048 blocks of "
              "512 bytes = 1048576 bytes");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.offset = 1 << 20; }),
              "perf blk --offset 1048576: at or beyond the end of fake0, 2048 blocks of 512 bytes "
              "= 1048576 bytes");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.offset = 100; }),
              "perf blk --offset 100: not a multiple of the block size, 512 bytes");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.size = 1024; }),
              "perf blk --size 1024: smaller than --bs 4096");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.read_percent = 101; }),
              "perf blk --rwmixread 101: must be 0..100");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.ios = 0; }),
              "perf blk --time: no stop condition: give --time or --ios");
    EXPECT_EQ(run_with([](PerfOptions& o) { o.single_pass = true; }),
              "perf blk --rw randread: a single pass is for sequential workloads");
    EXPECT_EQ(device.requests().size(), 0u);  // nothing ran
    EXPECT_EQ(device.queue(0), nullptr);      // not even a queue was opened
}

TEST(Perf, JsonCarriesTheFiguresAndSettings) {
    FakeBlockDevice device(FakeBlockDevice::small_geometry());
    PerfOptions o = one_pass(Workload::write);
    o.queues = 2;
    const PerfReport report = run_perf(device, o);
    const auto j = nlohmann::json::parse(format_report_json(report));
    EXPECT_EQ(j["device"], "fake0");
    EXPECT_EQ(j["rw"], "write");
    EXPECT_EQ(j["bs"], 4096);
    EXPECT_EQ(j["qd"], 8);
    EXPECT_EQ(j["queues"], 2);
    EXPECT_EQ(j["mode"], "poll");
    EXPECT_EQ(j["seed"], 1234);
    EXPECT_EQ(j["verify"], true);
    EXPECT_EQ(j["ok"], true);
    EXPECT_EQ(j["errors"], 0);
    EXPECT_EQ(j["mismatches"], 0);
    EXPECT_EQ(j["blocks_checked"], 2048);
    EXPECT_EQ(j["run"]["writes"], 256);
    EXPECT_EQ(j["verify_pass"]["reads"], 256);
    EXPECT_EQ(j["name"], "blk_write_qd8_iops");
    EXPECT_GT(j["iops"].get<double>(), 0);
    for (const char* key : {"mean", "min", "p50", "p99", "p99_9", "max"}) {
        EXPECT_TRUE(j["run"]["latency_ns"].contains(key)) << key;
    }
    EXPECT_TRUE(j["run"].contains("cpu_percent"));
    EXPECT_TRUE(j["run"].contains("mib_per_s"));
}

}  // namespace
}  // namespace ring3::block
