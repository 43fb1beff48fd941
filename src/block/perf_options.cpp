// `ring3 perf blk`: workloads, option parsing and validation (perf.hpp).
#include <fmt/core.h>

#include <cerrno>
#include <charconv>

#include "ring3/block/perf.hpp"
#include "ring3/core/error.hpp"

namespace ring3::block {

// ---- workloads -------------------------------------------------------------------------------

const char* to_string(Workload workload) noexcept {
    switch (workload) {
        case Workload::read:
            return "read";
        case Workload::write:
            return "write";
        case Workload::randread:
            return "randread";
        case Workload::randwrite:
            return "randwrite";
        case Workload::rw:
            return "rw";
        case Workload::randrw:
            return "randrw";
    }
    return "?";
}

bool is_random(Workload w) noexcept {
    return w == Workload::randread || w == Workload::randwrite || w == Workload::randrw;
}
bool has_reads(Workload w) noexcept {
    return w != Workload::write && w != Workload::randwrite;
}
bool has_writes(Workload w) noexcept {
    return w != Workload::read && w != Workload::randread;
}

Workload parse_workload(std::string_view text, std::string_view option) {
    for (const Workload w : {Workload::randread, Workload::randwrite, Workload::read,
                             Workload::write, Workload::rw, Workload::randrw}) {
        if (text == to_string(w)) {
            return w;
        }
    }
    throw Error::invalid("perf blk", fmt::format("{} {}", option, text),
                         "unknown workload; one of randread, randwrite, read, write, rw, randrw");
}

namespace {

// A decimal number at the start of `text`; the rest is left in `text`.
bool leading_number(std::string_view& text, std::uint64_t& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end == text.data()) {
        return false;
    }
    text.remove_prefix(static_cast<std::size_t>(end - text.data()));
    return true;
}

char lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equals_lower(std::string_view text, std::string_view expected) {
    if (text.size() != expected.size()) {
        return false;
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (lower(text[i]) != expected[i]) {
            return false;
        }
    }
    return true;
}

}  // namespace

std::uint64_t parse_size(std::string_view text, std::string_view option) {
    const auto invalid = [&](const char* reason) {
        return Error::invalid("perf blk", fmt::format("{} {}", option, text), reason);
    };
    std::string_view rest = text;
    std::uint64_t value = 0;
    if (!leading_number(rest, value)) {
        throw invalid("not a size: bytes, or a number with k, m, g or t (powers of 1024)");
    }
    unsigned shift = 0;
    if (!rest.empty()) {
        switch (lower(rest.front())) {
            case 'k':
                shift = 10;
                break;
            case 'm':
                shift = 20;
                break;
            case 'g':
                shift = 30;
                break;
            case 't':
                shift = 40;
                break;
            default:
                break;
        }
        if (shift != 0) {
            rest.remove_prefix(1);
        }
        if (!rest.empty() && !equals_lower(rest, "b") &&
            !(shift != 0 && equals_lower(rest, "ib"))) {
            throw invalid("not a size: bytes, or a number with k, m, g or t (powers of 1024)");
        }
    }
    if (value > (~std::uint64_t{0} >> shift)) {
        throw invalid("too large");
    }
    return value << shift;
}

std::chrono::nanoseconds parse_duration(std::string_view text, std::string_view option) {
    std::string_view rest = text;
    std::uint64_t value = 0;
    const auto invalid = [&] {
        return Error::invalid("perf blk", fmt::format("{} {}", option, text),
                              "not a duration: a number with s, ms, us or m (minutes); a bare "
                              "number is seconds");
    };
    if (!leading_number(rest, value)) {
        throw invalid();
    }
    std::uint64_t nanoseconds_per_unit = 0;
    if (rest.empty() || rest == "s") {
        nanoseconds_per_unit = 1'000'000'000;
    } else if (rest == "ms") {
        nanoseconds_per_unit = 1'000'000;
    } else if (rest == "us") {
        nanoseconds_per_unit = 1'000;
    } else if (rest == "m" || rest == "min") {
        nanoseconds_per_unit = 60'000'000'000;
    } else {
        throw invalid();
    }
    if (value > static_cast<std::uint64_t>(std::chrono::nanoseconds::max().count()) /
                    nanoseconds_per_unit) {
        throw Error::invalid("perf blk", fmt::format("{} {}", option, text), "too long");
    }
    return std::chrono::nanoseconds(static_cast<std::int64_t>(value * nanoseconds_per_unit));
}

// ---- validation ------------------------------------------------------------------------------

void validate(const PerfOptions& o, const Geometry& g, std::string_view device) {
    const std::string dev(device);
    const auto fail = [](std::string option, std::string reason) {
        return Error::invalid("perf blk", std::move(option), std::move(reason));
    };
    if (g.block_size == 0 || g.block_count == 0) {
        throw Error::invalid("perf blk", dev, "the device reports no blocks", ENODEV);
    }
    const std::uint64_t capacity = g.block_count * g.block_size;
    if (o.queue_depth == 0) {
        throw fail("--qd 0", "must be at least 1");
    }
    if (o.queue_depth > g.max_queue_depth) {
        throw fail(fmt::format("--qd {}", o.queue_depth),
                   fmt::format("above {}'s limit of {} requests in flight per queue", dev,
                               g.max_queue_depth));
    }
    if (o.queues == 0) {
        throw fail("--queues 0", "must be at least 1");
    }
    if (o.queues > g.queue_count) {
        throw fail(fmt::format("--queues {}", o.queues),
                   fmt::format("{} has {} I/O queue(s)", dev, g.queue_count));
    }
    if (o.request_bytes == 0 || o.request_bytes % g.block_size != 0) {
        throw fail(fmt::format("--bs {}", o.request_bytes),
                   fmt::format("not a multiple of the block size, {} bytes", g.block_size));
    }
    if (g.max_transfer != 0) {
        const std::uint64_t commands = (o.request_bytes + g.max_transfer - 1) / g.max_transfer;
        if (commands > g.max_queue_depth) {
            throw fail(fmt::format("--bs {}", o.request_bytes),
                       fmt::format("split into {} commands of at most {} bytes, more than the {} "
                                   "a queue of {} holds",
                                   commands, g.max_transfer, g.max_queue_depth, dev));
        }
    }
    if (o.offset % g.block_size != 0) {
        throw fail(fmt::format("--offset {}", o.offset),
                   fmt::format("not a multiple of the block size, {} bytes", g.block_size));
    }
    if (o.offset >= capacity) {
        throw fail(fmt::format("--offset {}", o.offset),
                   fmt::format("at or beyond the end of {}, {} blocks of {} bytes = {} bytes", dev,
                               g.block_count, g.block_size, capacity));
    }
    const std::uint64_t size = o.size == 0 ? capacity - o.offset : o.size;
    if (size % g.block_size != 0) {
        throw fail(fmt::format("--size {}", o.size),
                   fmt::format("not a multiple of the block size, {} bytes", g.block_size));
    }
    if (size > capacity - o.offset) {
        throw fail(fmt::format("--size {}", o.size),
                   fmt::format("from --offset {} it ends beyond {}: {} blocks of {} bytes = {} "
                               "bytes",
                               o.offset, dev, g.block_count, g.block_size, capacity));
    }
    if (size < o.request_bytes) {
        throw fail(fmt::format("--size {}", size),
                   fmt::format("smaller than --bs {}", o.request_bytes));
    }
    if (o.read_percent > 100) {
        throw fail(fmt::format("--rwmixread {}", o.read_percent), "must be 0..100");
    }
    if (o.verify && (g.block_size < 32 || g.block_size % 8 != 0)) {
        throw fail("--verify",
                   fmt::format("the pattern needs blocks of at least 32 bytes, a multiple of 8; "
                               "{} has {}",
                               dev, g.block_size));
    }
    if (o.time.count() <= 0 && o.ios == 0 && !(o.single_pass && !is_random(o.workload))) {
        throw fail("--time", "no stop condition: give --time or --ios");
    }
    if (o.single_pass && is_random(o.workload)) {
        throw fail(fmt::format("--rw {}", to_string(o.workload)),
                   "a single pass is for sequential workloads");
    }
}

}  // namespace ring3::block
