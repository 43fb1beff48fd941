// Supervised drivers (policy.hpp's [device.driver]): starting one in its sandbox with its
// connection to ring3d inherited, describing how it ended, and deciding when to restart it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <deque>
#include <optional>
#include <string>

#include "ring3/broker/policy.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/pci/address.hpp"

namespace ring3::broker {

// The descriptor number a supervised driver finds its connection to ring3d at, also named by
// $RING3D_FD (client.hpp takes it from there).
inline constexpr int kInheritedFd = 3;

struct Spawned {
    pid_t pid = 0;
    UniqueFd pidfd;   // readable when it exits
    UniqueFd socket;  // ring3d's end of the driver's connection
    Identity who;     // whom it runs as
};

// Forks and execs `spec`'s command for `device` as its user, in its sandbox, its connection to
// ring3d on descriptor 3 ($RING3D_FD) and nothing else open but stdin (/dev/null), stdout and
// stderr (ring3d's). $RING3D_DEVICE names the device and $RING3D_RESTARTS counts the restarts
// before this start. Returns once the command has been exec'd; throws ring3::Error when the
// user is unknown or the child could not get as far as exec (the error the child met).
Spawned spawn_driver(const pci::Address& device, const DriverSpec& spec, unsigned restarts);

// "exit status 3", "killed by signal 9 (SIGKILL)", "dumped core on signal 11 (SIGSEGV)".
std::string exit_text(const siginfo_t& info);
// Whether the exit is a failure for restart = "on-failure": anything but exit status 0.
bool failed(const siginfo_t& info) noexcept;

// The restart bookkeeping of one supervised driver.
class RestartPolicy {
  public:
    using Clock = std::chrono::steady_clock;
    // After an exit at `now`: when to start it again, or nothing (restart policy says no, or
    // max_restarts within restart_window have been spent: `why` says which).
    std::optional<Clock::time_point> after_exit(const DriverSpec& spec, bool failure,
                                                Clock::time_point now, std::string& why);
    unsigned restarts() const noexcept { return restarts_; }

  private:
    std::deque<Clock::time_point> recent_;
    unsigned restarts_ = 0;
};

}  // namespace ring3::broker
