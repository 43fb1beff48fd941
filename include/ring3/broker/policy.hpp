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
// A file with a syntax error, an unknown key or table, a wrong type or a bad value is refused as a
// whole, the error naming the file, the line, the key and what was expected.
#pragma once

#include <sys/types.h>

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

struct DeviceRule {
    std::size_t index = 0;  // 1-based, in file order
    std::size_t line = 0;   // of its [[device]] header
    std::optional<pci::Address> address;
    std::optional<std::uint16_t> vendor;
    std::optional<std::uint16_t> device;
    std::optional<std::uint32_t> class_code;
    std::vector<Principal> users;
    std::vector<Principal> groups;

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
