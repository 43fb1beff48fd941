// Identify (NVM Express Base Specification 2.0 §5.17): the controller, the active namespace list,
// each namespace and its command-set descriptor, decoded from the pages the controller wrote.
#include <fmt/core.h>

#include <algorithm>
#include <cstring>

#include "admin_data.hpp"
#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/nvme/controller.hpp"

namespace ring3::nvme {
namespace {

using detail::expect_success;
using detail::load;

std::string trimmed_text(const std::byte* data, std::size_t length) {
    std::string text(reinterpret_cast<const char*>(data), length);
    const auto end = text.find_last_not_of(std::string(" \0", 2));
    text.erase(end == std::string::npos ? 0 : end + 1);
    for (char& c : text) {
        if (c < 0x20 || c > 0x7e) {
            c = '?';  // a device's strings are hostile input: keep them printable
        }
    }
    return text;
}

SubmissionEntry identify_command(std::uint32_t cns, std::uint32_t nsid, std::uint64_t iova) {
    SubmissionEntry command{};
    command.opcode = admin::identify;
    command.nsid = nsid;
    command.dptr[0] = iova;
    command.cdw10 = cns;
    return command;
}

// §5.17.2.3: descriptors of (type, length, 2 reserved bytes, value) until a type of 0. The
// device wrote it: every length is checked against the page.
std::uint8_t command_set_of(const std::byte* page, std::size_t size) {
    std::size_t at = 0;
    while (at + 4 <= size) {
        const auto type = static_cast<std::uint8_t>(page[at]);
        const auto length = static_cast<std::uint8_t>(page[at + 1]);
        if (type == 0 || at + 4 + length > size) {
            break;
        }
        if (type == descriptor::command_set && length == 1) {
            return static_cast<std::uint8_t>(page[at + 4]);
        }
        at += 4 + length;
    }
    return csi::nvm;  // no descriptor: the NVM command set (controllers before 1.4)
}

}  // namespace

const NamespaceInfo& Controller::namespace_info(std::uint32_t nsid) const {
    for (const auto& ns : namespaces_) {
        if (ns.id == nsid) {
            return ns;
        }
    }
    std::string ids;
    for (const auto& ns : namespaces_) {
        ids += fmt::format("{}{}", ids.empty() ? "" : ", ", ns.id);
    }
    throw Error::invalid(
        fmt::format("namespace {}", nsid), device_.name(),
        fmt::format("not an active namespace (active: {})", ids.empty() ? "none" : ids), ENODEV);
}

// §3.5.1 by the steppable Initializer, sleeping between the steps that wait. `when_disabled` runs
// once the controller reads CSTS.RDY = 0, before the admin queue is programmed again.

// §5.17: Identify Controller and the active namespace list are independent, so they go with one
// doorbell write; then each namespace's Identify Namespace and descriptor list, all together.
void Controller::identify() {
    auto controller_page = pool_->allocate(4096, 4096);
    auto list_page = pool_->allocate(4096, 4096);
    const auto first = admin_all({identify_command(cns::controller, 0, controller_page.iova()),
                                  identify_command(cns::active_namespaces, 0, list_page.iova())},
                                 "Identify Controller and Active Namespace List");
    expect_success(first[0], "Identify Controller", device_.name());
    expect_success(first[1], "Identify Active Namespace List", device_.name());
    const std::byte* d = controller_page.data();
    info_.vendor_id = load<std::uint16_t>(d, 0);
    info_.subsystem_vendor_id = load<std::uint16_t>(d, 2);
    info_.serial = trimmed_text(d + 4, 20);
    info_.model = trimmed_text(d + 24, 40);
    info_.firmware = trimmed_text(d + 64, 8);
    info_.mdts = load<std::uint8_t>(d, 77);
    info_.controller_id = load<std::uint16_t>(d, 78);
    info_.version = load<std::uint32_t>(d, 80);
    info_.oacs = load<std::uint16_t>(d, 256);
    info_.abort_limit = load<std::uint8_t>(d, 258);
    info_.async_event_limit = load<std::uint8_t>(d, 259);
    info_.log_page_attributes = load<std::uint8_t>(d, 261);
    info_.error_log_entries = load<std::uint8_t>(d, 262);
    info_.max_commands = load<std::uint16_t>(d, 514);
    info_.namespace_count = load<std::uint32_t>(d, 516);
    info_.oncs = load<std::uint16_t>(d, 520);
    info_.volatile_write_cache = (load<std::uint8_t>(d, 525) & 1u) != 0;
    info_.sgl_support = load<std::uint32_t>(d, 536);
    info_.subsystem_nqn = trimmed_text(d + 768, 256);
    // MDTS is in units of the minimum page size (4 KiB here); 0 means no limit, which we cap at
    // 2 MiB so one PRP list page always suffices.
    const std::uint64_t limit =
        info_.mdts == 0 || info_.mdts > 9 ? (2u << 20) : (4096ull << info_.mdts);
    max_transfer_ = static_cast<std::uint32_t>(limit);

    // The descriptor list is mandatory from NVMe 1.3 on; older controllers only have NVM.
    const bool descriptors = info_.version >= 0x00010300;
    const std::vector<std::uint32_t> ids = parse_namespace_list(list_page.data());
    namespaces_.clear();
    const std::size_t per_batch = std::max<std::size_t>(1, admin_->free_slots() / 2);
    for (std::size_t from = 0; from < ids.size(); from += per_batch) {
        const std::size_t count = std::min(per_batch, ids.size() - from);
        std::vector<dma::DmaBuffer> pages;
        std::vector<SubmissionEntry> commands;
        for (std::size_t i = 0; i < count; ++i) {
            pages.push_back(pool_->allocate(4096, 4096));
            commands.push_back(
                identify_command(cns::namespace_, ids[from + i], pages.back().iova()));
            if (descriptors) {
                pages.push_back(pool_->allocate(4096, 4096));
                commands.push_back(identify_command(cns::namespace_descriptors, ids[from + i],
                                                    pages.back().iova()));
            }
        }
        const auto done = admin_all(commands, "Identify Namespace");
        const std::size_t stride = descriptors ? 2 : 1;
        for (std::size_t i = 0; i < count; ++i) {
            const std::uint32_t nsid = ids[from + i];
            expect_success(done[i * stride], "Identify Namespace", device_.name());
            NamespaceInfo ns = decode_namespace(nsid, pages[i * stride].data());
            if (descriptors) {
                const CompletionEntry& entry = done[i * stride + 1];
                if (StatusField{static_cast<std::uint16_t>(entry.status >> 1)}.ok()) {
                    ns.command_set = command_set_of(pages[i * stride + 1].data(), 4096);
                }
            }
            if (ns.size == 0) {
                log_warn("{}: namespace {} reports size 0; ignored", device_.name(), nsid);
                continue;
            }
            namespaces_.push_back(std::move(ns));
        }
    }
}

std::vector<std::uint32_t> Controller::parse_namespace_list(const std::byte* page) const {
    std::vector<std::uint32_t> ids;
    std::uint32_t previous = 0;
    for (std::size_t i = 0; i < 1024; ++i) {
        const auto nsid = load<std::uint32_t>(page, i * 4);
        if (nsid == 0) {
            break;
        }
        // §5.17.2.2: the list is in increasing order; anything else is garbage.
        if (nsid <= previous || nsid == 0xffffffff) {
            log_warn("{}: active namespace list is not increasing at entry {} ({}); truncated",
                     device_.name(), i, nsid);
            break;
        }
        ids.push_back(nsid);
        previous = nsid;
    }
    return ids;
}

std::vector<std::uint32_t> Controller::active_namespaces() {
    auto page = pool_->allocate(4096, 4096);
    admin(identify_command(cns::active_namespaces, 0, page.iova()),
          "Identify Active Namespace List");
    return parse_namespace_list(page.data());
}

NamespaceInfo Controller::identify_namespace(std::uint32_t nsid) {
    auto page = pool_->allocate(4096, 4096);
    admin(identify_command(cns::namespace_, nsid, page.iova()), "Identify Namespace");
    return decode_namespace(nsid, page.data());
}

// NVM Command Set 1.0 §4.1.5.1.
NamespaceInfo Controller::decode_namespace(std::uint32_t nsid, const std::byte* d) const {
    NamespaceInfo ns;
    ns.id = nsid;
    ns.size = load<std::uint64_t>(d, 0);
    ns.capacity = load<std::uint64_t>(d, 8);
    ns.utilization = load<std::uint64_t>(d, 16);
    const unsigned count = load<std::uint8_t>(d, 25) + 1u;  // NLBAF is 0-based
    const std::uint8_t flbas = load<std::uint8_t>(d, 26);
    ns.format_index = (flbas & 0xfu) | ((flbas >> 1) & 0x30u);
    ns.metadata_extended = (flbas & 0x10u) != 0;
    ns.protection = load<std::uint8_t>(d, 29) & 0x7u;
    for (unsigned i = 0; i < count && i < 64; ++i) {
        const auto word = load<std::uint32_t>(d, 128 + 4 * i);
        LbaFormat format;
        format.metadata_size = static_cast<std::uint16_t>(word & 0xffff);
        const unsigned lbads = (word >> 16) & 0xff;
        format.data_size = lbads >= 9 && lbads < 32 ? 1u << lbads : 0;
        format.relative_performance = static_cast<std::uint8_t>((word >> 24) & 3);
        ns.formats.push_back(format);
    }
    if (ns.format_index >= ns.formats.size() || ns.block_size() == 0) {
        throw Error::invalid(fmt::format("identify namespace {}", nsid), device_.name(),
                             fmt::format("the formatted LBA format {} is invalid ({} formats)",
                                         ns.format_index, ns.formats.size()),
                             EIO);
    }
    return ns;
}

}  // namespace ring3::nvme
