// VIRTIO 1.2 §3.1.1 "Driver Requirements: Device Initialization", one register step at a time.
#include "ring3/virtio/initializer.hpp"

#include <fmt/core.h>

#include <cerrno>

#include "ring3/virtio/registers.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::virtio {

const char* to_string(Initializer::State state) noexcept {
    switch (state) {
        case Initializer::State::reset:
            return "reset";
        case Initializer::State::wait_reset:
            return "wait for device_status = 0";
        case Initializer::State::acknowledge:
            return "acknowledge";
        case Initializer::State::driver:
            return "driver";
        case Initializer::State::read_features:
            return "read device features";
        case Initializer::State::write_features:
            return "write driver features";
        case Initializer::State::features_ok:
            return "features ok";
        case Initializer::State::check_features:
            return "check FEATURES_OK";
        case Initializer::State::done:
            return "done";
        case Initializer::State::failed:
            return "failed";
    }
    return "?";
}

namespace {

const char* generic_bit_name(unsigned bit) {
    switch (bit) {
        case feature::indirect_desc:
            return "INDIRECT_DESC";
        case feature::event_idx:
            return "EVENT_IDX";
        case feature::version_1:
            return "VERSION_1";
        case feature::access_platform:
            return "ACCESS_PLATFORM";
        case feature::ring_packed:
            return "RING_PACKED";
        case feature::in_order:
            return "IN_ORDER";
        case feature::order_platform:
            return "ORDER_PLATFORM";
        case feature::sr_iov:
            return "SR_IOV";
        case feature::notification_data:
            return "NOTIFICATION_DATA";
        case feature::notif_config_data:
            return "NOTIF_CONFIG_DATA";
        case feature::ring_reset:
            return "RING_RESET";
        default:
            return nullptr;
    }
}

}  // namespace

std::string describe_features(std::uint64_t features, const char* (*device_bit_name)(unsigned)) {
    std::string text;
    for (unsigned bit = 0; bit < 64; ++bit) {
        if ((features >> bit & 1u) == 0) {
            continue;
        }
        const char* name = generic_bit_name(bit);
        if (name == nullptr && device_bit_name != nullptr && bit < 24) {
            name = device_bit_name(bit);  // §6: bits 0-23 are device-specific
        }
        if (!text.empty()) {
            text += ' ';
        }
        text += name != nullptr ? std::string(name) : fmt::format("bit{}", bit);
    }
    return text.empty() ? "none" : text;
}

Initializer::State Initializer::fail(std::string message, int code) {
    error_ = std::move(message);
    error_code_ = code;
    state_ = State::failed;
    // §3.1.1: "If any of these steps go irrecoverably wrong, the driver SHOULD set the FAILED
    // status bit to indicate that it has given up on the device".
    auto status = common_.read<reg::DeviceStatus>();
    if (status.raw() != 0xff) {
        status.set<reg::DeviceStatus::Failed>(1);
        common_.write(status);
    }
    return state_;
}

Initializer::State Initializer::step(TimePoint now) {
    using Status = reg::DeviceStatus;
    switch (state_) {
        case State::reset:
            // §3.1.1 step 1 and §4.1.4.3.2: writing 0 resets the device.
            common_.write_raw<Status>(0);
            deadline_ = now + kResetTimeout;
            state_ = State::wait_reset;
            return state_;
        case State::wait_reset: {
            const auto value = common_.read<Status>().raw();
            if (value == 0) {
                state_ = State::acknowledge;
            } else if (value == 0xff) {
                error_ = "device_status reads 0xff: the device is not responding (removed?)";
                error_code_ = EIO;
                state_ = State::failed;  // nothing to tell a device that is gone
            } else if (now > deadline_) {
                return fail(fmt::format("device_status still reads {:#04x} {} ms after the reset",
                                        value, kResetTimeout.count()),
                            ETIMEDOUT);
            }
            return state_;
        }
        case State::acknowledge:  // §3.1.1 step 2: the guest OS noticed the device
            common_.write_raw<Status>(status::acknowledge);
            state_ = State::driver;
            return state_;
        case State::driver:  // §3.1.1 step 3: and knows how to drive it
            common_.write_raw<Status>(status::acknowledge | status::driver);
            state_ = State::read_features;
            return state_;
        case State::read_features: {  // §3.1.1 step 4, §4.1.4.3: 32 bits per select
            common_.write_raw<reg::DeviceFeatureSelect>(0);
            const std::uint64_t low = common_.read<reg::DeviceFeature>().raw();
            common_.write_raw<reg::DeviceFeatureSelect>(1);
            const std::uint64_t high = common_.read<reg::DeviceFeature>().raw();
            offered_ = high << 32 | low;
            state_ = State::write_features;
            return state_;
        }
        case State::write_features: {
            const std::uint64_t missing = features_.required & ~offered_;
            if ((missing & bit(feature::version_1)) != 0) {
                return fail(
                    "the device does not offer VIRTIO_F_VERSION_1: it is a legacy (pre-1.0) "
                    "device; ring3 drives modern (VIRTIO 1.0+) devices only",
                    ENOTSUP);
            }
            if (missing != 0) {
                return fail(fmt::format("the device does not offer required feature(s) {}",
                                        describe_features(missing, features_.device_bit_name)),
                            ENOTSUP);
            }
            negotiated_ = offered_ & (features_.required | features_.optional) & ~kNeverNegotiated;
            common_.write_raw<reg::DriverFeatureSelect>(0);
            common_.write_raw<reg::DriverFeature>(static_cast<std::uint32_t>(negotiated_));
            common_.write_raw<reg::DriverFeatureSelect>(1);
            common_.write_raw<reg::DriverFeature>(static_cast<std::uint32_t>(negotiated_ >> 32));
            state_ = State::features_ok;
            return state_;
        }
        case State::features_ok:  // §3.1.1 step 5
            common_.write_raw<Status>(status::acknowledge | status::driver | status::features_ok);
            state_ = State::check_features;
            return state_;
        case State::check_features: {  // §3.1.1 step 6
            const auto value = common_.read<Status>();
            if (value.get<Status::FeaturesOk>() == 0) {
                return fail(fmt::format("the device did not accept the features {} (FEATURES_OK "
                                        "did not stay set)",
                                        describe_features(negotiated_, features_.device_bit_name)),
                            ENOTSUP);
            }
            state_ = State::done;
            return state_;
        }
        case State::done:
        case State::failed:
            return state_;
    }
    return state_;
}

}  // namespace ring3::virtio
