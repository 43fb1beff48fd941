// libFuzzer target for the server side of vfio-user (src/emu/server.cpp on src/vfio_user): the
// input is a byte stream as a client might send it, served by a Server carrying the emulated NVMe
// controller. Every message is either answered (a reply or an error reply) or ends the connection;
// the server must come back for the next client. A crash, a hang or an out-of-bounds access (under
// ASan) is a finding. DMA_MAP needs an fd, which no input carries, so DMA memory stays unmapped
// and the controller's DMA attempts are refused by the function's bounds checks.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "ring3/core/unique_fd.hpp"
#include "ring3/emu/nvme.hpp"
#include "ring3/emu/server.hpp"

namespace {

struct Rig {
    std::string path;
    ring3::emu::PciFunction function{"fuzz-nvme"};
    std::unique_ptr<ring3::emu::NvmeController> nvme;
    std::unique_ptr<ring3::emu::Server> server;

    Rig() : path("/tmp/ring3-fuzz-vfio-user-" + std::to_string(::getpid()) + ".sock") {
        ring3::emu::NvmeOptions options;
        options.size = 1u << 20;
        options.queues = 2;
        nvme = std::make_unique<ring3::emu::NvmeController>(function, options);
        ring3::emu::Server::Options server_options;
        server_options.once = true;
        server = std::make_unique<ring3::emu::Server>(path, function, server_options);
    }
};

Rig& rig() {
    static Rig* instance = new Rig();  // lives as long as the process (the poller thread too)
    return *instance;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Rig& r = rig();
    ring3::UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, r.path.data(), r.path.size());
    if (!client ||
        ::connect(client.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        std::abort();
    }
    // Inputs are small (max_len) and fit in the socket buffer; replies are drained by a thread so
    // that a big REGION_READ reply cannot block the server.
    if (size != 0 && ::write(client.get(), data, size) != static_cast<ssize_t>(size)) {
        std::abort();
    }
    ::shutdown(client.get(), SHUT_WR);
    std::thread drain([fd = client.get()] {
        char sink[65536];
        while (::read(fd, sink, sizeof sink) > 0) {
        }
    });
    r.server->run();  // serves this one connection (Options::once)
    ::shutdown(client.get(), SHUT_RDWR);
    drain.join();
    return 0;
}
