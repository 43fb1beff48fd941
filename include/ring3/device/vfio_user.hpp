// The vfio-user backend: a PCI device served by another process over a Unix socket (the client
// side of QEMU's docs/interop/vfio-user.rst; the protocol is in ring3/vfio_user/protocol.hpp).
//
// The DMA arena's chunks are given to the server with DMA_MAP and their memfd, at IOVA = the
// chunk's own virtual address; regions the server lets us map (sparse-mmap areas such as NVMe's
// doorbells) are mapped from the fd it sends, the rest goes through REGION_READ/WRITE messages;
// interrupts are eventfds as with VFIO. Drivers see a Device and run unchanged.
//
// When the server goes away, every later message fails with an error naming the socket, and
// lost() says so, so a driver fails its in-flight requests with that reason. With `reconnect`, a
// failed message first re-attaches to a server restarted at the same path (within
// `reconnect_timeout`): the arena is mapped again, interrupts re-installed with the same eventfds,
// and mapped areas replaced in place by the new server's, so the driver's reset path resumes.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "ring3/device/device.hpp"

namespace ring3::vfio_user {

struct ClientOptions {
    bool reconnect = false;
    std::chrono::milliseconds reconnect_timeout{10000};
};

// Connects to the server at `socket_path` and negotiates the protocol. Throws ring3::Error naming
// the path when there is no server, it speaks another major version, or it is not a PCI device.
std::unique_ptr<Device> open(const std::string& socket_path, const ClientOptions& options = {});

}  // namespace ring3::vfio_user
