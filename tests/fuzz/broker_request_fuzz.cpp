// libFuzzer target for ring3d's request parser (src/broker/protocol.cpp): every input is either
// a request or a ring3::Error naming what is wrong; nothing else may escape, and a parsed request
// must format to a text that parses to the same request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ring3/broker/protocol.hpp"
#include "ring3/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace ring3::broker;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    Request request;
    try {
        request = parse_request(text);
    } catch (const ring3::Error& e) {
        if (e.reason().empty()) {
            std::abort();  // an error must say why
        }
        return 0;
    }
    const Request again = parse_request(format_request(request));
    if (again.verb != request.verb || again.device != request.device) {
        std::abort();
    }
    return 0;
}
