#include "ring3/nvme/initializer.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>

#include "ring3/nvme/registers.hpp"

namespace ring3::nvme {

const char* to_string(Initializer::State state) noexcept {
    switch (state) {
        case Initializer::State::start:
            return "start";
        case Initializer::State::wait_ready_before_disable:
            return "wait for CSTS.RDY = 1 before disabling";
        case Initializer::State::disable:
            return "disable";
        case Initializer::State::wait_disabled:
            return "wait for CSTS.RDY = 0";
        case Initializer::State::configure:
            return "configure";
        case Initializer::State::wait_ready:
            return "wait for CSTS.RDY = 1";
        case Initializer::State::done:
            return "done";
        case Initializer::State::failed:
            return "failed";
    }
    return "?";
}

Initializer::State Initializer::fail(std::string message, int code) {
    error_ = std::move(message);
    error_code_ = code;
    state_ = State::failed;
    return state_;
}

void Initializer::enter_wait(State state, TimePoint now) {
    state_ = state;
    deadline_ = now + ready_timeout_ + kSlack;
}

Initializer::State Initializer::step(TimePoint now) {
    switch (state_) {
        case State::start: {
            const auto cap = registers_.read<reg::Cap>();
            if (cap.raw() == ~0ull) {
                return fail("CAP reads all ones: the device is not responding (removed?)", EIO);
            }
            // §3.1.3.1: CAP.TO is in 500 ms units; 0 would make every wait fail at once.
            ready_timeout_ = std::chrono::milliseconds(
                500 * std::max<std::uint64_t>(1, cap.get<reg::Cap::To>()));
            const bool enabled = registers_.read<reg::Cc>().get<reg::Cc::En>() != 0;
            const bool ready = registers_.read<reg::Csts>().get<reg::Csts::Rdy>() != 0;
            if (enabled && !ready) {
                enter_wait(State::wait_ready_before_disable, now);
            } else if (enabled) {
                state_ = State::disable;
            } else {
                enter_wait(State::wait_disabled, now);
            }
            return state_;
        }
        case State::disable: {
            auto cc = registers_.read<reg::Cc>();
            cc.set<reg::Cc::En>(0);
            registers_.write(cc);
            enter_wait(State::wait_disabled, now);
            return state_;
        }
        case State::configure: {
            auto aqa = mmio::Value<reg::Aqa>();
            aqa.set<reg::Aqa::Asqs>(admin_.entries - 1).set<reg::Aqa::Acqs>(admin_.entries - 1);
            registers_.write(aqa);
            registers_.write(mmio::Value<reg::Asq>(admin_.sq_address));
            registers_.write(mmio::Value<reg::Acq>(admin_.cq_address));
            auto cc = mmio::Value<reg::Cc>();
            cc.set<reg::Cc::Iocqes>(4)    // 16-byte completion entries
                .set<reg::Cc::Iosqes>(6)  // 64-byte submission entries
                .set<reg::Cc::Mps>(0)     // 4 KiB pages
                .set<reg::Cc::Css>(0)     // NVM command set
                .set<reg::Cc::Ams>(0)     // round robin
                .set<reg::Cc::En>(1);
            registers_.write(cc);
            enter_wait(State::wait_ready, now);
            return state_;
        }
        case State::wait_ready_before_disable:
        case State::wait_disabled:
        case State::wait_ready: {
            const auto csts = registers_.read<reg::Csts>();
            if (csts.raw() == ~0u) {
                return fail("CSTS reads all ones: the device stopped responding", EIO);
            }
            const bool ready = csts.get<reg::Csts::Rdy>() != 0;
            const bool want_ready = state_ != State::wait_disabled;
            if (state_ == State::wait_ready && csts.get<reg::Csts::Cfs>() != 0) {
                return fail("controller fatal status (CSTS.CFS = 1) while enabling", EIO);
            }
            if (ready == want_ready) {
                state_ = state_ == State::wait_ready_before_disable ? State::disable
                         : state_ == State::wait_disabled           ? State::configure
                                                                    : State::done;
                return state_;
            }
            if (now > deadline_) {
                return fail(
                    fmt::format("CSTS.RDY did not become {} within CAP.TO = {} ms ({})",
                                want_ready ? 1 : 0, ready_timeout_.count(), to_string(state_)),
                    ETIMEDOUT);
            }
            return state_;
        }
        case State::done:
        case State::failed:
            return state_;
    }
    return state_;
}

}  // namespace ring3::nvme
