// Controller initialization as a steppable state machine (NVMe Base 2.0 §3.5.1, and §3.5.2 for
// disabling a controller that is still enabling). Each step() does at most one register action and
// says what state it is in; waits end by the controller's answer or by the deadline CAP.TO gives,
// measured by the `now` the caller passes in, so a test steps it register by register over a fake
// register file and a fake clock, without sleeping.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "ring3/mmio/register.hpp"

namespace ring3::nvme {

class Initializer {
  public:
    enum class State {
        start,                      // read CAP, CC, CSTS
        wait_ready_before_disable,  // CC.EN = 1 but CSTS.RDY = 0: let it finish enabling
        disable,                    // write CC.EN = 0
        wait_disabled,              // wait for CSTS.RDY = 0
        configure,                  // disabled: AQA, ASQ, ACQ, then CC with EN = 1
        wait_ready,                 // wait for CSTS.RDY = 1 (or CSTS.CFS)
        done,
        failed,
    };
    using TimePoint = std::chrono::steady_clock::time_point;

    struct AdminQueue {
        std::uint64_t sq_address = 0;
        std::uint64_t cq_address = 0;
        std::uint32_t entries = 0;  // both queues
    };

    Initializer(mmio::RegisterIo& registers, const AdminQueue& admin) noexcept
        : registers_(registers), admin_(admin) {}

    // Advances by one step and returns the new state. In a wait state nothing changes until the
    // controller answers; call again later (a caller sleeps ~100 µs between calls).
    State step(TimePoint now);

    State state() const noexcept { return state_; }
    bool waiting() const noexcept {
        return state_ == State::wait_ready_before_disable || state_ == State::wait_disabled ||
               state_ == State::wait_ready;
    }
    // Set when failed: what went wrong ("CSTS.RDY did not become 1 within CAP.TO = 7500 ms"),
    // and the errno that fits it.
    const std::string& error() const noexcept { return error_; }
    int error_code() const noexcept { return error_code_; }
    // CAP.TO, known after the first step.
    std::chrono::milliseconds ready_timeout() const noexcept { return ready_timeout_; }
    // Slack added to CAP.TO before a wait fails (emulators are slower than the spec's devices).
    static constexpr std::chrono::milliseconds kSlack{500};

  private:
    State fail(std::string message, int code);
    void enter_wait(State state, TimePoint now);

    mmio::RegisterIo& registers_;
    AdminQueue admin_;
    State state_ = State::start;
    TimePoint deadline_{};
    std::chrono::milliseconds ready_timeout_{500};
    std::string error_;
    int error_code_ = 0;
};

const char* to_string(Initializer::State state) noexcept;

}  // namespace ring3::nvme
