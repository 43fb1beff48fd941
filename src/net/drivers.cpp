// The registry of NIC drivers: one explicit list (open.hpp says why not self-registration).
// A driver adds its line here and its library to ring3_net_open in CMakeLists.txt.
#include "ring3/e1000e/port.hpp"
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
    // 82574 datasheet §1.4: the 82574L; QEMU's `e1000e` model.
    {"e1000e", e1000e::kVendorIntel, e1000e::kDevice82574L, kNetworkClass, kBaseClassMask,
     &e1000e::open_net},
    // QEMU's `e1000` (82540EM), an older design with another register layout: matched only to
    // be refused with a reason naming the 82574L, rather than "no network driver".
    {"e1000 (refused)", e1000e::kVendorIntel, e1000e::kDevice82540EM, kNetworkClass, kBaseClassMask,
     &e1000e::refuse_82540},
};

}  // namespace

std::span<const NetDriver> net_drivers() noexcept {
    return kDrivers;
}

}  // namespace ring3::net
