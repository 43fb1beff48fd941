// Just enough NVMe to make a controller DMA into memory we choose, through the Device API: an
// admin queue pair and Identify. The real driver is src/drivers/nvme; this is a probe for the
// device layer's guest tests, so it stays small and synchronous.
//
// NVMe Base Specification 2.0: §3.1.3 controller registers (CAP 0x00, CC 0x14, CSTS 0x1c,
// AQA 0x24, ASQ 0x28, ACQ 0x30, doorbells from 0x1000), §3.5.1 controller initialization,
// §4.2 submission queue entry, §4.6 completion queue entry, §5.17 Identify (CNS 01h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/device/device.hpp"
#include "ring3/dma/pool.hpp"

namespace ring3::testing {

class RawNvme {
  public:
    RawNvme(Device& device, dma::DmaPool& pool) : device_(device) {
        bar_ = device.map_region(0);
        regs_ = bar_.mapping.data();
        const std::uint64_t cap = read64(kCap);
        timeout_ = std::chrono::milliseconds(500 * ((cap >> 24) & 0xff));
        doorbell_stride_ = 4u << ((cap >> 32) & 0xf);
        device.set_bus_master(true);

        disable();
        sq_ = pool.allocate(kEntries * 64, 4096);
        cq_ = pool.allocate(kEntries * 16, 4096);
        write32(kAqa, ((kEntries - 1) << 16) | (kEntries - 1));
        write64(kAsq, sq_.iova());
        write64(kAcq, cq_.iova());
        // CC: EN, CSS 0 (NVM), MPS 0 (4 KiB), IOSQES 6 (64 B), IOCQES 4 (16 B).
        write32(kCc, (4u << 20) | (6u << 16) | 1u);
        wait_ready(true);
    }

    ~RawNvme() {
        try {
            disable();
            device_.set_bus_master(false);
        } catch (...) {
        }
    }

    // Identify Controller into the 4 KiB page at `iova`; returns the completion status field
    // (0 on success). Throws when no completion comes within a second.
    std::uint16_t identify_controller(std::uint64_t iova) {
        std::byte* entry = sq_.data() + (sq_tail_ * 64);
        std::memset(entry, 0, 64);
        const std::uint32_t cdw0 = 0x06u | (static_cast<std::uint32_t>(next_cid_) << 16);
        std::memcpy(entry, &cdw0, 4);
        std::memcpy(entry + 24, &iova, 8);  // PRP1; 4 KiB page-aligned, so no PRP2
        const std::uint32_t cns = 1;        // CDW10.CNS = 01h: controller
        std::memcpy(entry + 40, &cns, 4);
        sq_tail_ = (sq_tail_ + 1) % kEntries;
        std::atomic_thread_fence(std::memory_order_release);
        write32(0x1000, sq_tail_);  // SQ0 tail doorbell

        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        for (;;) {
            std::byte* cqe = cq_.data() + cq_head_ * 16;
            std::uint32_t dw3 = 0;
            std::memcpy(&dw3, cqe + 12, 4);
            if (((dw3 >> 16) & 1u) == phase_) {
                std::atomic_thread_fence(std::memory_order_acquire);
                cq_head_ = (cq_head_ + 1) % kEntries;
                if (cq_head_ == 0) {
                    phase_ ^= 1u;
                }
                write32(0x1000 + doorbell_stride_, cq_head_);  // CQ0 head doorbell
                const auto cid = static_cast<std::uint16_t>(dw3 & 0xffff);
                if (cid != next_cid_++) {
                    throw Error::invalid("identify", device_.name(), "completion for another id");
                }
                return static_cast<std::uint16_t>(dw3 >> 17);
            }
            if (std::chrono::steady_clock::now() > deadline) {
                throw Error::invalid("identify", device_.name(), "no completion within 1 s",
                                     ETIMEDOUT);
            }
        }
    }

    static std::string serial(const std::byte* identify) {
        std::string text(reinterpret_cast<const char*>(identify) + 4, 20);  // SN: bytes 23:04
        text.erase(text.find_last_not_of(' ') + 1);
        return text;
    }

    std::uint32_t version() const { return read32(0x08); }

  private:
    static constexpr std::uint64_t kCap = 0x00, kCc = 0x14, kCsts = 0x1c, kAqa = 0x24, kAsq = 0x28,
                                   kAcq = 0x30;
    static constexpr std::uint32_t kEntries = 8;

    void disable() {
        write32(kCc, read32(kCc) & ~1u);
        wait_ready(false);
    }

    void wait_ready(bool ready) {
        const auto deadline = std::chrono::steady_clock::now() + timeout_ + std::chrono::seconds(1);
        while (((read32(kCsts) & 1u) != 0) != ready) {
            if (read32(kCsts) & 2u) {
                throw Error::invalid("enable", device_.name(), "controller fatal status (CSTS.CFS)",
                                     EIO);
            }
            if (std::chrono::steady_clock::now() > deadline) {
                throw Error::invalid("wait for CSTS.RDY", device_.name(), "timed out (CAP.TO)",
                                     ETIMEDOUT);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }

    std::uint32_t read32(std::uint64_t offset) const {
        return *reinterpret_cast<volatile std::uint32_t*>(regs_ + offset);
    }
    std::uint64_t read64(std::uint64_t offset) const {
        return *reinterpret_cast<volatile std::uint64_t*>(regs_ + offset);
    }
    void write32(std::uint64_t offset, std::uint32_t value) {
        *reinterpret_cast<volatile std::uint32_t*>(regs_ + offset) = value;
    }
    void write64(std::uint64_t offset, std::uint64_t value) {
        write32(offset, static_cast<std::uint32_t>(value));
        write32(offset + 4, static_cast<std::uint32_t>(value >> 32));
    }

    Device& device_;
    RegionMapping bar_;
    std::byte* regs_ = nullptr;
    std::chrono::milliseconds timeout_{};
    std::uint32_t doorbell_stride_ = 4;
    dma::DmaBuffer sq_;
    dma::DmaBuffer cq_;
    std::uint32_t sq_tail_ = 0;
    std::uint32_t cq_head_ = 0;
    std::uint32_t phase_ = 1;
    std::uint16_t next_cid_ = 1;
};

}  // namespace ring3::testing
