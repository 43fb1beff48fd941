// libFuzzer target for the config-space decoder (STYLE.md §8: config space is hostile input).
// Any length of input is a config space view. decode_header may reject it with ring3::Error;
// the walks and describe must never throw, must stay in bounds (ASan), and every capability they
// return must lie where a capability can lie. Anything else aborts: that is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <variant>

#include "ring3/core/error.hpp"
#include "ring3/pci/config_space.hpp"

namespace {

using namespace ring3::pci;

[[noreturn]] void finding(const char* what, std::size_t offset) {
    std::fprintf(stderr, "config_space_fuzz: %s (offset %#zx)\n", what, offset);
    std::abort();
}

void check_walk(const CapabilityWalk& walk, const ConfigView& view, bool extended) {
    const std::size_t start = extended ? 0x100 : kConfigHeaderSize;
    const std::size_t end = extended ? kConfigExtendedSize : kConfigConventionalSize;
    const std::size_t most = (end - start) / 4;  // one per dword, visited once
    if (walk.capabilities.size() > most) {
        finding("more capabilities than dwords", walk.capabilities.size());
    }
    for (const Capability& capability : walk.capabilities) {
        if (capability.offset < start || capability.offset >= end ||
            capability.offset >= view.size() || capability.offset % 4 != 0) {
            finding("capability outside its space or unaligned", capability.offset);
        }
        if (capability.extended != extended) {
            finding("capability in the wrong list", capability.offset);
        }
        // A decoded standard capability lies whole inside the view and the first 256 bytes
        // (sizes: PCI PM 1.2 §3.2, PCI 3.0 §6.8.1/§6.8.2, PCIe 4.0 §7.5.3 up to Link Status).
        const std::size_t limit = std::min(view.size(), kConfigConventionalSize);
        std::size_t length = 2;
        if (std::holds_alternative<PowerManagementInfo>(capability.detail)) {
            length = 8;
        } else if (const auto* msi = std::get_if<MsiInfo>(&capability.detail)) {
            length = (msi->address_64bit ? 14 : 10) + (msi->per_vector_masking ? 10 : 0);
        } else if (std::holds_alternative<MsixInfo>(capability.detail)) {
            length = 12;
        } else if (std::holds_alternative<PcieInfo>(capability.detail)) {
            length = 0x14;
        } else if (const auto* vendor = std::get_if<VendorSpecificInfo>(&capability.detail)) {
            length = vendor->length;
        }
        if (!extended && capability.offset + length > limit) {
            finding("capability runs past the view or the standard space", capability.offset);
        }
        if (describe(capability).empty()) {
            finding("empty description", capability.offset);
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const ConfigView view(std::span<const std::uint8_t>(data, size));
    try {
        const Header header = decode_header(view);
        if (header.header_layout > 1 || header.bars.size() > 6 ||
            (header.capabilities_pointer & 0x3) != 0) {
            finding("header out of its ranges", header.header_layout);
        }
    } catch (const ring3::Error&) {
        // A rejected header is a result, not a finding.
    }
    try {
        const CapabilityWalk standard = walk_capabilities(view);
        check_walk(standard, view, false);
        const CapabilityWalk extended = walk_extended_capabilities(view);
        check_walk(extended, view, true);
    } catch (const ring3::Error& e) {
        std::fprintf(stderr, "config_space_fuzz: a walk threw: %s\n", e.what());
        std::abort();
    }
    return 0;
}
