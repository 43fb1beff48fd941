// A complete driver for QEMU's `edu` teaching device (PCI 1234:11e8), on ring3's public API: the
// code docs/first-driver.md walks through. Register facts from QEMU's docs/specs/edu.rst.
//
//   ring3-edu vfio:0000:00:03.0 [FACTORIALS [DMA_ROUND_TRIPS]]
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ring3/core/error.hpp>
#include <ring3/device/device.hpp>
#include <ring3/device/register_window.hpp>
#include <ring3/dma/arena.hpp>
#include <ring3/mmio/register.hpp>
#include <string>
#include <string_view>

namespace edu {
using ring3::mmio::Register;
// BAR 0, 1 MiB. Below 0x80 only 32-bit accesses work; above, 32- or 64-bit.
struct Ident : Register<0x00, std::uint32_t> {};      // 0xRRrr00ed: major, minor, magic
struct Liveness : Register<0x04, std::uint32_t> {};   // reads back the bitwise NOT of a write
struct Factorial : Register<0x08, std::uint32_t> {};  // write n, read n! (mod 2^32)
struct Status : Register<0x20, std::uint32_t> {
    using Computing = Field<0, 0>;       // set while the factorial runs
    using IrqOnFactorial = Field<7, 7>;  // raise interrupt 0x001 when it is done
};
struct IrqStatus : Register<0x24, std::uint32_t> {};  // causes raised, ORed together
struct IrqAck : Register<0x64, std::uint32_t> {};     // write the causes handled
struct DmaSource : Register<0x80, std::uint64_t> {};
struct DmaDest : Register<0x88, std::uint64_t> {};
struct DmaCount : Register<0x90, std::uint64_t> {};
struct DmaCommand : Register<0x98, std::uint64_t> {
    using Start = Field<0, 0>;
    using ToRam = Field<1, 1>;      // 0: RAM -> device buffer, 1: device buffer -> RAM
    using IrqOnDone = Field<2, 2>;  // raise interrupt 0x100 when the transfer is done
};
constexpr std::uint64_t kBuffer = 0x40000, kBufferSize = 4096;  // the device's own memory
// One byte short of the buffer: QEMU up to 7.2 refuses a transfer that ends at its last byte (an
// off-by-one in its bounds check, QEMU issue 1254) and stops the machine with a hardware error.
constexpr std::uint64_t kTransfer = kBufferSize - 1;
constexpr std::uint64_t kDmaLimit = std::uint64_t{1} << 28;  // its default 28-bit DMA mask
}  // namespace edu

int main(int argc, char** argv) try {
    if (argc < 2 || argc > 4 || std::string(argv[1]) == "--help") {
        std::fprintf(stderr, "usage: %s DEVICE [FACTORIALS [DMA_ROUND_TRIPS]]\n", argv[0]);
        return 2;
    }
    auto count = [&](int i, const char* what) {  // a count of 0..1000000, or a clear error
        int n = 10;
        if (argc > i) {
            const std::string_view text(argv[i]);
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
            if (ec != std::errc() || end != text.data() + text.size() || n < 0 || n > 1000000)
                throw ring3::Error::invalid(
                    "parse", what, "'" + std::string(text) + "' is not a count of 0..1000000");
        }
        return n;
    };
    const int factorials = count(2, "FACTORIALS"), round_trips = count(3, "DMA_ROUND_TRIPS");

    auto device = ring3::open_device(argv[1]);  // "vfio:BDF", "uio:BDF" or "ring3d:BDF"
    if (device->vendor_id() != 0x1234 || device->device_id() != 0x11e8)
        throw ring3::Error::invalid("drive", device->name(), "not an edu device (1234:11e8)");
    ring3::RegisterWindows windows(*device);
    auto regs = windows.open(0, 0, 0x41000);  // registers and the device buffer

    // Liveness: the device answers with the complement of what it was given.
    const std::uint32_t ident = regs->read<edu::Ident>().raw();
    regs->write_raw<edu::Liveness>(0x12345678);
    if ((ident & 0xff) != 0xed || regs->read<edu::Liveness>().raw() != ~0x12345678u)
        throw ring3::Error::invalid("check", device->name(), "the device is not alive");
    std::printf("edu %u.%u is alive\n", ident >> 24, (ident >> 16) & 0xff);

    // One interrupt: MSI where the backend offers it, else the INTx line.
    const bool msi = device->irq_count(ring3::IrqKind::msi) > 0;
    auto irqs = device->enable_irqs(msi ? ring3::IrqKind::msi : ring3::IrqKind::intx, 1);
    device->set_bus_master(true);  // DMA and MSI are memory writes by the device
    auto wait_irq = [&](std::uint32_t cause) {
        if (irqs[0].wait(std::chrono::seconds(5)) == 0)
            throw ring3::Error::invalid("wait for", device->name(), "no interrupt within 5 s");
        const std::uint32_t raised = regs->read<edu::IrqStatus>().raw();
        regs->write_raw<edu::IrqAck>(raised);  // lowers the line / allows the next MSI
        if (!msi)
            device->unmask_intx();
        irqs[0].rearm();
        if (raised != cause)
            throw ring3::Error::invalid("interrupt of", device->name(),
                                        "cause " + std::to_string(raised));
    };

    // Factorials, each completion signalled by interrupt 0x001.
    regs->write(ring3::mmio::Value<edu::Status>().set<edu::Status::IrqOnFactorial>(1));
    for (int i = 0; i < factorials; ++i) {
        const std::uint32_t n = static_cast<std::uint32_t>(i % 13);
        regs->write_raw<edu::Factorial>(n);
        wait_irq(0x001);
        std::uint32_t expected = 1;
        for (std::uint32_t k = 2; k <= n; ++k)
            expected *= k;
        if (regs->read<edu::Factorial>().raw() != expected)
            throw ring3::Error::invalid("factorial on", device->name(), std::to_string(n) + "!");
    }
    std::printf("factorials: %d, each with its interrupt\n", factorials);

    // DMA: RAM -> device buffer -> RAM, through pinned memory the device sees at `iova`.
    auto arena = ring3::dma::DmaArena::create({.chunk_size = 2 << 20, .max_size = 2 << 20});
    arena->attach(device->iova_space());
    auto* out = arena->grow().cpu;
    auto* back = out + edu::kBufferSize;
    if (arena->iova(out) + 2 * edu::kBufferSize > edu::kDmaLimit)
        throw ring3::Error::invalid("DMA with", device->name(), "memory above its 28-bit mask");
    auto transfer = [&](std::uint64_t from, std::uint64_t to, bool to_ram) {
        regs->write_raw<edu::DmaSource>(from);
        regs->write_raw<edu::DmaDest>(to);
        regs->write_raw<edu::DmaCount>(edu::kTransfer);
        regs->write(ring3::mmio::Value<edu::DmaCommand>()
                        .set<edu::DmaCommand::Start>(1)
                        .set<edu::DmaCommand::ToRam>(to_ram)
                        .set<edu::DmaCommand::IrqOnDone>(1));
        wait_irq(0x100);
    };
    for (int i = 0; i < round_trips; ++i) {
        for (std::size_t b = 0; b < edu::kTransfer; ++b)
            out[b] = static_cast<std::byte>((b * 7 + static_cast<std::size_t>(i)) & 0xff);
        std::memset(back, 0, edu::kTransfer);
        transfer(arena->iova(out), edu::kBuffer, false);
        transfer(edu::kBuffer, arena->iova(back), true);
        if (std::memcmp(out, back, edu::kTransfer) != 0)
            throw ring3::Error::invalid("DMA on", device->name(), "round trip changed the data");
    }
    std::printf("DMA round trips: %d of %llu bytes, verified\n", round_trips,
                static_cast<unsigned long long>(edu::kTransfer));
    device->set_bus_master(false);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ring3-edu: %s\n", e.what());
    return 1;
}
