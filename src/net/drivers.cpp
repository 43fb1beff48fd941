// The registry of NIC drivers: one explicit list (open.hpp says why not self-registration).
// A driver adds its line here and its library to ring3_net_open in CMakeLists.txt.
#include "ring3/net/open.hpp"
#include "ring3/virtio/net.hpp"

namespace ring3::net {
namespace {

// PCI Code and ID Assignment Specification §1.3: base class 02h, network controllers.
constexpr std::uint32_t kNetworkClass = 0x020000;
constexpr std::uint32_t kBaseClassMask = 0xff0000;

constexpr NetDriver kDrivers[] = {
    // VIRTIO 1.2 §4.1.2: the modern id, and the transitional one (driven through its modern
    // interface; a legacy-only device is refused with the reason).
    {"virtio-net", virtio::kVendorId, virtio::kNetModernDeviceId, kNetworkClass, kBaseClassMask,
     &virtio::open_net},
    {"virtio-net", virtio::kVendorId, virtio::kNetTransitionalDeviceId, kNetworkClass,
     kBaseClassMask, &virtio::open_net},
};

}  // namespace

std::span<const NetDriver> net_drivers() noexcept {
    return kDrivers;
}

}  // namespace ring3::net
