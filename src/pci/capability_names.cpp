// Names of capability IDs, extended capability IDs, PCIe port types and link speeds, as the
// PCI-SIG assigns them (declared in config_space.hpp).
#include "ring3/pci/config_space.hpp"

#include <fmt/core.h>

#include <cstddef>

namespace ring3::pci {
namespace {

// Names by number, for the ID tables below.
struct NamedId {
    unsigned id;
    const char* name;
};
template <std::size_t N>
const char* find_name(const NamedId (&table)[N], unsigned id) {
    for (const auto& entry : table) {
        if (entry.id == id) {
            return entry.name;
        }
    }
    return nullptr;
}

// Capability IDs: PCI Code and ID Assignment Specification 1.11 §2.
constexpr NamedId kCapabilityNames[] = {
    {0x00, "Null"},
    {0x01, "Power Management"},
    {0x02, "AGP"},
    {0x03, "Vital Product Data"},
    {0x04, "Slot Identification"},
    {0x05, "MSI"},
    {0x06, "CompactPCI Hot Swap"},
    {0x07, "PCI-X"},
    {0x08, "HyperTransport"},
    {0x09, "Vendor Specific"},
    {0x0a, "Debug Port"},
    {0x0b, "CompactPCI Central Resource Control"},
    {0x0c, "PCI Hot-Plug"},
    {0x0d, "Bridge Subsystem Vendor ID"},
    {0x0e, "AGP 8x"},
    {0x0f, "Secure Device"},
    {0x10, "PCI Express"},
    {0x11, "MSI-X"},
    {0x12, "SATA Data/Index Configuration"},
    {0x13, "Advanced Features"},
    {0x14, "Enhanced Allocation"},
    {0x15, "Flattening Portal Bridge"},
};

// Extended Capability IDs: PCI Code and ID Assignment Specification 1.11 §3.
constexpr NamedId kExtendedCapabilityNames[] = {
    {0x0000, "Null"},
    {0x0001, "Advanced Error Reporting"},
    {0x0002, "Virtual Channel"},
    {0x0003, "Device Serial Number"},
    {0x0004, "Power Budgeting"},
    {0x0005, "Root Complex Link Declaration"},
    {0x0006, "Root Complex Internal Link Control"},
    {0x0007, "Root Complex Event Collector Endpoint Association"},
    {0x0008, "Multi-Function Virtual Channel"},
    {0x0009, "Virtual Channel (MFVC present)"},
    {0x000a, "RCRB Header"},
    {0x000b, "Vendor Specific Extended"},
    {0x000c, "Configuration Access Correlation"},
    {0x000d, "Access Control Services"},
    {0x000e, "Alternative Routing-ID Interpretation"},
    {0x000f, "Address Translation Services"},
    {0x0010, "Single Root I/O Virtualization"},
    {0x0011, "Multi-Root I/O Virtualization"},
    {0x0012, "Multicast"},
    {0x0013, "Page Request Interface"},
    {0x0014, "Reserved for AMD"},
    {0x0015, "Resizable BAR"},
    {0x0016, "Dynamic Power Allocation"},
    {0x0017, "TPH Requester"},
    {0x0018, "Latency Tolerance Reporting"},
    {0x0019, "Secondary PCI Express"},
    {0x001a, "Protocol Multiplexing"},
    {0x001b, "Process Address Space ID"},
    {0x001c, "LN Requester"},
    {0x001d, "Downstream Port Containment"},
    {0x001e, "L1 PM Substates"},
    {0x001f, "Precision Time Measurement"},
    {0x0020, "PCI Express over M-PHY"},
    {0x0021, "FRS Queueing"},
    {0x0022, "Readiness Time Reporting"},
    {0x0023, "Designated Vendor-Specific"},
    {0x0024, "VF Resizable BAR"},
    {0x0025, "Data Link Feature"},
    {0x0026, "Physical Layer 16.0 GT/s"},
    {0x0027, "Lane Margining at the Receiver"},
    {0x0028, "Hierarchy ID"},
    {0x0029, "Native PCIe Enclosure Management"},
    {0x002a, "Physical Layer 32.0 GT/s"},
    {0x002b, "Alternate Protocol"},
    {0x002c, "System Firmware Intermediary"},
};

// Device/Port Type, PCIe Base 4.0 §7.5.3.2 (PCI Express Capabilities Register, bits 7:4).
constexpr NamedId kPortTypeNames[] = {
    {0x0, "Endpoint"},
    {0x1, "Legacy Endpoint"},
    {0x4, "Root Port"},
    {0x5, "Upstream Port"},
    {0x6, "Downstream Port"},
    {0x7, "PCIe to PCI/PCI-X Bridge"},
    {0x8, "PCI/PCI-X to PCIe Bridge"},
    {0x9, "Root Complex Integrated Endpoint"},
    {0xa, "Root Complex Event Collector"},
};

// Link speeds, PCIe Base 4.0 §7.5.3.6 (Max Link Speed: a position in the Supported Link Speeds
// Vector): 1 2.5 GT/s, 2 5.0, 3 8.0, 4 16.0; PCIe 5.0 and 6.0 add 5 (32.0) and 6 (64.0).
constexpr NamedId kLinkSpeedNames[] = {
    {1, "2.5GT/s"}, {2, "5GT/s"}, {3, "8GT/s"}, {4, "16GT/s"}, {5, "32GT/s"}, {6, "64GT/s"},
};

}  // namespace

std::string capability_name(std::uint16_t id) {
    if (const char* name = find_name(kCapabilityNames, id)) {
        return name;
    }
    return fmt::format("unknown capability {:#04x}", id);
}

std::string extended_capability_name(std::uint16_t id) {
    if (const char* name = find_name(kExtendedCapabilityNames, id)) {
        return name;
    }
    return fmt::format("unknown extended capability {:#06x}", id);
}

std::string pcie_port_type_name(std::uint8_t port_type) {
    if (const char* name = find_name(kPortTypeNames, port_type)) {
        return name;
    }
    return fmt::format("reserved port type {}", port_type);
}

std::string link_speed_name(unsigned speed) {
    if (const char* name = find_name(kLinkSpeedNames, speed)) {
        return name;
    }
    return fmt::format("unknown speed {}", speed);
}

}  // namespace ring3::pci
