// libFuzzer target for the server side of vfio-user (src/emu/server.cpp over
// src/vfio_user/protocol.cpp): the input is a byte stream as a client might send it, served by an
// emu::Server over a socketpair. The function behind it is a small deterministic model (no
// threads): BAR0 with trapped registers and an mmap-able page, MSI-X in BAR2, a PCIe capability.
// Every command must get a reply or close the connection; a crash, a hang or an out-of-bounds
// access (ASan) is a finding. Replies are drained and checked to be replies to commands.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/emu/server.hpp"

namespace {

using namespace ring3;

class Registers final : public emu::DeviceModel {
  public:
    explicit Registers(emu::PciFunction& function) {
        emu::ConfigSpace& config = function.config();
        config.set_identity(0x1b36, 0x0010, 0x010802);
        config.add_bar(0, 0x4000, true);
        config.add_bar(2, 0x1000, false);
        config.add_msix(4, 2, 0, 0x800);
        config.add_pcie_endpoint();
        function.set_bar_handlers(
            0,
            [this](std::uint64_t offset, unsigned width) {
                std::uint64_t value = 0;
                if (offset + width <= sizeof regs_) {
                    std::memcpy(&value, regs_ + offset, width);
                }
                return value;
            },
            [this](std::uint64_t offset, unsigned width, std::uint64_t value) {
                if (offset + width <= sizeof regs_) {
                    std::memcpy(regs_ + offset, &value, width);
                }
            });
        function.add_memory_area(0, 0x1000, 0x1000, true);
        function.set_model(this);
    }
    void reset() override { std::memset(regs_, 0, sizeof regs_); }

  private:
    std::uint8_t regs_[0x100] = {};
};

struct Fixture {
    Fixture() : function("fuzz"), model(function) {
        emu::Server::Options options;
        options.limits.max_data_xfer_size = 4096;
        server = std::make_unique<emu::Server>(
            "/tmp/ring3-emu-fuzz-" + std::to_string(::getpid()) + ".sock", function, options);
    }
    emu::PciFunction function;
    Registers model;
    std::unique_ptr<emu::Server> server;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static Fixture fixture;
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        std::abort();
    }
    UniqueFd client(pair[1]);
    // The inputs are small (max_len) and fit in the socket buffer at once; the replies may not,
    // so the server runs in its own thread while this one drains them.
    if (size != 0 && ::write(client.get(), data, size) != static_cast<ssize_t>(size)) {
        std::abort();
    }
    ::shutdown(client.get(), SHUT_WR);
    std::thread server([&] { fixture.server->serve_client(UniqueFd(pair[0])); });
    vfio_user::Limits limits;
    limits.max_msg_fds = 253;
    vfio_user::Channel channel(std::move(client), "fuzz", limits);
    for (;;) {
        std::optional<vfio_user::Message> reply;
        try {
            reply = channel.receive();
        } catch (const Error& e) {
            // A server that closes with input unread makes AF_UNIX reset the connection; its
            // own replies are otherwise always well-formed.
            if (e.errnum() != ECONNRESET) {
                std::abort();
            }
            break;
        }
        if (!reply) {
            break;
        }
        if (!reply->is_reply()) {
            std::abort();
        }
    }
    server.join();
    {
        auto lock = fixture.function.lock();
        if (fixture.function.dma_mapping_count() != 0) {
            std::abort();  // a client that left keeps nothing mapped
        }
    }
    return 0;
}
