// `ring3 perf blk`: the latency histogram and the reports (perf.hpp).
#include <fmt/core.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "ring3/block/perf.hpp"
#include "ring3/core/error.hpp"

namespace ring3::block {

// ---- latency histogram -----------------------------------------------------------------------

void LatencyHistogram::merge(const LatencyHistogram& other) noexcept {
    for (std::size_t i = 0; i < kBuckets; ++i) {
        buckets_[i] += other.buckets_[i];
    }
    count_ += other.count_;
    sum_ += other.sum_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
}

double LatencyHistogram::mean() const noexcept {
    return count_ == 0 ? 0 : static_cast<double>(sum_) / static_cast<double>(count_);
}

std::uint64_t LatencyHistogram::upper_bound_of(std::size_t index) noexcept {
    const std::size_t group = index >> kSubBucketBits;
    const unsigned shift = group == 0 ? 0 : static_cast<unsigned>(group - 1);
    const std::uint64_t mantissa = index - (std::size_t{shift} << kSubBucketBits);
    return ((mantissa + 1) << shift) - 1;
}

std::uint64_t LatencyHistogram::percentile(double percent) const noexcept {
    if (count_ == 0) {
        return 0;
    }
    const double wanted = std::ceil(percent / 100.0 * static_cast<double>(count_));
    const std::uint64_t rank = wanted < 1 ? 1 : static_cast<std::uint64_t>(wanted);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
        seen += buckets_[i];
        if (seen >= rank) {
            return std::min(upper_bound_of(i), max_);
        }
    }
    return max_;
}

double PhaseResult::seconds() const noexcept {
    return std::chrono::duration<double>(elapsed).count();
}
double PhaseResult::iops() const noexcept {
    return seconds() > 0 ? static_cast<double>(ios) / seconds() : 0;
}
double PhaseResult::mib_per_s() const noexcept {
    return seconds() > 0 ? static_cast<double>(bytes) / seconds() / (1 << 20) : 0;
}

// ---- reports ---------------------------------------------------------------------------------

namespace {

// 7312 -> "7,312".
std::string grouped(std::uint64_t value) {
    std::string digits = std::to_string(value);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i != 0 && (digits.size() - i) % 3 == 0) {
            out += ',';
        }
        out += digits[i];
    }
    return out;
}

double ratio(std::uint64_t part, std::uint64_t whole) {
    return whole == 0 ? 0.0 : static_cast<double>(part) / static_cast<double>(whole);
}

std::uint64_t rounded(double value) {
    return value <= 0 ? 0 : static_cast<std::uint64_t>(std::llround(value));
}

std::string duration_text(double nanoseconds) {
    if (nanoseconds < 1e3) {
        return fmt::format("{:.0f} ns", nanoseconds);
    }
    if (nanoseconds < 1e6) {
        return fmt::format("{:.1f} us", nanoseconds / 1e3);
    }
    if (nanoseconds < 1e9) {
        return fmt::format("{:.2f} ms", nanoseconds / 1e6);
    }
    return fmt::format("{:.2f} s", nanoseconds / 1e9);
}

std::string bytes_text(std::uint64_t bytes) {
    static constexpr const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double value = static_cast<double>(bytes);
    unsigned unit = 0;
    while (value >= 1024 && unit + 1 < std::size(kUnits)) {
        value /= 1024;
        ++unit;
    }
    return unit == 0 ? fmt::format("{} bytes", bytes)
                     : fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string latency_text(const LatencyHistogram& h) {
    if (h.count() == 0) {
        return "none";
    }
    return fmt::format("mean {}, p50 {}, p99 {}, p99.9 {}, max {}", duration_text(h.mean()),
                       duration_text(static_cast<double>(h.percentile(50))),
                       duration_text(static_cast<double>(h.percentile(99))),
                       duration_text(static_cast<double>(h.percentile(99.9))),
                       duration_text(static_cast<double>(h.max())));
}

std::string stop_text(const PerfOptions& o) {
    std::string text;
    const auto add = [&](const std::string& part) { text += text.empty() ? part : " or " + part; };
    if (o.time.count() > 0) {
        add(duration_text(static_cast<double>(o.time.count())));
    }
    if (o.ios != 0) {
        add(fmt::format("{} requests", grouped(o.ios)));
    }
    if (o.single_pass) {
        add("one pass over the range");
    }
    return text;
}

nlohmann::json phase_json(const PhaseResult& r) {
    const auto& h = r.latency;
    return {
        {"seconds", r.seconds()},
        {"ios", r.ios},
        {"reads", r.reads},
        {"writes", r.writes},
        {"bytes", r.bytes},
        {"errors", r.errors},
        {"iops", r.iops()},
        {"mib_per_s", r.mib_per_s()},
        {"cpu_percent", r.cpu_percent},
        {"queue_full", r.queue_full},
        {"retried", r.retried},
        {"max_in_flight", r.max_in_flight},
        {"latency_ns",
         {{"mean", h.mean()},
          {"min", h.min()},
          {"p50", h.percentile(50)},
          {"p99", h.percentile(99)},
          {"p99_9", h.percentile(99.9)},
          {"max", h.max()}}},
    };
}

std::string figure_name(const PerfReport& report) {
    return fmt::format("blk_{}_qd{}_iops", to_string(report.options.workload),
                       report.options.queue_depth);
}

}  // namespace

std::string figure_line(const PerfReport& report) {
    return fmt::format("{}: {} IOPS", figure_name(report), rounded(report.run.iops()));
}

std::string format_report(const PerfReport& report) {
    const PerfOptions& o = report.options;
    const PhaseResult& run = report.run;
    const std::uint32_t block_size = report.geometry.block_size;
    std::string out;
    const auto line = [&](const std::string& text) {
        out += text;
        out += '\n';
    };
    line(fmt::format("perf blk {}: {}{}, bs {}, qd {}, {} queue(s), {} mode", report.device,
                     to_string(o.workload),
                     o.workload == Workload::rw || o.workload == Workload::randrw
                         ? fmt::format(" ({}% reads)", o.read_percent)
                         : "",
                     bytes_text(o.request_bytes), o.queue_depth, o.queues, irq::to_string(o.mode)));
    line(fmt::format("  range: LBA {}..{} ({} blocks of {} bytes, {})", report.first_lba,
                     report.first_lba + report.lba_count - 1, grouped(report.lba_count), block_size,
                     bytes_text(report.lba_count * block_size)));
    line(fmt::format("  stop: {}{}", stop_text(o), report.cancelled ? " (cancelled early)" : ""));
    line(fmt::format("  seed: {}", o.seed));
    line(fmt::format("  requests: {} in {:.2f} s ({} reads, {} writes), {} errors",
                     grouped(run.ios), run.seconds(), grouped(run.reads), grouped(run.writes),
                     grouped(run.errors)));
    line(fmt::format("  IOPS: {}", grouped(rounded(run.iops()))));
    line(fmt::format("  bandwidth: {:.1f} MiB/s", run.mib_per_s()));
    line(fmt::format("  latency: {}", latency_text(run.latency)));
    line(fmt::format("  cpu: {:.1f}% (process user+sys over wall time; 100% = one core)",
                     run.cpu_percent));
    line(fmt::format(
        "  in flight: at most {} per queue; submit refused as full {} time(s){}{}",
        run.max_in_flight, grouped(run.queue_full),
        run.retried != 0 ? fmt::format("; {} failed request(s) submitted again", run.retried) : "",
        report.commands_per_request > 1
            ? fmt::format("; each request is {} commands (max transfer {})",
                          report.commands_per_request, bytes_text(report.geometry.max_transfer))
            : ""));
    for (std::size_t i = 0; i < report.queue_stats.size(); ++i) {
        const QueueStats& q = report.queue_stats[i];
        line(
            fmt::format("  queue {}: {} commands, {:.3f} notifications and {:.3f} completion "
                        "acknowledgements per command, {:.2f} completions per reap{}",
                        i, grouped(q.requests), ratio(q.notifications, q.requests),
                        ratio(q.acknowledgements, q.requests), ratio(q.completions, q.reaps),
                        q.garbage != 0 ? fmt::format(", {} invalid entries", q.garbage) : ""));
    }
    line(fmt::format("  DMA memory: {} mapped for the device, {} in use ({} data buffers)",
                     bytes_text(report.dma_mapped_bytes), bytes_text(report.dma_in_use_bytes),
                     bytes_text(report.data_buffer_bytes)));
    if (report.verify_pass) {
        const PhaseResult& v = report.verify;
        line(fmt::format("  read-back: {} requests in {:.2f} s, {} IOPS, {:.1f} MiB/s, {} errors",
                         grouped(v.ios), v.seconds(), grouped(rounded(v.iops())), v.mib_per_s(),
                         grouped(v.errors)));
    }
    if (o.verify) {
        line(fmt::format("  verify: {} blocks checked, {} mismatches",
                         grouped(report.blocks_checked), grouped(report.mismatches)));
    }
    for (const auto& m : report.first_mismatches) {
        line("  mismatch: " + m);
    }
    if (report.mismatches > report.first_mismatches.size()) {
        line(fmt::format("  mismatch: ... and {} more",
                         grouped(report.mismatches - report.first_mismatches.size())));
    }
    for (const auto& e : report.first_errors) {
        line("  error: " + e);
    }
    if (report.errors() > report.first_errors.size()) {
        line(fmt::format("  error: ... and {} more",
                         grouped(report.errors() - report.first_errors.size())));
    }
    for (const auto& f : report.fatal) {
        line("  stopped: " + f);
    }
    if (report.failed()) {
        line(fmt::format("  FAILED: {} mismatches, {} I/O errors, {} queue(s) stopped",
                         grouped(report.mismatches), grouped(report.errors()),
                         report.fatal.size()));
    } else if (o.verify) {
        line("  verify passed");
    }
    line(figure_line(report));
    return out;
}

std::string format_report_json(const PerfReport& report) {
    const PerfOptions& o = report.options;
    nlohmann::json j = {
        {"device", report.device},
        {"rw", to_string(o.workload)},
        {"bs", o.request_bytes},
        {"qd", o.queue_depth},
        {"queues", o.queues},
        {"mode", irq::to_string(o.mode)},
        {"rwmixread", o.read_percent},
        {"block_size", report.geometry.block_size},
        {"first_lba", report.first_lba},
        {"lba_count", report.lba_count},
        {"offset", o.offset},
        {"size", report.lba_count * report.geometry.block_size},
        {"seed", o.seed},
        {"verify", o.verify},
        {"stop",
         {{"time_s", std::chrono::duration<double>(o.time).count()},
          {"ios", o.ios},
          {"single_pass", o.single_pass}}},
        {"commands_per_request", report.commands_per_request},
        {"run", phase_json(report.run)},
        {"verify_pass", report.verify_pass ? phase_json(report.verify) : nlohmann::json(nullptr)},
        {"blocks_checked", report.blocks_checked},
        {"mismatches", report.mismatches},
        {"first_mismatches", report.first_mismatches},
        {"errors", report.errors()},
        {"first_errors", report.first_errors},
        {"stopped", report.fatal},
        {"cancelled", report.cancelled},
        {"ok", !report.failed()},
        {"name", figure_name(report)},
        {"iops", report.run.iops()},
        {"dma",
         {{"mapped_bytes", report.dma_mapped_bytes},
          {"in_use_bytes", report.dma_in_use_bytes},
          {"data_buffer_bytes", report.data_buffer_bytes}}},
    };
    nlohmann::json queues = nlohmann::json::array();
    for (const QueueStats& q : report.queue_stats) {
        queues.push_back({{"commands", q.requests},
                          {"notifications", q.notifications},
                          {"acknowledgements", q.acknowledgements},
                          {"reaps", q.reaps},
                          {"completions", q.completions},
                          {"invalid_entries", q.garbage}});
    }
    j["queue_stats"] = std::move(queues);
    if (report.first_completion_wall) {
        j["first_completion_unix_ns"] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                            report.first_completion_wall->time_since_epoch())
                                            .count();
    }
    return j.dump();
}

std::string format_progress(const Progress& progress) {
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(progress.elapsed).count();
    return fmt::format("[{:>2}s] {}{} IOPS {:.1f} MiB/s", seconds,
                       std::string_view(progress.phase) == "run" ? "" : "verify ",
                       grouped(rounded(progress.iops)), progress.mib_per_s);
}

}  // namespace ring3::block
