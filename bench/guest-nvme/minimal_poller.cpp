// A bare NVMe random reader, the yardstick for ring3's driver in bench/guest-nvme: the least a
// poll-mode program must do per I/O through the same Device API (VFIO) and the same device. No
// face, no validation, no timeouts, no recovery: one I/O queue, commands written straight into
// the SQ, one SQ tail doorbell per refilled batch, one CQ head doorbell per reaped batch.
//
//   ring3_nvme_minimal_poller vfio:BDF QD SECONDS
// prints one JSON object: {"iops": ..., "ios": ..., "sq_doorbells": ..., "cq_doorbells": ...}.
//
// NVMe Base 2.0: §3.1.3 registers (CAP 0x00, CC 0x14, CSTS 0x1c, AQA 0x24, ASQ 0x28, ACQ 0x30,
// doorbells from 0x1000), §3.5.1 initialization, §4.2/§4.6 SQE/CQE, §5.4/§5.5 Create I/O CQ/SQ;
// NVM Command Set 1.0 §3.2.4 Read.
#include <fmt/core.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/device/device.hpp"
#include "ring3/dma/pool.hpp"

namespace {

using namespace ring3;

constexpr std::uint32_t kEntries = 256;  // per ring; QD < kEntries

struct Rings {
    dma::DmaBuffer sq, cq;
    std::uint32_t tail = 0, head = 0, phase = 1;
};

class Poller {
  public:
    Poller(Device& device, dma::DmaPool& pool) : bar_(device.map_region(0)) {
        regs_ = bar_.mapping.data();
        stride_ = 4u << ((read64(0x00) >> 32) & 0xf);
        device.set_bus_master(true);
        write32(0x14, read32(0x14) & ~1u);  // CC.EN = 0
        wait_ready(false);
        for (Rings* r : {&admin_, &io_}) {
            r->sq = pool.allocate(kEntries * 64, 4096);
            r->cq = pool.allocate(kEntries * 16, 4096);
        }
        write32(0x24, ((kEntries - 1) << 16) | (kEntries - 1));  // AQA
        write64(0x28, admin_.sq.iova());
        write64(0x30, admin_.cq.iova());
        write32(0x14, (4u << 20) | (6u << 16) | 1u);  // IOCQES 16 B, IOSQES 64 B, EN
        wait_ready(true);
        const std::uint32_t qsize = (kEntries - 1) << 16;
        admin(0x05, io_.cq.iova(), qsize | 1, 1);               // Create I/O CQ 1, PC, no IRQ
        admin(0x01, io_.sq.iova(), qsize | 1, (1u << 16) | 1);  // Create I/O SQ 1 on CQ 1, PC
    }

    // Reads 4 KiB blocks at random LBAs of namespace 1 from `buffers` (QD pages), for `seconds`.
    void run(unsigned qd, double seconds, const dma::DmaBuffer& buffers, std::uint64_t blocks) {
        std::uint64_t state = 0x9e3779b97f4a7c15ull;
        const auto deadline = CycleClock::now() + std::chrono::duration_cast<CycleClock::duration>(
                                                      std::chrono::duration<double>(seconds));
        const auto start = CycleClock::now();
        unsigned in_flight = 0;
        bool issuing = true;
        while (issuing || in_flight != 0) {
            unsigned added = 0;
            while (issuing && in_flight < qd) {
                state = state * 6364136223846793005ull + 1442695040888963407ull;
                const std::uint64_t lba = ((state >> 33) % (blocks / 8)) * 8;
                const auto cid = static_cast<std::uint16_t>(io_.tail);
                put(io_, 0x02, cid, 1, buffers.iova() + (cid % qd) * 4096, lba, 7);
                ++in_flight;
                ++added;
            }
            if (added != 0) {
                std::atomic_thread_fence(std::memory_order_release);
                write32(0x1000 + 2 * stride_, io_.tail);  // SQ1 tail
                ++sq_doorbells_;
            }
            const unsigned reaped = reap(io_, 1);
            in_flight -= reaped;
            ios_ += reaped;
            if (issuing && reaped != 0 && CycleClock::now() >= deadline) {
                issuing = false;
            }
        }
        elapsed_ = std::chrono::duration<double>(CycleClock::now() - start).count();
    }

    std::string report() const {
        return fmt::format(
            R"({{"iops": {:.0f}, "ios": {}, "seconds": {:.3f}, "sq_doorbells": {}, "cq_doorbells": {}}})",
            static_cast<double>(ios_) / elapsed_, ios_, elapsed_, sq_doorbells_, cq_doorbells_);
    }

  private:
    void put(Rings& r, std::uint8_t opcode, std::uint16_t cid, std::uint32_t nsid,
             std::uint64_t prp1, std::uint64_t cdw10_11, std::uint32_t cdw12) {
        std::byte* e = r.sq.data() + r.tail * 64;
        std::memset(e, 0, 64);
        const std::uint32_t cdw0 = opcode | (static_cast<std::uint32_t>(cid) << 16);
        std::memcpy(e, &cdw0, 4);
        std::memcpy(e + 4, &nsid, 4);
        std::memcpy(e + 24, &prp1, 8);
        std::memcpy(e + 40, &cdw10_11, 8);
        std::memcpy(e + 48, &cdw12, 4);
        r.tail = (r.tail + 1) % kEntries;
    }

    // Consumes every completion ready; one CQ head doorbell for the lot. Returns how many.
    unsigned reap(Rings& r, unsigned queue) {
        unsigned n = 0;
        for (;;) {
            const auto* cqe = reinterpret_cast<volatile std::uint32_t*>(r.cq.data() + r.head * 16);
            const std::uint32_t dw3 = cqe[3];
            if (((dw3 >> 16) & 1u) != r.phase) {
                break;
            }
            if ((dw3 >> 17) != 0) {
                throw std::runtime_error(fmt::format("command failed, status {:#x}", dw3 >> 17));
            }
            r.head = (r.head + 1) % kEntries;
            r.phase ^= r.head == 0 ? 1u : 0u;
            ++n;
        }
        if (n != 0) {
            write32(0x1000 + (2 * queue + 1) * stride_, r.head);
            ++cq_doorbells_;
        }
        return n;
    }

    void admin(std::uint8_t opcode, std::uint64_t prp1, std::uint32_t cdw10, std::uint32_t cdw11) {
        put(admin_, opcode, static_cast<std::uint16_t>(admin_.tail), 0, prp1,
            cdw10 | (std::uint64_t{cdw11} << 32), 0);
        std::atomic_thread_fence(std::memory_order_release);
        write32(0x1000, admin_.tail);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (reap(admin_, 0) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                throw std::runtime_error("admin command timed out");
            }
        }
    }

    void wait_ready(bool ready) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (((read32(0x1c) & 1u) != 0) != ready) {
            if (std::chrono::steady_clock::now() > deadline) {
                throw std::runtime_error("CSTS.RDY timed out");
            }
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }

    std::uint32_t read32(std::size_t o) const {
        return *reinterpret_cast<volatile std::uint32_t*>(regs_ + o);
    }
    std::uint64_t read64(std::size_t o) const {
        return read32(o) | (std::uint64_t{read32(o + 4)} << 32);
    }
    void write32(std::size_t o, std::uint32_t v) {
        *reinterpret_cast<volatile std::uint32_t*>(regs_ + o) = v;
    }
    void write64(std::size_t o, std::uint64_t v) {
        write32(o, static_cast<std::uint32_t>(v));
        write32(o + 4, static_cast<std::uint32_t>(v >> 32));
    }

    RegionMapping bar_;
    std::byte* regs_ = nullptr;
    std::uint32_t stride_ = 4;
    Rings admin_, io_;
    std::uint64_t ios_ = 0, sq_doorbells_ = 0, cq_doorbells_ = 0;
    double elapsed_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        fmt::print(stderr, "usage: {} vfio:BDF QD SECONDS BLOCKS_OF_512_BYTES\n", argv[0]);
        return 2;
    }
    try {
        // One CPU for the whole run: cycle counters of two vCPUs of a TCG guest disagree.
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(::sched_getcpu(), &set);
        ::sched_setaffinity(0, sizeof set, &set);
        CycleClock::begin_calibration();
        const unsigned qd = static_cast<unsigned>(std::stoul(argv[2]));
        if (qd == 0 || qd >= kEntries) {
            throw std::runtime_error(fmt::format("QD must be 1 to {}", kEntries - 1));
        }
        auto device = open_device(argv[1]);
        dma::ArenaOptions options;
        options.chunk_size = 2 << 20;
        auto arena = dma::DmaArena::create(options);
        dma::DmaPool pool(*arena, arena->attach(device->iova_space()));
        {
            Poller poller(*device, pool);
            const dma::DmaBuffer buffers = pool.allocate(std::size_t{qd} * 4096, 4096);
            poller.run(qd, std::stod(argv[3]), buffers, std::stoull(argv[4]));
            fmt::print("{}\n", poller.report());
        }
        arena->detach(device->iova_space());
    } catch (const std::exception& e) {
        fmt::print(stderr, "ring3_nvme_minimal_poller: {}\n", e.what());
        return 1;
    }
    return 0;
}
