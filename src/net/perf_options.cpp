// `ring3 perf net`: option parsing and validation (perf.hpp).
#include <fmt/core.h>

#include <charconv>

#include "ring3/core/error.hpp"
#include "ring3/net/perf.hpp"

namespace ring3::net {

const char* to_string(Direction direction) noexcept {
    switch (direction) {
        case Direction::tx:
            return "tx";
        case Direction::rx:
            return "rx";
        case Direction::fwd:
            return "fwd";
    }
    return "?";
}

namespace {

Error invalid(std::string_view option, std::string_view value, std::string reason) {
    return Error::invalid("perf net", fmt::format("{} {}", option, value), std::move(reason));
}

bool parse_number(std::string_view text, std::uint32_t& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

std::string size_option(const SizeRange& s) {
    return s.min == s.max ? fmt::format("--size {}", s.min)
                          : fmt::format("--size {}-{}", s.min, s.max);
}

}  // namespace

SizeRange parse_size_range(std::string_view text, std::string_view option) {
    const auto dash = text.find('-');
    SizeRange range;
    const std::string_view first = text.substr(0, dash);
    const std::string_view second = dash == std::string_view::npos ? first : text.substr(dash + 1);
    if (!parse_number(first, range.min) || !parse_number(second, range.max)) {
        throw invalid(option, text,
                      "not a frame size: bytes (64) or a range MIN-MAX (60-1514), frames without "
                      "FCS");
    }
    if (range.min > range.max) {
        throw invalid(option, text, "the range's minimum is above its maximum");
    }
    return range;
}

void validate_options(const NetPerfOptions& o) {
    const auto fail = [](std::string option, std::string reason) {
        return Error::invalid("perf net", std::move(option), std::move(reason));
    };
    if (o.direction == Direction::tx) {
        if (o.sizes.min < kMinFrameSize) {
            throw fail(size_option(o.sizes), fmt::format("below {} bytes, the shortest test frame "
                                                         "(Ethernet's minimum without FCS)",
                                                         kMinFrameSize));
        }
        if (o.sizes.max > kMaxFrameSize) {
            throw fail(size_option(o.sizes), fmt::format("above {} bytes, the longest test frame "
                                                         "(a 1500-byte MTU without FCS)",
                                                         kMaxFrameSize));
        }
    }
    if (o.queues == 0) {
        throw fail("--queues 0", "must be at least 1");
    }
    if (o.queues > RxChecker::kMaxStreams) {
        throw fail(fmt::format("--queues {}", o.queues),
                   fmt::format("at most {} (one stream per queue)", RxChecker::kMaxStreams));
    }
    if (o.burst == 0 || o.burst > kMaxBurst) {
        throw fail(fmt::format("--burst {}", o.burst), fmt::format("must be 1..{}", kMaxBurst));
    }
    if (o.time.count() <= 0 && o.count == 0) {
        throw fail("--time", "no stop condition: give --time or --count");
    }
    if (o.direction == Direction::tx && o.destination_mac.is_zero()) {
        throw fail("--dst-mac 00:00:00:00:00:00", "not a destination");
    }
}

void validate(const NetPerfOptions& o, const PortInfo& info, std::string_view device) {
    validate_options(o);
    const auto fail = [](std::string option, std::string reason) {
        return Error::invalid("perf net", std::move(option), std::move(reason));
    };
    if (o.direction == Direction::tx && o.sizes.max > info.max_frame) {
        throw fail(size_option(o.sizes),
                   fmt::format("above {} bytes, the longest frame {} takes (MTU {})",
                               info.max_frame, device, info.mtu));
    }
    if (std::uint64_t{info.headroom} + info.max_frame > info.buffer_size) {
        throw Error::invalid("perf net", std::string(device),
                             fmt::format("its buffers of {} bytes do not hold {} bytes of headroom "
                                         "and a {}-byte frame",
                                         info.buffer_size, info.headroom, info.max_frame));
    }
    if (o.queues > info.queue_pairs) {
        throw fail(fmt::format("--queues {}", o.queues),
                   fmt::format("{} has {} queue pair(s)", device, info.queue_pairs));
    }
    if (info.max_queue_depth != 0 && o.depth > info.max_queue_depth) {
        throw fail(fmt::format("--depth {}", o.depth),
                   fmt::format("above {}'s limit of {} descriptors per ring", device,
                               info.max_queue_depth));
    }
}

}  // namespace ring3::net
