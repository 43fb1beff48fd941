// ring3d's policy: which devices it manages and who may claim each (TOML, see dist/ring3d.toml).
//
//   [[device]]
//   address = "0000:01:00.0"     # this function, or
//   id = "1b36:0010"             # every function with this vendor:device id
//   class = "010802"             # (optional, with id) and this class code
//   users = ["alice", "1001"]    # user names or uids allowed to claim it (an all-digit string
//                                # is a uid; so is an integer in an array of integers)
//   groups = ["disk"]            # group names or gids allowed to claim it
//   backend = "vfio"             # the only backend ring3d hands out today (default)
//
//   [device.driver]              # (optional) a driver ring3d runs for it and supervises
//   command = ["ring3", "perf", "blk", "ring3d:{device}", "--time", "1h"]
//   user = "nvme-driver"         # whom it runs as: a name or uid, never root
//   group = "nvme-driver"        # (default: the user's primary group)
//   restart = "on-failure"       # "no", "on-failure" (default) or "always"
//   restart_delay_ms = 100       # before a restart; doubled for each recent one ...
//   restart_delay_max_ms = 10000 # ... up to this
//   max_restarts = 5             # restarts within restart_window_s; then ring3d gives up
//   restart_window_s = 60
//   sandbox = "on"               # "on" (default), "log" (seccomp only logs) or "off"
//   allow_syscalls = ["uname"]   # system calls allowed beyond the driver set (sandbox.hpp)
//   memlock_mib = 1024           # RLIMIT_MEMLOCK: the DMA memory it may pin
//
// A device with a driver is reserved for it: ring3d claims it on the driver's behalf, through a
// socket the driver inherits, and refuses everyone else. `users`/`groups` are then optional.
//
// A file with a syntax error, an unknown key or table, a wrong type or a bad value is refused as a
// whole, the error naming the file, the line, the key and what was expected.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ring3/pci/address.hpp"

namespace ring3::broker {

// A user or group as the policy names it: a name (resolved when a claim is checked) or a number.
using Principal = std::variant<std::string, std::uint32_t>;

enum class Restart { no, on_failure, always };
const char* to_string(Restart restart) noexcept;

enum class SandboxMode { on, log, off };
const char* to_string(SandboxMode mode) noexcept;

// A supervised driver: what ring3d runs for a device and how it restarts it.
struct DriverSpec {
    std::size_t line = 0;              // of its [device.driver] header
    std::vector<std::string> command;  // argv; "{device}" becomes the device's address
    Principal user;
    std::optional<Principal> group;
    Restart restart = Restart::on_failure;
    std::chrono::milliseconds restart_delay{100};
    std::chrono::milliseconds restart_delay_max{10000};
    unsigned max_restarts = 5;
    std::chrono::seconds restart_window{60};
    SandboxMode sandbox = SandboxMode::on;
    std::vector<std::string> allow_syscalls;
    std::uint64_t memlock_bytes = std::uint64_t{1} << 30;

    // The argv for `device`: "{device}" replaced in every word.
    std::vector<std::string> argv_for(const pci::Address& device) const;
    // How long to wait before restart number `recent` + 1, when `recent` restarts happened
    // within the window: restart_delay doubled per recent restart, at most restart_delay_max.
    std::chrono::milliseconds backoff(unsigned recent) const noexcept;
};

struct DeviceRule {
    std::size_t index = 0;  // 1-based, in file order
    std::size_t line = 0;   // of its [[device]] header
    std::optional<pci::Address> address;
    std::optional<std::uint16_t> vendor;
    std::optional<std::uint16_t> device;
    std::optional<std::uint32_t> class_code;
    std::vector<Principal> users;
    std::vector<Principal> groups;
    std::optional<DriverSpec> driver;

    // "[[device]] #2 (ring3d.toml line 7: 1b36:0010)", for messages.
    std::string describe(const std::string& file) const;
    bool matches(const pci::Address& a, std::uint16_t vendor_id, std::uint16_t device_id,
                 std::uint32_t class_of_device) const noexcept;
};

// Who is asking (from SO_PEERCRED, and the groups of that user).
struct Identity {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups
    std::string user_name;      // "" when the uid has no passwd entry
};
// The identity of `uid`/`gid`: name and supplementary groups from the user database.
Identity identity_of(uid_t uid, gid_t gid);

struct Policy {
    std::string file;
    std::vector<DeviceRule> devices;

    // Throws ring3::Error (EINVAL) naming `file`, the line and the key.
    static Policy parse(std::string_view text, const std::string& file);
    static Policy load(const std::string& path);

    // The first rule naming this device; nullptr when none does.
    const DeviceRule* rule_for(const pci::Address& a, std::uint16_t vendor_id,
                               std::uint16_t device_id, std::uint32_t class_of_device) const;
    // Whether `who` may claim through `rule`; when not, why (naming the rule).
    std::optional<std::string> refusal(const DeviceRule& rule, const Identity& who) const;
};

}  // namespace ring3::broker
