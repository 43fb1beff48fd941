// The virtio PCI transport for modern devices (VIRTIO 1.2 §4.1): the virtio structure
// capabilities found through the PCI capability list, their windows opened through
// RegisterWindows (mapped BAR or region read/write), bring-up through the Initializer, queue
// setup, MSI-X vector routing and DRIVER_OK.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ring3/device/device.hpp"
#include "ring3/device/register_window.hpp"
#include "ring3/mmio/register.hpp"
#include "ring3/virtio/initializer.hpp"

namespace ring3::virtio {

struct StructureLocation {
    bool present = false;
    std::uint8_t bar = 0;
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
    std::uint16_t cap_offset = 0;  // where in config space the capability was found
};

struct PciLayout {
    StructureLocation common;
    StructureLocation notify;
    StructureLocation isr;
    StructureLocation device;
    std::uint32_t notify_off_multiplier = 0;
};

// Reads the device's config space and finds the virtio structures (§4.1.4: the first capability
// of each type wins; capabilities naming a reserved BAR are skipped, §4.1.4.1). Throws
// ring3::Error when a structure the driver needs (common, notify, ISR) is missing; a device with
// none at all is named legacy-only ("ring3 drives modern (VIRTIO 1.0+) devices only").
PciLayout find_structures(Device& device);

struct TransportOptions {
    // Injected for tests: the clock the bring-up's bounded waits read, and how a wait pauses.
    std::function<Initializer::TimePoint()> now = [] { return std::chrono::steady_clock::now(); };
    std::function<void()> pause = [] {};
};

class PciTransport {
  public:
    explicit PciTransport(Device& device, const TransportOptions& options = {});
    PciTransport(const PciTransport&) = delete;
    PciTransport& operator=(const PciTransport&) = delete;

    Device& device() noexcept { return device_; }
    const PciLayout& layout() const noexcept { return layout_; }
    mmio::RegisterIo& common() noexcept { return *common_; }
    mmio::RegisterIo& isr() noexcept { return *isr_; }
    mmio::RegisterIo& notify() noexcept { return *notify_; }
    // The device-specific configuration; throws when the device has none.
    mmio::RegisterIo& device_config();
    bool device_config_present() const noexcept { return static_cast<bool>(device_cfg_); }

    // §3.1.1 steps 1-6 (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK); throws ring3::Error
    // with the Initializer's reason (and sets FAILED) when they go wrong. Returns the negotiated
    // set, also logged.
    std::uint64_t negotiate(const Initializer::Features& features);
    std::uint64_t offered() const noexcept { return offered_; }
    std::uint64_t negotiated() const noexcept { return negotiated_; }
    bool has(unsigned feature_bit) const noexcept { return (negotiated_ >> feature_bit & 1u) != 0; }

    std::uint16_t num_queues();
    // The queue's maximum size (queue_size after selecting it); throws when it is 0 (§4.1.4.3:
    // the queue is unavailable).
    std::uint16_t max_queue_size(std::uint16_t index);

    struct QueueSetup {
        std::uint16_t index = 0;
        std::uint16_t size = 0;
        std::uint64_t desc = 0;
        std::uint64_t driver = 0;  // available ring
        std::uint64_t device = 0;  // used ring
        std::uint16_t msix_vector = 0xffff;
    };
    // §4.1.5.1.3: programs and enables one queue; returns the byte offset of its notification
    // register in notify(). Throws when the device refuses the MSI-X vector (reads back
    // NO_VECTOR, §4.1.5.1.2) or the notification offset lies outside the notify structure.
    std::size_t setup_queue(const QueueSetup& setup);
    // §4.1.5.1.2: the configuration change vector (NO_VECTOR: none).
    void set_config_vector(std::uint16_t vector);
    // §3.1.1 step 8.
    void driver_ok();
    // Writes 0 to device_status and waits (bounded) for it to read 0; logs on timeout. noexcept:
    // used on teardown.
    void reset() noexcept;
    std::uint8_t status();
    // §4.1.4.3.1 / §2.5.1: reads the device configuration until config_generation is the same
    // before and after (bounded), so multi-field reads are consistent.
    template <typename Read>
    void read_device_config(Read&& read) {
        for (int attempt = 0; attempt < 100; ++attempt) {
            const auto before = generation();
            read(device_config());
            if (generation() == before) {
                return;
            }
        }
        throw_config_unstable();
    }

  private:
    std::uint8_t generation();
    [[noreturn]] void throw_config_unstable();

    Device& device_;
    TransportOptions options_;
    PciLayout layout_;
    RegisterWindows windows_;
    std::unique_ptr<mmio::RegisterIo> common_;
    std::unique_ptr<mmio::RegisterIo> notify_;
    std::unique_ptr<mmio::RegisterIo> isr_;
    std::unique_ptr<mmio::RegisterIo> device_cfg_;
    std::uint64_t offered_ = 0;
    std::uint64_t negotiated_ = 0;
};

}  // namespace ring3::virtio
