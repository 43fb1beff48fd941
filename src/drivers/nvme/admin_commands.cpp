// Admin commands beyond bring-up (NVM Express Base Specification 2.0 §5): features (§5.27 Set
// Features, §5.15 Get Features: number of queues, interrupt coalescing), log pages (§5.16: SMART /
// health, error information), Abort (§5.1), and the description of an asynchronous event.
#include <fmt/core.h>

#include <algorithm>
#include <cstring>

#include "admin_data.hpp"
#include "ring3/core/error.hpp"
#include "ring3/nvme/controller.hpp"

namespace ring3::nvme {

void detail::expect_success(const CompletionEntry& entry, const char* what,
                            const std::string& device) {
    const StatusField status{static_cast<std::uint16_t>(entry.status >> 1)};
    if (!status.ok()) {
        throw Error::invalid(what, device, status_name(status.code_and_type()), EIO);
    }
}

namespace {

using detail::expect_success;
using detail::load;

// A 128-bit little-endian counter as a double (SMART counters, §5.16.1.3).
double load_u128(const std::byte* data, std::size_t offset) {
    const auto low = load<std::uint64_t>(data, offset);
    const auto high = load<std::uint64_t>(data, offset + 8);
    return static_cast<double>(high) * 18446744073709551616.0 + static_cast<double>(low);
}

}  // namespace

std::string AsyncEvent::describe() const {
    static constexpr const char* kTypes[] = {"error",           "SMART/health",   "notice",
                                             "type 3",          "type 4",         "type 5",
                                             "I/O command set", "vendor specific"};
    std::string text = fmt::format(
        "asynchronous event: {} (type {}), info {:#04x}, log page "
        "{:#04x}",
        kTypes[type & 7], type, info, log_page);
    if (type == 1) {
        static constexpr const char* kHealth[] = {"reliability degraded", "temperature threshold",
                                                  "spare below threshold"};
        if (info < 3) {
            text += fmt::format(" ({})", kHealth[info]);
        }
    }
    return text;
}

unsigned Controller::set_queue_count(unsigned wanted) {
    queues_requested_ = wanted;
    SubmissionEntry command{};
    command.opcode = admin::set_features;
    command.cdw10 = feature::number_of_queues;
    command.cdw11 = ((wanted - 1) << 16) | (wanted - 1);  // NCQR, NSQR: 0-based
    const CompletionEntry done = admin(command, "Set Features (Number of Queues)");
    const unsigned sqs = (done.dw0 & 0xffff) + 1;
    const unsigned cqs = (done.dw0 >> 16) + 1;
    return std::min({sqs, cqs, wanted});
}

void Controller::set_interrupt_coalescing(unsigned threshold, unsigned time_100us) {
    SubmissionEntry command{};
    command.opcode = admin::set_features;
    command.cdw10 = feature::interrupt_coalescing;
    command.cdw11 = ((time_100us & 0xff) << 8) | (threshold & 0xff);
    admin(command, "Set Features (Interrupt Coalescing)");
}

std::uint32_t Controller::get_feature(std::uint32_t feature_id) {
    SubmissionEntry command{};
    command.opcode = admin::get_features;
    command.cdw10 = feature_id;
    return admin(command, "Get Features").dw0;
}

SmartLog Controller::smart_log() {
    auto page = pool_->allocate(512, 4096);
    SubmissionEntry command{};
    command.opcode = admin::get_log_page;
    command.nsid = 0xffffffff;  // the controller as a whole
    command.dptr[0] = page.iova();
    command.cdw10 = log_page::smart_health | ((512 / 4 - 1) << 16);  // NUMDL, 0-based dwords
    admin(command, "Get Log Page (SMART / Health Information)");
    const std::byte* d = page.data();
    SmartLog log;
    log.critical_warning = load<std::uint8_t>(d, 0);
    log.temperature_kelvin = load<std::uint16_t>(d, 1);
    log.available_spare = load<std::uint8_t>(d, 3);
    log.available_spare_threshold = load<std::uint8_t>(d, 4);
    log.percentage_used = load<std::uint8_t>(d, 5);
    log.data_units_read = load_u128(d, 32);
    log.data_units_written = load_u128(d, 48);
    log.host_read_commands = load_u128(d, 64);
    log.host_write_commands = load_u128(d, 80);
    log.power_cycles = load_u128(d, 112);
    log.power_on_hours = load_u128(d, 128);
    log.unsafe_shutdowns = load_u128(d, 144);
    log.media_errors = load_u128(d, 160);
    log.error_log_entries = load_u128(d, 176);
    return log;
}

std::vector<std::vector<std::byte>> Controller::error_log(unsigned entries) {
    entries = std::clamp(entries, 1u, 64u);
    auto page = pool_->allocate(64 * entries, 4096);
    SubmissionEntry command{};
    command.opcode = admin::get_log_page;
    command.nsid = 0xffffffff;
    command.dptr[0] = page.iova();
    command.cdw10 = log_page::error_information | ((64 * entries / 4 - 1) << 16);
    admin(command, "Get Log Page (Error Information)");
    std::vector<std::vector<std::byte>> result;
    for (unsigned i = 0; i < entries; ++i) {
        result.emplace_back(page.data() + 64 * i, page.data() + 64 * (i + 1));
    }
    return result;
}

std::uint32_t Controller::abort(std::uint16_t sq_id, std::uint16_t command_id) {
    SubmissionEntry command{};
    command.opcode = admin::abort;
    command.cdw10 = (static_cast<std::uint32_t>(command_id) << 16) | sq_id;
    return admin(command, "Abort").dw0;
}

}  // namespace ring3::nvme
