// `ring3 perf net`: figures and reports (perf.hpp).
#include <fmt/core.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "ring3/net/perf.hpp"

namespace ring3::net {

double NetPerfReport::seconds() const noexcept {
    return std::chrono::duration<double>(elapsed).count();
}
double NetPerfReport::pps() const noexcept {
    return seconds() > 0 ? static_cast<double>(total.packets) / seconds() : 0;
}
double NetPerfReport::gbps() const noexcept {
    return seconds() > 0 ? static_cast<double>(total.bytes) * 8 / seconds() / 1e9 : 0;
}
double NetPerfReport::cycles_per_packet() const noexcept {
    return total.packets > 0 && cycle_counter
               ? static_cast<double>(total.cycles) / static_cast<double>(total.packets)
               : 0;
}
double NetPerfReport::busy_cycles_per_packet() const noexcept {
    return total.packets > 0 && cycle_counter
               ? static_cast<double>(total.cycles - std::min(total.cycles, total.idle_cycles)) /
                     static_cast<double>(total.packets)
               : 0;
}
bool NetPerfReport::failed() const noexcept {
    if (!fatal.empty() || total.port.tx_errors != 0 || total.port.rx_errors != 0) {
        return true;
    }
    if (options.direction != Direction::rx) {
        return false;
    }
    return total.rx.corrupt != 0 || total.rx.duplicates != 0 ||
           (options.count != 0 && total.rx.test_frames < options.count && !cancelled);
}

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

std::uint64_t rounded(double value) {
    return value <= 0 ? 0 : static_cast<std::uint64_t>(std::llround(value));
}

std::string size_text(const SizeRange& s) {
    return s.min == s.max ? fmt::format("{}", s.min) : fmt::format("{}-{}", s.min, s.max);
}

std::string figure_name(const NetPerfReport& report) {
    const Direction d = report.options.direction;
    return d == Direction::tx ? fmt::format("net_tx_{}b_pps", size_text(report.options.sizes))
                              : fmt::format("net_{}_pps", to_string(d));
}

std::string stop_text(const NetPerfOptions& o) {
    std::string text;
    const auto add = [&](const std::string& part) { text += text.empty() ? part : " or " + part; };
    if (o.time.count() > 0) {
        add(fmt::format("{:g} s", std::chrono::duration<double>(o.time).count()));
    }
    if (o.count != 0) {
        add(fmt::format("{} packets", grouped(o.count)));
    }
    return text;
}

std::string port_text(const QueueStats& s) {
    return fmt::format(
        "rx {} ({} bytes, {} drops, {} errors), tx {} ({} bytes, {} drops, {} "
        "errors), {} notifications",
        grouped(s.rx_packets), grouped(s.rx_bytes), grouped(s.rx_drops), grouped(s.rx_errors),
        grouped(s.tx_packets), grouped(s.tx_bytes), grouped(s.tx_drops), grouped(s.tx_errors),
        grouped(s.notifications));
}

std::string rx_text(const RxCheck& r) {
    return fmt::format(
        "{} test frames from {} stream(s); {} lost, {} reordered, {} duplicates, "
        "{} stale, {} corrupt; {} foreign",
        grouped(r.test_frames), r.streams, grouped(r.lost), grouped(r.reordered),
        grouped(r.duplicates), grouped(r.stale), grouped(r.corrupt), grouped(r.foreign));
}

nlohmann::json stats_json(const QueueStats& s) {
    return {{"rx_packets", s.rx_packets},      {"rx_bytes", s.rx_bytes},
            {"rx_drops", s.rx_drops},          {"rx_errors", s.rx_errors},
            {"tx_packets", s.tx_packets},      {"tx_bytes", s.tx_bytes},
            {"tx_drops", s.tx_drops},          {"tx_errors", s.tx_errors},
            {"notifications", s.notifications}};
}

nlohmann::json rx_json(const RxCheck& r) {
    return {{"test_frames", r.test_frames},
            {"foreign", r.foreign},
            {"corrupt", r.corrupt},
            {"lost", r.lost},
            {"reordered", r.reordered},
            {"duplicates", r.duplicates},
            {"stale", r.stale},
            {"streams", r.streams}};
}

nlohmann::json queue_json(const NetQueueResult& q, Direction direction) {
    nlohmann::json j = {{"queue", q.queue},          {"packets", q.packets}, {"bytes", q.bytes},
                        {"refused", q.refused},      {"dropped", q.dropped}, {"cycles", q.cycles},
                        {"port", stats_json(q.port)}};
    if (direction == Direction::rx) {
        j["rx"] = rx_json(q.rx);
    }
    return j;
}

}  // namespace

std::string figure_line(const NetPerfReport& report) {
    return fmt::format("{}: {} pps", figure_name(report), rounded(report.pps()));
}

std::string format_report(const NetPerfReport& report) {
    const NetPerfOptions& o = report.options;
    std::string out;
    const auto line = [&](const std::string& text) {
        out += text;
        out += '\n';
    };
    const char* verb = o.direction == Direction::tx   ? "sent"
                       : o.direction == Direction::rx ? "received"
                                                      : "forwarded";
    line(fmt::format(
        "perf net {}{}: {}{}, {} queue(s), {} mode, burst {}", report.device,
        report.peer.empty() ? "" : " <-> " + report.peer, to_string(o.direction),
        o.direction == Direction::tx ? fmt::format(", {}-byte frames", size_text(o.sizes)) : "",
        o.queues, irq::to_string(o.mode), o.burst));
    line(fmt::format("  port: MAC {}, MTU {}, {} queue pair(s); stop after {}",
                     report.info.mac.to_string(), report.info.mtu, report.info.queue_pairs,
                     stop_text(o)));
    line(fmt::format("  {} {} packets ({} bytes) in {:.2f} s: {} pps, {:.3f} Gbit/s, CPU {:.0f}%",
                     verb, grouped(report.total.packets), grouped(report.total.bytes),
                     report.seconds(), grouped(rounded(report.pps())), report.gbps(),
                     report.cpu_percent));
    if (report.cycle_counter) {
        line(fmt::format(
            "  {:.0f} cycles per packet (cycle counter over the workers' loops), {:.0f} "
            "busy (waits for the device left out)",
            report.cycles_per_packet(), report.busy_cycles_per_packet()));
    }
    for (const auto& q : report.queues) {
        line(fmt::format(
            "  queue {}: {} packets, {} bytes, {} refused bursts{}", q.queue, grouped(q.packets),
            grouped(q.bytes), grouped(q.refused),
            o.direction == Direction::fwd ? fmt::format(", {} dropped", grouped(q.dropped)) : ""));
        line("    port: " + port_text(q.port));
        if (o.direction == Direction::rx) {
            line("    check: " + rx_text(q.rx));
        }
    }
    if (o.direction == Direction::rx) {
        line("  check: " + rx_text(report.total.rx));
    }
    for (const auto& p : report.problems) {
        line("  problem: " + p);
    }
    for (const auto& f : report.fatal) {
        line("  stopped: " + f);
    }
    if (report.cancelled) {
        line("  interrupted");
    }
    if (report.failed()) {
        line(
            fmt::format("  FAILED: {} queue(s) stopped, {} tx and {} rx errors, {} corrupt, {} "
                        "duplicates{}",
                        report.fatal.size(), grouped(report.total.port.tx_errors),
                        grouped(report.total.port.rx_errors), grouped(report.total.rx.corrupt),
                        grouped(report.total.rx.duplicates),
                        o.direction == Direction::rx && o.count != 0
                            ? fmt::format(", {} of {} test frames",
                                          grouped(report.total.rx.test_frames), grouped(o.count))
                            : ""));
    }
    line(figure_line(report));
    return out;
}

std::string format_report_json(const NetPerfReport& report) {
    const NetPerfOptions& o = report.options;
    nlohmann::json queues = nlohmann::json::array();
    for (const auto& q : report.queues) {
        queues.push_back(queue_json(q, o.direction));
    }
    nlohmann::json j = {
        {"device", report.device},
        {"peer", report.peer.empty() ? nlohmann::json(nullptr) : nlohmann::json(report.peer)},
        {"direction", to_string(o.direction)},
        {"size_min", o.sizes.min},
        {"size_max", o.sizes.max},
        {"queues", o.queues},
        {"mode", irq::to_string(o.mode)},
        {"burst", o.burst},
        {"seed", o.seed},
        {"mac", report.info.mac.to_string()},
        {"mtu", report.info.mtu},
        {"stop", {{"time_s", std::chrono::duration<double>(o.time).count()}, {"count", o.count}}},
        {"seconds", report.seconds()},
        {"packets", report.total.packets},
        {"bytes", report.total.bytes},
        {"pps", report.pps()},
        {"gbps", report.gbps()},
        {"cycles_per_packet",
         report.cycle_counter ? nlohmann::json(report.cycles_per_packet()) : nullptr},
        {"busy_cycles_per_packet",
         report.cycle_counter ? nlohmann::json(report.busy_cycles_per_packet()) : nullptr},
        {"cpu_percent", report.cpu_percent},
        {"refused", report.total.refused},
        {"dropped", report.total.dropped},
        {"port", stats_json(report.total.port)},
        {"per_queue", queues},
        {"problems", report.problems},
        {"stopped", report.fatal},
        {"cancelled", report.cancelled},
        {"ok", !report.failed()},
        {"name", figure_name(report)},
    };
    if (o.direction == Direction::rx) {
        j["rx"] = rx_json(report.total.rx);
    }
    return j.dump();
}

std::string format_progress(const NetProgress& progress) {
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(progress.elapsed).count();
    return fmt::format("[{:>2}s] {} packets, {} pps {:.3f} Gbit/s", seconds,
                       grouped(progress.packets), grouped(rounded(progress.pps)), progress.gbps);
}

}  // namespace ring3::net
