// A NetPort over a Linux TAP device (/dev/net/tun, IFF_TAP | IFF_NO_PI): the kernel's network
// stack as the peer, for tests and demos without a NIC.
//
// Each queue pair is one file descriptor (IFF_MULTI_QUEUE when more than one is asked for),
// non-blocking: rx_burst() read()s frames into pool buffers until EAGAIN, tx_burst() write()s
// them and gives each buffer back at once (the kernel copied it). So unlike a PCI NIC, every
// frame costs a system call, in every mode; wait() is ppoll(2) on the fd (poll mode: with a zero
// timeout, in a loop). There are no rings: `depth` only sizes the queue's buffer pool.
//
// The TAP is opened if it exists (persistent, e.g. made by `ip tuntap` or `tunctl`) or created;
// a TAP this port created disappears when the port is closed. The port never changes the
// interface's state (up/down, addresses): link() reports it. Needs CAP_NET_ADMIN, or a
// persistent TAP owned by the user.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ring3/net/net_port.hpp"

namespace ring3::net {

struct TapOptions {
    unsigned queues = 1;
    std::string tun_path = "/dev/net/tun";  // the clone device (tests point it elsewhere)
};

// Throws ring3::Error naming the interface (EINVAL for a bad name, EPERM without privileges,
// with what to do about it).
std::unique_ptr<NetPort> open_tap_port(std::string_view name, const TapOptions& options = {});

}  // namespace ring3::net
