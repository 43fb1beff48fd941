// ring3d's policy (policy.hpp): TOML through cpptoml, every key checked.
#include "ring3/broker/policy.hpp"

#include <fmt/core.h>
#include <grp.h>
#include <pwd.h>

#include <cpptoml.h>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <map>
#include <span>
#include <sstream>

#include "ring3/broker/sandbox.hpp"
#include "ring3/core/error.hpp"

namespace ring3::broker {
namespace {

constexpr std::string_view kKnownDeviceKeys[] = {"address", "id",      "class", "users",
                                                 "groups",  "backend", "driver"};
constexpr std::string_view kKnownDriverKeys[] = {"command",
                                                 "user",
                                                 "group",
                                                 "restart",
                                                 "restart_delay_ms",
                                                 "restart_delay_max_ms",
                                                 "max_restarts",
                                                 "restart_window_s",
                                                 "sandbox",
                                                 "allow_syscalls",
                                                 "memlock_mib"};

std::string known_list(std::span<const std::string_view> known) {
    std::string out;
    for (const std::string_view k : known) {
        out += fmt::format("{}{}", out.empty() ? "" : ", ", k);
    }
    return out;
}

// Where each [[device]] table and each of its keys starts, found by a scan of the text (cpptoml
// keeps no positions): lines_[k] for the k-th [[device]] (0-based), keys by name.
struct Positions {
    std::vector<std::size_t> tables;
    std::vector<std::map<std::string, std::size_t>> keys;
    std::map<std::string, std::size_t> top_keys;
    std::string prefix;  // "driver." inside a [device.driver] table

    explicit Positions(std::string_view text) {
        std::size_t line = 0;
        std::size_t start = 0;
        while (start <= text.size()) {
            const std::size_t end = std::min(text.find('\n', start), text.size());
            std::string_view l = text.substr(start, end - start);
            ++line;
            const auto first = l.find_first_not_of(" \t");
            l = first == std::string_view::npos ? std::string_view() : l.substr(first);
            if (l.substr(0, 1) == "[") {
                const bool array = l.substr(0, 2) == "[[";
                const auto close = l.find(array ? "]]" : "]");
                const std::size_t from = array ? 2 : 1;
                std::string name(
                    l.substr(from, close == std::string_view::npos ? 0 : close - from));
                name.erase(std::remove_if(name.begin(), name.end(),
                                          [](unsigned char c) { return std::isspace(c) != 0; }),
                           name.end());
                prefix.clear();
                if (array && name == "device") {
                    tables.push_back(line);
                    keys.emplace_back();
                } else if (!array && name == "device.driver" && !keys.empty()) {
                    prefix = "driver.";
                    keys.back().emplace("driver", line);
                }
            } else if (!l.empty() && l[0] != '#') {
                const auto eq = l.find('=');
                if (eq != std::string_view::npos) {
                    std::string key(l.substr(0, eq));
                    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) {
                        key.pop_back();
                    }
                    auto& where = keys.empty() ? top_keys : keys.back();
                    where.emplace(prefix + key, line);
                }
            }
            if (end == text.size()) {
                break;
            }
            start = end + 1;
        }
    }
};

// Levenshtein distance, for "did you mean".
std::size_t distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) {
        row[j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = up;
        }
    }
    return row[b.size()];
}

std::optional<std::uint32_t> parse_hex(std::string_view text, std::size_t digits) {
    if (text.size() != digits) {
        return std::nullopt;
    }
    std::uint32_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
    if (ec != std::errc() || end != text.data() + text.size()) {
        return std::nullopt;
    }
    return value;
}

class Parser {
  public:
    Parser(std::string_view text, const std::string& file) : positions_(text), file_(file) {}

    [[noreturn]] void fail(std::size_t line, const std::string& what) const {
        throw Error::invalid("read policy", line != 0 ? fmt::format("{}:{}", file_, line) : file_,
                             what, EINVAL);
    }

    std::size_t line_of(std::size_t table, const std::string& key) const {
        if (table < positions_.keys.size()) {
            if (const auto found = positions_.keys[table].find(key);
                found != positions_.keys[table].end()) {
                return found->second;
            }
            return positions_.tables[table];
        }
        return 0;
    }

    std::vector<Principal> principals(std::size_t table, const std::string& key,
                                      const std::shared_ptr<cpptoml::base>& value) const {
        const std::size_t line = line_of(table, key);
        const auto array = value->as_array();
        if (!array) {
            fail(line, fmt::format("'{}' must be an array of names or numeric ids, e.g. {} = "
                                   "[\"alice\", \"1001\"]",
                                   key, key));
        }
        std::vector<Principal> out;
        for (const auto& item : array->get()) {
            if (const auto name = item->as<std::string>()) {
                const std::string& text = name->get();
                if (text.empty()) {
                    fail(line, fmt::format("'{}' has an empty name", key));
                }
                // All digits: a numeric id (TOML arrays hold one type; names are not numbers).
                std::uint32_t id = 0;
                const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
                if (ec == std::errc() && end == text.data() + text.size()) {
                    out.emplace_back(id);
                } else {
                    out.emplace_back(text);
                }
            } else if (const auto id = item->as<std::int64_t>()) {
                if (id->get() < 0 || id->get() > 0xfffffffe) {
                    fail(line, fmt::format("'{}' has id {}, not in 0..4294967294", key, id->get()));
                }
                out.emplace_back(static_cast<std::uint32_t>(id->get()));
            } else {
                fail(line, fmt::format("'{}' must hold names (strings) or ids (integers)", key));
            }
        }
        return out;
    }

    Principal principal(std::size_t line, const std::string& key,
                        const std::shared_ptr<cpptoml::base>& value) const {
        if (const auto name = value->as<std::string>()) {
            const std::string& text = name->get();
            std::uint32_t id = 0;
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
            if (text.empty()) {
                fail(line, fmt::format("'{}' is empty", key));
            }
            if (ec == std::errc() && end == text.data() + text.size()) {
                return id;
            }
            return text;
        }
        if (const auto id = value->as<std::int64_t>();
            id && id->get() >= 0 && id->get() <= 0xfffffffe) {
            return static_cast<std::uint32_t>(id->get());
        }
        fail(line,
             fmt::format("'{}' must be a name or a numeric id, e.g. {} = \"driver\"", key, key));
    }

    std::string string_of(std::size_t table, const std::string& key,
                          const std::shared_ptr<cpptoml::base>& value, const char* example) const {
        const auto s = value->as<std::string>();
        if (!s) {
            // `key` is "driver.sandbox" inside [device.driver]: the file says "sandbox".
            const std::string bare = key.substr(key.rfind('.') + 1);
            fail(line_of(table, key),
                 fmt::format("'{}' must be a string, e.g. {} = \"{}\"", bare, bare, example));
        }
        return s->get();
    }

    void check_known(std::size_t line, const std::string& key,
                     std::span<const std::string_view> known, const char* table) const {
        if (std::find(known.begin(), known.end(), key) != known.end()) {
            return;
        }
        std::string hint;
        for (const std::string_view candidate : known) {
            if (distance(key, candidate) <= 2) {
                hint = fmt::format("; did you mean '{}'?", candidate);
                break;
            }
        }
        fail(line, fmt::format("unknown key '{}' in {} (known: {}){}", key, table,
                               known_list(known), hint));
    }

    // One of a fixed set of words, e.g. restart = "on-failure".
    template <typename T>
    T choice(std::size_t table, const std::string& key, const std::shared_ptr<cpptoml::base>& value,
             std::initializer_list<std::pair<std::string_view, T>> words) const {
        const std::string text =
            string_of(table, key, value, std::string(words.begin()->first).c_str());
        std::string expected;
        std::size_t i = 0;
        for (const auto& [word, meaning] : words) {
            if (word == text) {
                return meaning;
            }
            expected += fmt::format("{}\"{}\"",
                                    i == 0 ? "" : (i + 1 == words.size() ? " or " : ", "), word);
            ++i;
        }
        const std::string bare = key.substr(key.rfind('.') + 1);
        fail(line_of(table, key), fmt::format("'{}' = \"{}\": expected {}", bare, text, expected));
    }

    std::int64_t integer_of(std::size_t line, const std::string& key,
                            const std::shared_ptr<cpptoml::base>& value, std::int64_t low,
                            std::int64_t high) const {
        const auto v = value->as<std::int64_t>();
        if (!v || v->get() < low || v->get() > high) {
            fail(line, fmt::format("'{}' must be an integer in {}..{}", key, low, high));
        }
        return v->get();
    }

    DriverSpec driver(std::size_t k, const cpptoml::table& t) const {
        DriverSpec d;
        d.line = line_of(k, "driver");
        bool have_user = false;
        for (const auto& [name, value] : t) {
            const std::string key = "driver." + name;
            const std::size_t line = line_of(k, key);
            check_known(line, name, kKnownDriverKeys, "[device.driver]");
            if (name == "command") {
                const auto array = value->as_array();
                if (array) {
                    for (const auto& item : array->get()) {
                        const auto word = item->as<std::string>();
                        if (!word) {
                            d.command.clear();
                            break;
                        }
                        d.command.push_back(word->get());
                    }
                }
                if (d.command.empty() || d.command[0].empty()) {
                    fail(line,
                         "'command' must be a non-empty array of strings, e.g. command = "
                         "[\"ring3\", \"perf\", \"blk\", \"ring3d:{device}\"]");
                }
            } else if (name == "user" || name == "group") {
                const Principal p = principal(line, name, value);
                if (name == "user") {
                    if (const auto* id = std::get_if<std::uint32_t>(&p);
                        (id != nullptr && *id == 0) || (std::holds_alternative<std::string>(p) &&
                                                        std::get<std::string>(p) == "root")) {
                        fail(line, "'user' is root: a supervised driver runs unprivileged");
                    }
                    d.user = p;
                    have_user = true;
                } else {
                    d.group = p;
                }
            } else if (name == "restart") {
                d.restart = choice<Restart>(k, key, value,
                                            {{"no", Restart::no},
                                             {"on-failure", Restart::on_failure},
                                             {"always", Restart::always}});
            } else if (name == "restart_delay_ms") {
                d.restart_delay =
                    std::chrono::milliseconds(integer_of(line, name, value, 0, 3600000));
            } else if (name == "restart_delay_max_ms") {
                d.restart_delay_max =
                    std::chrono::milliseconds(integer_of(line, name, value, 0, 3600000));
            } else if (name == "max_restarts") {
                d.max_restarts = static_cast<unsigned>(integer_of(line, name, value, 0, 1000000));
            } else if (name == "restart_window_s") {
                d.restart_window = std::chrono::seconds(integer_of(line, name, value, 1, 86400));
            } else if (name == "sandbox") {
                d.sandbox = choice<SandboxMode>(k, key, value,
                                                {{"on", SandboxMode::on},
                                                 {"log", SandboxMode::log},
                                                 {"off", SandboxMode::off}});
            } else if (name == "allow_syscalls") {
                const auto array = value->as_array();
                if (!array) {
                    fail(line, "'allow_syscalls' must be an array of system call names");
                }
                for (const auto& item : array->get()) {
                    const auto call = item->as<std::string>();
                    if (!call) {
                        fail(line, "'allow_syscalls' must hold names (strings)");
                    }
                    if (!syscall_number(call->get())) {
                        fail(line, fmt::format("'allow_syscalls': unknown system call '{}'",
                                               call->get()));
                    }
                    d.allow_syscalls.push_back(call->get());
                }
            } else if (name == "memlock_mib") {
                d.memlock_bytes =
                    static_cast<std::uint64_t>(integer_of(line, name, value, 1, 1 << 24)) << 20;
            }
        }
        if (!have_user) {
            fail(d.line, "a [device.driver] needs 'user': whom the driver runs as");
        }
        if (d.command.empty()) {
            fail(d.line, "a [device.driver] needs 'command': the driver's argv");
        }
        if (d.restart_delay_max < d.restart_delay) {
            d.restart_delay_max = d.restart_delay;
        }
        return d;
    }

    DeviceRule device(std::size_t k, const cpptoml::table& t) const {
        DeviceRule rule;
        rule.index = k + 1;
        rule.line = k < positions_.tables.size() ? positions_.tables[k] : 0;
        for (const auto& [key, value] : t) {
            check_known(line_of(k, key), key, kKnownDeviceKeys, "[[device]]");
            if (key == "address") {
                const std::string text = string_of(k, key, value, "0000:01:00.0");
                try {
                    rule.address = pci::Address::parse(text);
                } catch (const Error& e) {
                    fail(line_of(k, key), fmt::format("'address' = \"{}\": {}", text, e.reason()));
                }
            } else if (key == "id") {
                const std::string text = string_of(k, key, value, "1b36:0010");
                const auto colon = text.find(':');
                const auto vendor = parse_hex(std::string_view(text).substr(0, colon), 4);
                const auto dev = colon == std::string::npos
                                     ? std::nullopt
                                     : parse_hex(std::string_view(text).substr(colon + 1), 4);
                if (!vendor || !dev) {
                    fail(
                        line_of(k, key),
                        fmt::format("'id' = \"{}\" is not VENDOR:DEVICE in hex, e.g. \"1b36:0010\"",
                                    text));
                }
                rule.vendor = static_cast<std::uint16_t>(*vendor);
                rule.device = static_cast<std::uint16_t>(*dev);
            } else if (key == "class") {
                const std::string text = string_of(k, key, value, "010802");
                const auto code = parse_hex(text, 6);
                if (!code) {
                    fail(
                        line_of(k, key),
                        fmt::format("'class' = \"{}\" is not 6 hex digits, e.g. \"010802\"", text));
                }
                rule.class_code = *code;
            } else if (key == "users") {
                rule.users = principals(k, key, value);
            } else if (key == "groups") {
                rule.groups = principals(k, key, value);
            } else if (key == "driver") {
                const auto table = value->as_table();
                if (!table) {
                    fail(line_of(k, key),
                         "'driver' must be a table: write [device.driver] under the [[device]]");
                }
                rule.driver = driver(k, *table);
            } else if (key == "backend") {
                const std::string text = string_of(k, key, value, "vfio");
                if (text != "vfio") {
                    fail(line_of(k, key),
                         fmt::format("'backend' = \"{}\": ring3d hands out \"vfio\" only", text));
                }
            }
        }
        const std::size_t at = rule.line;
        if (rule.address.has_value() == rule.vendor.has_value()) {
            fail(at, "a [[device]] names its device by 'address' or by 'id', exactly one of them");
        }
        if (rule.class_code && !rule.vendor) {
            fail(at, "'class' narrows an 'id' rule; it needs 'id'");
        }
        if (rule.users.empty() && rule.groups.empty() && !rule.driver) {
            fail(at,
                 "a [[device]] needs 'users' or 'groups' (who may claim it) or a "
                 "[device.driver] (what ring3d runs for it)");
        }
        return rule;
    }

    Policy parse(std::string_view text) const {
        std::shared_ptr<cpptoml::table> root;
        try {
            std::istringstream in{std::string(text)};
            cpptoml::parser parser(in);
            root = parser.parse();
        } catch (const cpptoml::parse_exception& e) {
            fail(0, fmt::format("TOML syntax: {}", e.what()));
        }
        Policy policy;
        policy.file = file_;
        for (const auto& [key, value] : *root) {
            if (key != "device") {
                const auto line =
                    positions_.top_keys.count(key) != 0 ? positions_.top_keys.at(key) : 0;
                fail(line, fmt::format("unknown key or table '{}' (known: [[device]])", key));
            }
            const auto tables = value->as_table_array();
            if (!tables) {
                fail(positions_.top_keys.count(key) != 0 ? positions_.top_keys.at(key) : 0,
                     "'device' must be an array of tables: write [[device]] above each one");
            }
            const auto& list = tables->get();
            for (std::size_t k = 0; k < list.size(); ++k) {
                policy.devices.push_back(device(k, *list[k]));
            }
        }
        return policy;
    }

  private:
    Positions positions_;
    const std::string& file_;
};

bool named(const std::vector<Principal>& list, std::uint32_t id, const std::string& name) {
    for (const Principal& p : list) {
        if (const auto* n = std::get_if<std::string>(&p);
            n != nullptr && !name.empty() && *n == name) {
            return true;
        }
        if (const auto* i = std::get_if<std::uint32_t>(&p); i != nullptr && *i == id) {
            return true;
        }
    }
    return false;
}

std::string group_name(gid_t gid) {
    group g{};
    group* found = nullptr;
    std::vector<char> buffer(16384);
    if (::getgrgid_r(gid, &g, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
        return found->gr_name;
    }
    return {};
}

}  // namespace

const char* to_string(Restart restart) noexcept {
    switch (restart) {
        case Restart::no:
            return "no";
        case Restart::on_failure:
            return "on-failure";
        case Restart::always:
            return "always";
    }
    return "?";
}

const char* to_string(SandboxMode mode) noexcept {
    switch (mode) {
        case SandboxMode::on:
            return "on";
        case SandboxMode::log:
            return "log";
        case SandboxMode::off:
            return "off";
    }
    return "?";
}

std::vector<std::string> DriverSpec::argv_for(const pci::Address& device) const {
    const std::string bdf = device.to_string();
    std::vector<std::string> argv = command;
    for (std::string& word : argv) {
        for (auto at = word.find("{device}"); at != std::string::npos;
             at = word.find("{device}", at + bdf.size())) {
            word.replace(at, 8, bdf);
        }
    }
    return argv;
}

std::chrono::milliseconds DriverSpec::backoff(unsigned recent) const noexcept {
    auto delay = restart_delay;
    for (unsigned i = 0; i < recent && delay < restart_delay_max; ++i) {
        delay = delay == std::chrono::milliseconds(0) ? delay : delay * 2;
    }
    return std::min(delay, restart_delay_max);
}

std::string DeviceRule::describe(const std::string& file) const {
    const std::string what =
        address ? address->to_string()
                : fmt::format("{:04x}:{:04x}{}", *vendor, *device,
                              class_code ? fmt::format(" class {:06x}", *class_code) : "");
    return fmt::format("[[device]] #{} ({} line {}: {})", index, file, line, what);
}

bool DeviceRule::matches(const pci::Address& a, std::uint16_t vendor_id, std::uint16_t device_id,
                         std::uint32_t class_of_device) const noexcept {
    if (address) {
        return *address == a;
    }
    return vendor == vendor_id && device == device_id &&
           (!class_code || *class_code == class_of_device);
}

Identity identity_of(uid_t uid, gid_t gid) {
    Identity who;
    who.uid = uid;
    who.gid = gid;
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buffer(16384);
    if (::getpwuid_r(uid, &pw, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
        who.user_name = found->pw_name;
        int count = 64;
        std::vector<gid_t> groups(static_cast<std::size_t>(count));
        if (::getgrouplist(found->pw_name, gid, groups.data(), &count) < 0) {
            groups.resize(static_cast<std::size_t>(count));
            ::getgrouplist(found->pw_name, gid, groups.data(), &count);
        }
        groups.resize(static_cast<std::size_t>(std::max(count, 0)));
        who.groups = std::move(groups);
    }
    return who;
}

Policy Policy::parse(std::string_view text, const std::string& file) {
    return Parser(text, file).parse(text);
}

Policy Policy::load(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        throw Error::from_errno("read policy", path);
    }
    std::stringstream text;
    text << in.rdbuf();
    return parse(text.str(), path);
}

const DeviceRule* Policy::rule_for(const pci::Address& a, std::uint16_t vendor_id,
                                   std::uint16_t device_id, std::uint32_t class_of_device) const {
    for (const DeviceRule& rule : devices) {
        if (rule.matches(a, vendor_id, device_id, class_of_device)) {
            return &rule;
        }
    }
    return nullptr;
}

std::optional<std::string> Policy::refusal(const DeviceRule& rule, const Identity& who) const {
    if (named(rule.users, who.uid, who.user_name)) {
        return std::nullopt;
    }
    std::vector<gid_t> groups = who.groups;
    groups.push_back(who.gid);
    for (const gid_t g : groups) {
        if (named(rule.groups, g, group_name(g))) {
            return std::nullopt;
        }
    }
    return fmt::format(
        "user {}{} is not allowed by {} (its users and groups name neither the "
        "user nor any of its groups)",
        who.uid, who.user_name.empty() ? "" : " (" + who.user_name + ")", rule.describe(file));
}

}  // namespace ring3::broker
