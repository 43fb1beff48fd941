// libFuzzer target for ring3d's policy parser (src/broker/policy.cpp over cpptoml): any file is
// a policy or a ring3::Error naming the file; every rule of an accepted policy names its device
// one way and someone who may claim it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ring3/broker/policy.hpp"
#include "ring3/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace ring3::broker;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const Policy policy = Policy::parse(text, "fuzz.toml");
        for (const DeviceRule& rule : policy.devices) {
            if (rule.address.has_value() == rule.vendor.has_value() ||
                (rule.users.empty() && rule.groups.empty())) {
                std::abort();
            }
            (void)rule.describe(policy.file);
        }
    } catch (const ring3::Error& e) {
        if (e.what()[0] == '\0') {
            std::abort();
        }
    }
    return 0;
}
