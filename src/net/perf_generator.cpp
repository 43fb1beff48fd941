// `ring3 perf net`: frame generation and the receiving side's bookkeeping (perf.hpp).
#include <fmt/core.h>

#include "ring3/net/perf.hpp"

namespace ring3::net {

// ---- sequence bookkeeping ---------------------------------------------------------------------

void SequenceTracker::record(std::uint64_t sequence) noexcept {
    ++received_;
    if (sequence >= next_) {
        // Everything skipped is lost until it turns up; only the window's part of it is
        // remembered as "not seen" (older sequences will count as stale).
        const std::uint64_t skipped = sequence - next_;
        lost_ += skipped;
        const std::uint64_t clear_from = skipped > kWindow ? sequence - kWindow : next_;
        for (std::uint64_t s = clear_from; s < sequence; ++s) {
            set(s, false);
        }
        set(sequence, true);
        next_ = sequence + 1;
        return;
    }
    if (next_ - sequence > kWindow) {
        ++stale_;
        return;
    }
    if (seen(sequence)) {
        ++duplicates_;
        return;
    }
    set(sequence, true);
    --lost_;
    ++reordered_;
}

RxCheck& RxCheck::operator+=(const RxCheck& other) noexcept {
    test_frames += other.test_frames;
    foreign += other.foreign;
    corrupt += other.corrupt;
    lost += other.lost;
    reordered += other.reordered;
    duplicates += other.duplicates;
    stale += other.stale;
    streams += other.streams;
    return *this;
}

RxChecker::RxChecker(const FillPattern& pattern, unsigned max_reported)
    : pattern_(pattern), max_reported_(max_reported), streams_(kMaxStreams) {
    problems_.reserve(max_reported);
}

void RxChecker::report(const FrameCheck& c, std::size_t length) noexcept {
    if (problems_.size() >= max_reported_) {
        return;
    }
    try {
        problems_.push_back(
            c.kind == FrameKind::corrupt
                ? fmt::format("frame {} received ({} bytes): {}", frames_, length, c.problem)
                : fmt::format("frame {} received ({} bytes): stream {}, ring3 sends at most {}",
                              frames_, length, c.stream, kMaxStreams));
    } catch (...) {  // out of memory on the error path: the count still says it
    }
}

FrameKind RxChecker::check(std::span<const std::byte> frame) noexcept {
    ++frames_;
    const FrameCheck c = check_test_frame(frame, pattern_);
    switch (c.kind) {
        case FrameKind::foreign:
            ++foreign_;
            break;
        case FrameKind::corrupt:
            ++corrupt_;
            report(c, frame.size());
            break;
        case FrameKind::test:
            if (c.stream >= kMaxStreams) {
                ++corrupt_;
                report(c, frame.size());
                return FrameKind::corrupt;
            }
            ++test_frames_;
            streams_[c.stream].record(c.sequence);
            break;
    }
    return c.kind;
}

RxCheck RxChecker::result() const noexcept {
    RxCheck r;
    r.test_frames = test_frames_;
    r.foreign = foreign_;
    r.corrupt = corrupt_;
    for (const auto& s : streams_) {
        if (s.received() == 0) {
            continue;
        }
        ++r.streams;
        r.lost += s.lost();
        r.reordered += s.reordered();
        r.duplicates += s.duplicates();
        r.stale += s.stale();
    }
    return r;
}

// ---- generation -------------------------------------------------------------------------------

std::uint32_t FrameGenerator::next_length() const noexcept {
    if (sizes_.min == sizes_.max) {
        return sizes_.min;
    }
    // splitmix64's finaliser over (stream, sequence): the same sizes every run with this seed.
    std::uint64_t z =
        (sequence_ ^ (std::uint64_t{stream_} << 48)) + pattern_.seed() + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const std::uint64_t span = sizes_.max - sizes_.min + 1;
    return sizes_.min +
           static_cast<std::uint32_t>((static_cast<unsigned __int128>(z) * span) >> 64);
}

void FrameGenerator::build(std::byte* out) noexcept {
    template_.write({out, next_length()}, sequence_, pattern_);
    ++sequence_;
}

}  // namespace ring3::net
