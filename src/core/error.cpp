#include "ring3/core/error.hpp"

#include <cerrno>
#include <cstring>

namespace ring3 {

Error::Error(std::string operation, std::string object, int errnum, std::string reason)
    : std::system_error(errnum, std::system_category()),
      operation_(std::move(operation)),
      object_(std::move(object)),
      reason_(reason.empty() ? std::string(std::strerror(errnum)) : std::move(reason)) {
    message_ = operation_;
    if (!object_.empty()) {
        message_ += ' ';
        message_ += object_;
    }
    message_ += ": ";
    message_ += reason_;
}

Error Error::invalid(std::string operation, std::string object, std::string reason, int errnum) {
    return Error(std::move(operation), std::move(object), errnum, std::move(reason));
}

Error Error::from_errno(std::string operation, std::string object) {
    const int saved = errno;
    return Error(std::move(operation), std::move(object), saved);
}

}  // namespace ring3
