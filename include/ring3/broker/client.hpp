// The client side of ring3d (protocol.hpp): claiming a device and asking for the inventory. A
// claim lives as long as its connection: the `lease` socket a claim returns is kept open by
// whoever uses the device (open_device("ring3d:BDF") keeps it inside the Device), and closing it,
// or dying, gives the device back to ring3d, which quiesces and resets it.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "ring3/broker/protocol.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/pci/address.hpp"

namespace ring3::broker {

struct Claim {
    UniqueFd container;  // the VFIO container, its IOMMU set up, the device's group attached
    UniqueFd device;     // the VFIO device
    UniqueFd lease;      // the connection the claim lives on
};

// Gives a claimed device back on its lease and waits (up to `timeout`) for ring3d's answer,
// which comes once the device is quiesced and reset: a claim made after this returns finds the
// device free. Errors are ignored: closing the lease gives the device back in any case.
void release(int lease, const pci::Address& device,
             std::chrono::milliseconds timeout = std::chrono::seconds(10)) noexcept;

// Whether ring3d revoked the claim living on `lease` (a {"event":"revoked"} message waits on
// it): its reason, or nothing. Does not block and leaves the message in place.
std::optional<std::string> revoked(int lease);

class Client {
  public:
    // `socket`: the server's path (empty: $RING3D_SOCKET, else /run/ring3/ring3d.sock).
    explicit Client(std::string_view socket = {}) : path_(socket_path(socket)) {}

    // Claims `device`. A driver ring3d started ($RING3D_FD set) claims over the connection it
    // inherited, once. Throws ring3::Error with ring3d's own reason and errno when refused
    // (EACCES: no policy rule lets this user; EBUSY: claimed by someone else; ENODEV: not
    // managed), or when ring3d cannot be reached.
    Claim claim(const pci::Address& device) const;
    // Sends one request on a connection of its own and returns the reply's JSON text (for list
    // and status). Throws ring3::Error when ring3d answers with an error.
    std::string call(const Request& request) const;

    const std::string& path() const noexcept { return path_; }

  private:
    std::string path_;
};

}  // namespace ring3::broker
