// `ring3 perf net`: a packet generator, receiver and forwarder over the NetPort face
// (DESIGN.md, "Performance method"), with one worker thread per queue pair:
//   tx   each queue sends test frames (frame.hpp) of its own stream, sequence 0, 1, 2, ...;
//   rx   each queue receives, checks every test frame (content, loss, reordering, duplicates, per
//        stream) and counts other traffic as foreign;
//   fwd  frames received on queue q of one port leave on queue q of the other with their MAC
//        addresses swapped (l2fwd's "MAC swap"), both ways.
// Figures: packets per second, Gbit/s (frame bytes without FCS, preamble and gap), and cycles
// per packet: the cycle counter's ticks over each worker's whole loop, added up, divided by the
// packets (core/cycle_clock.hpp). In poll mode that is the CPU's cost per packet; in interrupt
// mode, and on a receiver that waits for traffic, it includes the time spent waiting.
// fwd holds back what the other side has no room for (nothing is dropped while the run lasts)
// and waits on its two queues in turn (100 us each) when neither has frames.
//
// The steady-state loops allocate nothing; in poll mode they make no system call of their own
// (the port may: TAP's bursts are read()/write()). Engine files: perf_generator.cpp (frames and
// sequence bookkeeping), perf.cpp (workers and the thread harness), perf_options.cpp (parsing,
// validation), perf_report.cpp (text and JSON).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ring3/net/frame.hpp"
#include "ring3/net/net_port.hpp"

namespace ring3::net {

enum class Direction { tx, rx, fwd };
const char* to_string(Direction direction) noexcept;

// Loss, reordering and duplicates of one stream from its sequence numbers. Remembers which of the
// last kWindow sequence numbers arrived (a fixed bitmap: no allocation). A sequence number
// beyond the next expected one counts the ones skipped as lost; one of those arriving later turns
// a loss into a reordering; one that arrived before is a duplicate; one older than the window
// cannot be told apart and counts as stale. Sequences start at 0.
class SequenceTracker {
  public:
    static constexpr std::uint64_t kWindow = 4096;

    void record(std::uint64_t sequence) noexcept;

    std::uint64_t received() const noexcept { return received_; }  // every frame, duplicates too
    std::uint64_t lost() const noexcept { return lost_; }
    std::uint64_t reordered() const noexcept { return reordered_; }
    std::uint64_t duplicates() const noexcept { return duplicates_; }
    std::uint64_t stale() const noexcept { return stale_; }
    std::uint64_t next() const noexcept { return next_; }  // 1 + the highest sequence seen

  private:
    bool seen(std::uint64_t sequence) const noexcept {
        return (window_[(sequence % kWindow) / 64] >> (sequence % 64)) & 1;
    }
    void set(std::uint64_t sequence, bool value) noexcept {
        auto& word = window_[(sequence % kWindow) / 64];
        const std::uint64_t bit = std::uint64_t{1} << (sequence % 64);
        word = value ? word | bit : word & ~bit;
    }

    std::array<std::uint64_t, kWindow / 64> window_{};
    std::uint64_t next_ = 0;
    std::uint64_t received_ = 0;
    std::uint64_t lost_ = 0;
    std::uint64_t reordered_ = 0;
    std::uint64_t duplicates_ = 0;
    std::uint64_t stale_ = 0;
};

// The receiving side's verdicts, for one queue (or all of them added up).
struct RxCheck {
    std::uint64_t test_frames = 0;  // valid test frames (duplicates included)
    std::uint64_t foreign = 0;      // other traffic
    std::uint64_t corrupt = 0;      // addressed as test frames, but wrong
    std::uint64_t lost = 0;
    std::uint64_t reordered = 0;
    std::uint64_t duplicates = 0;
    std::uint64_t stale = 0;
    unsigned streams = 0;  // distinct streams seen

    RxCheck& operator+=(const RxCheck& other) noexcept;
};

// Checks received frames against one seed, per stream (streams 0..kMaxStreams-1).
class RxChecker {
  public:
    static constexpr unsigned kMaxStreams = 64;
    RxChecker(const FillPattern& pattern, unsigned max_reported);

    // Classifies and checks one frame; keeps the first problems' descriptions (allocating only
    // then, when there is something to report).
    FrameKind check(std::span<const std::byte> frame) noexcept;
    RxCheck result() const noexcept;
    const std::vector<std::string>& problems() const noexcept { return problems_; }
    const SequenceTracker& stream(unsigned index) const noexcept { return streams_[index]; }

  private:
    void report(const FrameCheck& check, std::size_t length) noexcept;

    const FillPattern& pattern_;
    unsigned max_reported_;
    std::vector<SequenceTracker> streams_;  // sized at construction
    std::uint64_t frames_ = 0;
    std::uint64_t foreign_ = 0;
    std::uint64_t corrupt_ = 0;
    std::uint64_t test_frames_ = 0;
    std::vector<std::string> problems_;
};

// Frame sizes of a run: fixed, or spread over [min, max] by a seed-derived draw per frame.
struct SizeRange {
    std::uint32_t min = 64;
    std::uint32_t max = 64;
};

// Builds the frames of one stream: sequence 0, 1, 2, ...; sizes drawn from the range.
class FrameGenerator {
  public:
    FrameGenerator(const TestFlow& flow, const FillPattern& pattern, SizeRange sizes,
                   std::uint16_t stream) noexcept
        : template_(flow, stream), pattern_(pattern), sizes_(sizes), stream_(stream) {}

    // The length of the next frame, then build() it into at least that many bytes.
    std::uint32_t next_length() const noexcept;
    void build(std::byte* out) noexcept;  // advances the sequence
    std::uint64_t sequence() const noexcept { return sequence_; }

  private:
    TestFrameTemplate template_;
    const FillPattern& pattern_;
    SizeRange sizes_;
    std::uint16_t stream_;
    std::uint64_t sequence_ = 0;
};

// A snapshot for a live status line, taken about once per `progress_interval`.
struct NetProgress {
    std::chrono::nanoseconds elapsed{};
    std::uint64_t packets = 0;  // sent (tx), received (rx), forwarded (fwd) so far
    std::uint64_t bytes = 0;
    double pps = 0;  // over the last interval
    double gbps = 0;
};

struct NetPerfOptions {
    Direction direction = Direction::tx;
    SizeRange sizes;      // --size: 64, or 64-1514
    unsigned queues = 1;  // one thread per queue pair
    unsigned depth = 0;   // descriptors per ring; 0: the port's default
    unsigned burst = 32;  // packets per rx_burst/tx_burst
    irq::WaitMode mode = irq::WaitMode::poll;
    MacAddress destination_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}};  // tx
    std::uint64_t seed = 1;  // frame contents; tx and rx must agree

    // Stop conditions; the first one met ends the run. At least one must be given.
    std::chrono::nanoseconds time{0};  // 0: no time limit
    std::uint64_t count = 0;           // packets in all (tx: split over the queues); 0: no limit

    // A tx queue that cannot send for this long stops (its port is stuck).
    std::chrono::milliseconds stall_timeout{10000};
    std::chrono::milliseconds progress_interval{1000};
    std::function<void(const NetProgress&)> on_progress;  // called on run_net_perf's thread
    const std::atomic<bool>* cancel = nullptr;            // set (e.g. by SIGINT) to stop early
    unsigned max_reported = 8;                            // problems kept in the report
};

// Figures of one queue (for fwd: of the pair of queues with that index), or of all of them.
struct NetQueueResult {
    unsigned queue = 0;
    std::uint64_t packets = 0;  // accepted by tx_burst (tx), frames received (rx), forwarded
    std::uint64_t bytes = 0;
    std::uint64_t refused = 0;  // tx_burst calls that accepted fewer than offered (no room)
    std::uint64_t dropped = 0;  // fwd: frames received and still held back (no room) at the end
    std::uint64_t cycles = 0;   // cycle-counter ticks of the worker's loop
    // Of those, ticks spent waiting for the device (tx: for room in the ring): what the loop
    // costs without them is the driver's and the generator's own work.
    std::uint64_t idle_cycles = 0;
    RxCheck rx;       // rx
    QueueStats port;  // the port queue's own counters (fwd: both ports' added up)
};

struct NetPerfReport {
    std::string device;
    std::string peer;  // fwd
    PortInfo info;
    NetPerfOptions options;
    std::chrono::nanoseconds elapsed{0};  // start to the last worker's end
    double cpu_percent = 0;               // process user+sys time over wall time
    std::vector<NetQueueResult> queues;
    NetQueueResult total;
    std::vector<std::string> problems;  // first corrupt frames
    std::vector<std::string> fatal;     // a queue that had to stop
    bool cancelled = false;
    bool cycle_counter = true;  // cycles were counted (x86)

    double seconds() const noexcept;
    double pps() const noexcept;
    double gbps() const noexcept;
    double cycles_per_packet() const noexcept;
    double busy_cycles_per_packet() const noexcept;  // idle_cycles left out
    // A queue stopped, or the port counted tx or rx errors; rx: a corrupt or duplicate frame, or
    // fewer test frames than --count.
    bool failed() const noexcept;
};

// "64", "60-1514": throws ring3::Error naming `option` and the limits.
SizeRange parse_size_range(std::string_view text, std::string_view option = "--size");
inline constexpr unsigned kMaxBurst = 256;
// Throws ring3::Error naming the option and the limit for what is wrong whatever the port.
void validate_options(const NetPerfOptions& options);
// The same, and what does not fit the port.
void validate(const NetPerfOptions& options, const PortInfo& info, std::string_view device);

// Opens options.queues queue pairs of `port` (and of `peer` for fwd), runs, and reports. Throws
// ring3::Error for invalid options or a port that cannot be set up; errors during the run are in
// the report.
NetPerfReport run_net_perf(NetPort& port, const NetPerfOptions& options, NetPort* peer = nullptr);

// "net_tx_64b_pps: 812345 pps".
std::string figure_line(const NetPerfReport& report);
// The human report, ending with figure_line() and a newline.
std::string format_report(const NetPerfReport& report);
std::string format_report_json(const NetPerfReport& report);
// "[ 3s] 812,345 pps 0.42 Gbit/s" (no newline).
std::string format_progress(const NetProgress& progress);

}  // namespace ring3::net
