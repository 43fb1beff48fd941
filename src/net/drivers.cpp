// The registry of NIC drivers: one explicit list (open.hpp says why not self-registration).
// A driver adds its line here and its library to ring3_net_open in CMakeLists.txt, e.g.
//   {"virtio-net", 0x1af4, 0x1041, 0x020000, 0xffffff, &virtio::open_net_port},
#include "ring3/net/open.hpp"

namespace ring3::net {

std::span<const NetDriver> net_drivers() noexcept {
    return {};  // none yet: virtio-net and e1000e are on their way
}

}  // namespace ring3::net
