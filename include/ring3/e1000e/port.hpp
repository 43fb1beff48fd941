// ring3's Intel 82574L (QEMU `e1000e`) driver behind the generic net::NetPort face: bring-up as a
// steppable state machine (Initializer), the legacy-descriptor receive and transmit rings
// (RxRing, TxRing: no system call, no allocation, no lock, device data validated), and the port
// (Port) with one queue pair, MSI-X routed through IVAR (MSI or INTx when MSI-X is absent),
// interrupt throttling, link status and the read-on-clear statistics accumulated.
// The 82574 has two queue pairs; ring3 uses queue 0 (receive-side scaling is not implemented).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ring3/device/device.hpp"
#include "ring3/device/register_window.hpp"
#include "ring3/device/resources.hpp"
#include "ring3/dma/arena.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/e1000e/spec.hpp"
#include "ring3/mmio/register.hpp"
#include "ring3/net/net_port.hpp"
#include "ring3/net/open.hpp"

namespace ring3::e1000e {

struct PortOptions {
    irq::WaitMode mode = irq::WaitMode::poll;
    std::uint32_t ring_size = 1024;  // descriptors per ring (a multiple of 8, <= kMaxRingSize)
    // Interrupt throttling (§7.4.4, ITR/EITR): the least time between two interrupts of a
    // vector, rounded down to 256 ns units; 0 turns throttling off.
    std::chrono::nanoseconds interrupt_interval{0};
    // Bring-up limits (§4.6.2: reset completes within 1 ms on hardware; QEMU at once).
    std::chrono::milliseconds reset_timeout{100};
    std::chrono::milliseconds eeprom_timeout{100};
    // How long open waits for the link (auto-negotiation, §8.4); the port opens either way
    // and link() reports the state.
    std::chrono::milliseconds link_timeout{3000};
    dma::ArenaOptions arena;
    // Between two steps of the bring-up (the unit tests pass one that does nothing).
    std::function<void()> pause;
};

// Bring-up (§4.6, "Software Initialization Sequence") as a state machine over the register
// window: step(now) does a few register accesses and says where it is; waits are bounded by
// deadlines computed from `now`, so a test steps it without sleeping.
class Initializer {
  public:
    enum class State {
        start,        // mask interrupts, issue a device reset
        resetting,    // wait for CTRL.RST to clear
        reading_mac,  // RAL0/RAH0, or the EEPROM through EERD
        eeprom,       // an EERD read in flight
        link,         // set link up, driver loaded
        link_wait,    // wait for STATUS.LU (bounded; not an error when it stays down)
        ready,
        failed,
    };

    Initializer(mmio::RegisterIo& regs, const PortOptions& options) noexcept
        : regs_(regs), options_(options) {}
    State step(std::chrono::steady_clock::time_point now);
    State state() const noexcept { return state_; }
    bool done() const noexcept { return state_ == State::ready || state_ == State::failed; }
    const std::string& error() const noexcept { return error_; }  // why it failed
    int error_code() const noexcept { return error_code_; }
    const net::MacAddress& mac() const noexcept { return mac_; }
    bool mac_from_eeprom() const noexcept { return mac_from_eeprom_; }

  private:
    void fail(std::string why, int code);

    mmio::RegisterIo& regs_;
    PortOptions options_;
    State state_ = State::start;
    std::chrono::steady_clock::time_point deadline_{};
    net::MacAddress mac_;
    bool mac_from_eeprom_ = false;
    unsigned eeprom_word_ = 0;
    std::string error_;
    int error_code_ = 0;
};
const char* to_string(Initializer::State state) noexcept;

// Device garbage a ring saw, counted.
struct RingCounters {
    std::uint64_t bad_lengths = 0;    // rx: 0 or beyond the buffer, or beyond max_frame
    std::uint64_t split_frames = 0;   // rx: a frame without EOP (ring3 posts whole-frame buffers)
    std::uint64_t frame_errors = 0;   // rx: the device flagged the frame (RDESC.ERRORS)
    std::uint64_t notifications = 0;  // tail register writes
};

// §7.1: the receive ring of legacy descriptors. The driver owns slots [next, tail) as "posted";
// RDT = tail tells the device where its buffers end (§7.1.3: the ring is empty of buffers when
// RDH == RDT, so at most size - 1 are posted).
class RxRing {
  public:
    RxRing(dma::DmaPool& pool, std::uint32_t size, mmio::RegisterIo& regs);
    std::uint32_t size() const noexcept { return size_; }
    std::uint64_t iova() const noexcept { return ring_.iova(); }
    std::uint32_t bytes() const noexcept { return size_ * sizeof(RxDescriptor); }

    // Posts buffers from `buffers` until `limit` are posted or the pool is empty; one RDT write.
    unsigned refill(dma::BufferPool& buffers, unsigned limit) noexcept;
    // Takes up to `n` received frames into packets (validated; broken ones counted, their
    // buffers given back to `buffers`). Returns how many it filled.
    unsigned poll(net::Packet* packets, unsigned n, std::uint32_t max_frame,
                  dma::BufferPool& buffers, net::QueueStats& stats) noexcept;
    bool ready() const noexcept;  // the next descriptor is done
    unsigned posted() const noexcept { return posted_; }
    // Gives every posted buffer back (the device was reset).
    void release(dma::BufferPool& buffers) noexcept;
    const RingCounters& counters() const noexcept { return counters_; }

  private:
    void report(const char* what, std::uint64_t count, std::uint64_t value) const noexcept;

    std::uint32_t size_;
    dma::DmaBuffer ring_;
    RxDescriptor* desc_;
    mmio::RegisterIo& regs_;
    std::vector<dma::Buffer> buffers_;  // by slot
    std::uint32_t next_ = 0;            // the oldest posted slot
    std::uint32_t tail_ = 0;            // RDT: one past the newest posted slot
    unsigned posted_ = 0;
    bool in_frame_ = false;  // skipping the rest of a frame that came without EOP
    RingCounters counters_;
};

// §7.2: the transmit ring of legacy descriptors. tx_burst fills descriptors and writes TDT once
// (QEMU's model sends the whole ring on that one write). Report Status is asked on the last
// descriptor of each burst (and every kReportEvery), and reclaim() frees everything up to a
// descriptor whose DD is set: the device completes descriptors in order (§7.2.3).
class TxRing {
  public:
    static constexpr std::uint32_t kReportEvery = 64;

    TxRing(dma::DmaPool& pool, std::uint32_t size, mmio::RegisterIo& regs);
    std::uint32_t size() const noexcept { return size_; }
    std::uint64_t iova() const noexcept { return ring_.iova(); }
    std::uint32_t bytes() const noexcept { return size_ * sizeof(TxDescriptor); }

    unsigned free_slots() const noexcept { return size_ - 1 - in_flight_; }
    unsigned in_flight() const noexcept { return in_flight_; }
    // Fills the next descriptor (the caller checked free_slots()).
    void add(const dma::Buffer& buffer, std::uint64_t iova, std::uint16_t length) noexcept;
    // Ends a burst: Report Status on its last descriptor, one TDT write. False if nothing added.
    bool publish() noexcept;
    // Frees the buffers of sent frames into `buffers`; returns how many.
    unsigned reclaim(dma::BufferPool& buffers) noexcept;
    // Gives every in-flight buffer back (the device was reset).
    void release(dma::BufferPool& buffers) noexcept;
    const RingCounters& counters() const noexcept { return counters_; }

  private:
    std::uint32_t size_;
    dma::DmaBuffer ring_;
    TxDescriptor* desc_;
    mmio::RegisterIo& regs_;
    std::vector<dma::Buffer> buffers_;  // by slot
    std::vector<std::uint8_t> report_;  // by slot: RS was asked there (our copy, not the ring's)
    std::uint32_t clean_ = 0;           // the oldest in-flight slot
    std::uint32_t tail_ = 0;            // TDT: one past the newest slot handed over
    std::uint32_t next_ = 0;            // the next slot add() fills
    std::uint32_t since_report_ = 0;
    unsigned in_flight_ = 0;
    RingCounters counters_;
};

// The 82574's statistics (§10.2.7), accumulated across reads (they clear when read).
struct HardwareStats {
    std::uint64_t good_rx_packets = 0;   // GPRC
    std::uint64_t good_tx_packets = 0;   // GPTC
    std::uint64_t good_rx_octets = 0;    // GORC
    std::uint64_t good_tx_octets = 0;    // GOTC
    std::uint64_t total_rx_packets = 0;  // TPR
    std::uint64_t total_tx_packets = 0;  // TPT
    std::uint64_t missed = 0;            // MPC
    std::uint64_t no_buffer = 0;         // RNBC
    std::uint64_t crc_errors = 0;        // CRCERRS
    std::uint64_t rx_errors = 0;         // RXERRC
    std::uint64_t undersize = 0;         // RUC
    std::uint64_t oversize = 0;          // ROC
    std::uint64_t broadcast_rx = 0;      // BPRC
    std::uint64_t multicast_rx = 0;      // MPRC
};
// Reads every counter once and adds it to `into` (control path).
void accumulate_stats(mmio::RegisterIo& regs, HardwareStats& into);

class Port;

class Queue final : public net::Queue {
  public:
    Queue(Port& owner, std::unique_ptr<RxRing> rx, std::unique_ptr<TxRing> tx,
          irq::Interrupt* interrupt, std::uint32_t causes);
    ~Queue() override;

    unsigned rx_burst(net::Packet* packets, unsigned n) noexcept override;
    unsigned tx_burst(net::Packet* packets, unsigned n) noexcept override;
    unsigned reclaim() noexcept override;
    unsigned tx_pending() const noexcept override { return tx_->in_flight(); }
    unsigned wait(unsigned events, std::chrono::microseconds timeout) override;
    net::QueueStats stats() const noexcept override;
    int failure() const noexcept override { return 0; }
    unsigned index() const noexcept override { return 0; }
    unsigned depth() const noexcept override { return depth_; }
    irq::WaitMode mode() const noexcept override { return mode_; }
    dma::BufferPool& pool() noexcept override { return *pool_; }
    std::uint16_t headroom() const noexcept override { return 0; }

    void open(unsigned depth, irq::WaitMode mode, dma::BufferPool* pool);
    bool opened() const noexcept { return pool_ != nullptr; }
    RxRing& rx_ring() noexcept { return *rx_; }
    TxRing& tx_ring() noexcept { return *tx_; }
    std::uint64_t garbage() const noexcept;

  private:
    bool owns(const dma::Buffer& buffer) const noexcept {
        return buffer.index < pool_->capacity() && pool_->buffer(buffer.index).data == buffer.data;
    }
    void arm() noexcept;
    void disarm() noexcept;

    Port& owner_;
    std::unique_ptr<RxRing> rx_;
    std::unique_ptr<TxRing> tx_;
    irq::Interrupt* interrupt_;
    std::uint32_t causes_;  // ICR bits this queue's interrupt answers to
    irq::WaitMode mode_ = irq::WaitMode::poll;
    unsigned depth_ = 0;
    std::uint32_t max_frame_ = 0;
    dma::BufferPool* pool_ = nullptr;
    std::unique_ptr<dma::BufferPool> own_pool_;
    net::QueueStats stats_;
};

// Which interrupt the port uses.
enum class InterruptKind { none, msix, msi, intx };
const char* to_string(InterruptKind kind) noexcept;

class Port final : public net::NetPort {
  public:
    Port(std::unique_ptr<Device> device, const PortOptions& options);
    ~Port() override;

    std::string name() const override;
    net::PortInfo info() const override { return info_; }
    net::LinkStatus link() const override;
    net::Queue& open_queue(unsigned index, unsigned depth = 0,
                           irq::WaitMode mode = irq::WaitMode::poll,
                           dma::BufferPool* pool = nullptr) override;
    dma::DmaPool& dma_pool() override { return resources_.pool(); }

    mmio::RegisterIo& registers() noexcept { return *regs_; }
    InterruptKind interrupt_kind() const noexcept { return interrupt_kind_; }
    // Reads the statistics registers now and returns the totals since the port was opened.
    const HardwareStats& update_stats();
    bool mac_from_eeprom() const noexcept { return mac_from_eeprom_; }

  private:
    void start();
    void setup_interrupts();
    void setup_rings();
    std::uint32_t throttle_interval() const;  // ITR/EITR units from the options
    void stop() noexcept;
    [[noreturn]] void refuse(const std::string& why, int code);

    std::unique_ptr<Device> device_;
    PortOptions options_;
    RegisterWindows windows_;
    std::unique_ptr<mmio::RegisterIo> regs_;
    DriverResources resources_;  // vectors, DMA arena and pool, bus mastering
    InterruptKind interrupt_kind_ = InterruptKind::none;
    bool running_ = false;  // the device was started: stop() resets it
    bool mac_from_eeprom_ = false;
    net::PortInfo info_;
    HardwareStats hw_stats_;
    std::unique_ptr<Queue> queue_;
};

// The NetPort factory the registry calls for 8086:10d3.
std::unique_ptr<net::NetPort> open_net(std::unique_ptr<Device> device,
                                       const net::OpenNetOptions& options);
// The registry's entry for 8086:100e (QEMU `e1000`, an 82540EM): always throws ENODEV saying
// that only the 82574L is driven.
std::unique_ptr<net::NetPort> refuse_82540(std::unique_ptr<Device> device,
                                           const net::OpenNetOptions& options);

}  // namespace ring3::e1000e
