// Virtio device bring-up up to FEATURES_OK as a steppable state machine (VIRTIO 1.2 §3.1.1,
// over the PCI common configuration of §4.1.4.3). Each step() does at most a few register
// accesses of one step of §3.1.1 and says what state it is in; the reset wait is bounded and
// measured by the `now` the caller passes, so a test steps it register by register over a fake
// register file and a fake clock, without sleeping. Queue setup and DRIVER_OK follow
// (PciTransport::setup_queue, driver_ok).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "ring3/mmio/register.hpp"

namespace ring3::virtio {

class Initializer {
  public:
    enum class State {
        reset,           // write device_status = 0
        wait_reset,      // until device_status reads 0 (§4.1.4.3.2)
        acknowledge,     // ACKNOWLEDGE
        driver,          // DRIVER
        read_features,   // device_feature, both halves
        write_features,  // driver_feature, both halves (the negotiated set)
        features_ok,     // FEATURES_OK
        check_features,  // re-read device_status: FEATURES_OK must have stuck
        done,
        failed,
    };
    using TimePoint = std::chrono::steady_clock::time_point;

    struct Features {
        std::uint64_t required = 0;  // the device must offer all of these (else: failed)
        std::uint64_t optional = 0;  // accepted when offered
        const char* (*device_bit_name)(unsigned bit) = nullptr;  // for messages
    };

    Initializer(mmio::RegisterIo& common, const Features& features) noexcept
        : common_(common), features_(features) {}

    State step(TimePoint now);
    State state() const noexcept { return state_; }
    bool waiting() const noexcept { return state_ == State::wait_reset; }

    std::uint64_t offered() const noexcept { return offered_; }
    std::uint64_t negotiated() const noexcept { return negotiated_; }
    const std::string& error() const noexcept { return error_; }
    int error_code() const noexcept { return error_code_; }

    // How long a reset may take before the device is declared dead. The spec sets no limit;
    // QEMU completes it within the write.
    static constexpr std::chrono::milliseconds kResetTimeout{1000};
    // Never negotiated, whatever the caller asks: ring3 drives split virtqueues only.
    static constexpr std::uint64_t kNeverNegotiated = std::uint64_t{1} << 34;  // RING_PACKED

  private:
    State fail(std::string message, int code);

    mmio::RegisterIo& common_;
    Features features_;
    State state_ = State::reset;
    TimePoint deadline_{};
    std::uint64_t offered_ = 0;
    std::uint64_t negotiated_ = 0;
    std::string error_;
    int error_code_ = 0;
};

const char* to_string(Initializer::State state) noexcept;

// "VERSION_1 ACCESS_PLATFORM EVENT_IDX ..." for the generic bits; device-specific bits named by
// `device_bit_name` when given, else "bit N".
std::string describe_features(std::uint64_t features,
                              const char* (*device_bit_name)(unsigned bit) = nullptr);

}  // namespace ring3::virtio
