// The virtio PCI transport of ring3's emulated virtio devices (VIRTIO 1.2 §4.1 PCI transport,
// §2.1 status, §2.2 features, §2.7 split virtqueues; sections cited where each rule is
// implemented), shared by every device type (emu::VirtioNetDevice, emu::VirtioBlkDevice).
//
// BAR0 (16 KiB, 64-bit) holds the virtio structures the vendor capabilities point at (§4.1.4):
//   0x0000 common configuration  trapped (REGION_READ/WRITE): status, features, queue setup
//   0x0800 ISR status            trapped
//   0x0c00 device configuration  trapped: the device type's bytes (read-only)
//   0x1000 notifications         a shared page the client maps: notify writes cost no message
//   0x2000 MSI-X table, 0x3000 PBA
// The function's own thread polls the available rings of the enabled queues (like a busy-polling
// vhost), so notifications are never needed; it asks for none (§2.7.7, §2.7.10).
//
// A device type implements VirtioDeviceType: the features it offers, its configuration bytes and
// one pass over its queues, which takes chains with next_chain() and returns them with
// complete(). Everything read from the driver's memory is checked here (descriptor indexes,
// flags and lengths, chains that loop, addresses that are not mapped): a bad one sets
// DEVICE_NEEDS_RESET (§2.1.2) and the function stops using its queues until the driver resets it.
// Faults (emu::Faults) are injected in complete(), counted over the chains it returns.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ring3/emu/nvme.hpp"  // emu::Faults and parse_fault: one fault syntax for every model
#include "ring3/emu/server.hpp"

namespace ring3::emu {

class VirtioFunction;

// What a device type adds to the transport. Every hook runs under the PciFunction's lock.
class VirtioDeviceType {
  public:
    virtual ~VirtioDeviceType() = default;
    // Feature bits offered (transport bits such as VERSION_1 included).
    virtual std::uint64_t offered_features() const noexcept = 0;
    // Combinations of offered bits the device refuses at FEATURES_OK (§2.2.2), as a reason to
    // log; nullptr when `driver_features` is acceptable.
    virtual const char* refuse_features(std::uint64_t /*driver_features*/) const noexcept {
        return nullptr;
    }
    // The device configuration (§4.1.4.6): fills `out` (zeroed, config_length bytes).
    virtual void read_config(std::span<std::byte> out) const noexcept = 0;
    // One pass over the device's queues while the device is live; true when it did any work.
    virtual bool process(VirtioFunction& transport) = 0;
    // A device reset (§2.4): the type's own state back to its initial values.
    virtual void reset() noexcept {}
};

struct VirtioCounters {
    std::uint64_t completions = 0;  // chains returned through complete() (what faults count)
    std::uint64_t interrupts = 0;
    std::uint64_t needs_reset = 0;  // times DEVICE_NEEDS_RESET was set
    std::uint64_t resets = 0;       // driver resets (device_status written 0, DEVICE_RESET, FLR)
};

class VirtioFunction final : public DeviceModel {
  public:
    static constexpr std::uint64_t kBarSize = 0x4000;
    static constexpr std::uint32_t kCommonOffset = 0x0000;
    static constexpr std::uint32_t kCommonLength = 0x38;  // the VIRTIO 1.0 part (§4.1.4.3)
    static constexpr std::uint32_t kIsrOffset = 0x0800;
    static constexpr std::uint32_t kDeviceOffset = 0x0c00;
    static constexpr std::uint32_t kDeviceMaxLength = 0x400;
    static constexpr std::uint32_t kNotifyOffset = 0x1000;
    static constexpr std::uint32_t kNotifyLength = 0x1000;
    static constexpr std::uint32_t kNotifyMultiplier = 4;
    static constexpr std::uint32_t kMsixTable = 0x2000;
    static constexpr std::uint32_t kMsixPba = 0x3000;
    // Queues the notify page has room for (4 bytes each).
    static constexpr unsigned kMaxQueues = kNotifyLength / kNotifyMultiplier;

    struct Options {
        std::uint16_t device_id = 0;   // PCI device id: 0x1040 + the virtio device type (§4.1.2)
        std::uint32_t class_code = 0;  // 24-bit PCI class code
        std::uint16_t num_queues = 1;
        std::uint16_t queue_size = 256;   // each virtqueue's maximum (a power of two)
        unsigned msix_vectors = 2;        // vector 0 for configuration changes (§4.1.5.1.2)
        std::uint32_t config_length = 0;  // bytes of the device configuration
        std::uint64_t max_chain_bytes = 1u << 20;  // a longer chain is garbage
        Faults faults;
    };

    // One queue's state as the driver set it up (§4.1.4.3) and the device's place in it.
    struct Queue {
        std::uint16_t size = 0;  // as the driver set it (the maximum until then)
        std::uint16_t vector = 0xffff;
        bool enabled = false;
        std::uint64_t desc = 0;
        std::uint64_t driver = 0;  // available ring
        std::uint64_t device = 0;  // used ring
        std::uint16_t last_avail = 0;
        std::uint16_t used_idx = 0;
        std::uint16_t signalled_used = 0;  // used idx at the last interrupt decision
        struct Pending {
            std::chrono::steady_clock::time_point due;
            std::uint32_t id = 0;
            std::uint32_t len = 0;
        };
        std::deque<Pending> pending;  // used elements held back (delay fault)
    };
    // One resolved descriptor chain: its head and the runs of client memory it names.
    struct Run {
        std::byte* data = nullptr;
        std::uint32_t length = 0;
        bool writable = false;
    };
    struct Chain {
        std::uint16_t head = 0;
        unsigned descriptors = 0;  // including zero-length ones
        std::uint64_t readable = 0;
        std::uint64_t writable = 0;
        std::vector<Run> runs;  // reused: its capacity stays between chains
    };
    // Ring pointers resolved for one pass (valid under the lock).
    struct Rings {
        const std::byte* desc = nullptr;
        std::byte* avail = nullptr;  // the driver's; only read
        std::byte* used = nullptr;
    };

    // Declares config space, capabilities, BAR0 and MSI-X on `function` and becomes its model.
    // Throws ring3::Error for options the transport cannot carry. The poller starts with start().
    VirtioFunction(PciFunction& function, VirtioDeviceType& type, Options options);
    VirtioFunction(const VirtioFunction&) = delete;
    VirtioFunction& operator=(const VirtioFunction&) = delete;
    ~VirtioFunction() override;  // stop(), and the BAR handlers and model removed

    // The polling thread: start() once the device type is fully built; stop() before any of its
    // state goes (idempotent; a device type's destructor calls it first).
    void start();
    void stop() noexcept;

    void reset() override;  // DEVICE_RESET or FLR, under the function's lock
    void client_detached() override;

    // Any thread.
    std::uint8_t status() const noexcept { return status_snapshot_.load(); }
    VirtioCounters counters() const;  // takes the lock

    // --- For the device type, under the lock (inside process()) -----------------------------
    PciFunction& function() noexcept { return function_; }
    const std::string& name() const noexcept { return function_.name(); }
    const Options& options() const noexcept { return options_; }
    std::uint64_t driver_features() const noexcept { return driver_features_; }
    bool negotiated(unsigned feature_bit) const noexcept;
    // Running (FEATURES_OK and DRIVER_OK), not needing a reset, not vanished.
    bool live() const noexcept;
    Queue& queue(unsigned index) noexcept { return queues_[index]; }
    // Resolves queue `index`'s rings; false while it is not enabled or not mapped (wait).
    bool rings(unsigned index, Rings& out) noexcept;
    // The next available chain of queue `index`, validated (§2.7.5, §2.7.6); false when there
    // is none or it is bad (then DEVICE_NEEDS_RESET is set). The caller consumes it with
    // ++queue(index).last_avail and returns it with complete() (or post_used()).
    bool next_chain(unsigned index, const Rings& r, Chain& chain);
    // Returns a chain to the driver with `len` bytes written (§2.7.8): faults are applied here
    // and counted over the chains returned.
    void complete(unsigned index, const Rings& r, std::uint32_t id, std::uint32_t len);
    // The used element at once, no fault (a control queue's answer).
    void post_used(unsigned index, const Rings& r, std::uint32_t id, std::uint32_t len);
    // §2.1.2: stop using the queues until the driver resets the device, and tell it.
    void needs_reset(const std::string& why);

  private:
    std::uint64_t bar_read(std::uint64_t offset, unsigned width);
    void bar_write(std::uint64_t offset, unsigned width, std::uint64_t value);
    void common_snapshot(std::byte (&out)[kCommonLength]) const noexcept;
    void common_write(std::uint64_t offset, unsigned width, std::uint64_t value);
    void write_status(std::uint8_t value);
    void device_reset();
    bool poll_once();
    void post_due(std::chrono::steady_clock::time_point now);
    void interrupt(Queue& q, const Rings& r);

    PciFunction& function_;
    VirtioDeviceType& type_;
    Options options_;
    std::span<std::byte> notify_;
    std::vector<Queue> queues_;
    // Common configuration state (§4.1.4.3).
    std::uint32_t device_feature_select_ = 0;
    std::uint32_t driver_feature_select_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint16_t config_vector_ = 0xffff;
    std::uint8_t status_ = 0;
    std::uint16_t queue_select_ = 0;
    std::uint8_t isr_ = 0;
    bool halted_ = false;      // vanished: nothing more is processed
    VirtioCounters counters_;  // under the lock
    std::atomic<std::uint8_t> status_snapshot_{0};
    std::atomic<bool> stop_{false};
    std::thread poller_;
};

}  // namespace ring3::emu
