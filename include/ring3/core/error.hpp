// ring3::Error: the one exception type of the control path (STYLE.md, "Errors, one convention").
// It carries what was attempted, on which object (a path, a BDF, a socket), and the errno, so a
// message always reads "<operation> <object>: <reason>".
#pragma once

#include <string>
#include <system_error>

namespace ring3 {

class Error : public std::system_error {
  public:
    // `reason` empty: the reason is strerror(errnum).
    Error(std::string operation, std::string object, int errnum, std::string reason = {});

    // For invalid input or state (errno EINVAL unless given): the reason is spelled out.
    static Error invalid(std::string operation, std::string object, std::string reason,
                         int errnum = 22 /* EINVAL */);

    // Builds the error from the current errno; call right after the failing syscall.
    static Error from_errno(std::string operation, std::string object);

    const char* what() const noexcept override { return message_.c_str(); }
    const std::string& operation() const noexcept { return operation_; }
    const std::string& object() const noexcept { return object_; }
    const std::string& reason() const noexcept { return reason_; }
    int errnum() const noexcept { return code().value(); }

  private:
    std::string operation_;
    std::string object_;
    std::string reason_;
    std::string message_;
};

}  // namespace ring3
