// `ring3 ps`: what ring3d manages and who holds each device (src/broker/PROTOCOL.md, "list").
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "ring3/broker/client.hpp"

namespace ring3::tool {

void add_ps_command(CLI::App& app) {
    struct Args {
        std::string socket;
        bool json = false;
    };
    auto args = std::make_shared<Args>();
    auto* ps = app.add_subcommand("ps",
                                  "ring3d's devices, their owners (pid, user, since) and "
                                  "supervised drivers (state, restarts, last exit)");
    ps->add_option("--socket", args->socket,
                   "ring3d's socket (default: $RING3D_SOCKET or "
                   "/run/ring3/ring3d.sock)");
    ps->add_flag("--json", args->json, "ring3d's answer as JSON");
    ps->callback([args] {
        broker::Request request;
        request.verb = broker::Verb::list;
        const std::string reply = broker::Client(args->socket).call(request);
        if (args->json) {
            fmt::print("{}\n", reply);
            return;
        }
        const nlohmann::json j = nlohmann::json::parse(reply);
        fmt::print("{:<14} {:<10} {:<9} {:<8} {}\n", "DEVICE", "ID", "DRIVER", "YOU", "OWNER");
        for (const auto& d : j.at("devices")) {
            std::string owner = "-";
            if (!d.at("owner").is_null()) {
                const auto& o = d.at("owner");
                owner = fmt::format("pid {} user {}{} since {}", o.at("pid").get<long>(),
                                    o.at("uid").get<long>(),
                                    o.at("user").get<std::string>().empty()
                                        ? ""
                                        : " (" + o.at("user").get<std::string>() + ")",
                                    o.at("since").get<std::string>());
            }
            if (!d.at("available").get<bool>()) {
                owner = "unavailable: " + d.at("note").get<std::string>();
            }
            fmt::print("{:<14} {:<10} {:<9} {:<8} {}\n", d.at("address").get<std::string>(),
                       d.at("id").get<std::string>(), d.at("driver").get<std::string>(),
                       d.at("allowed").get<bool>() ? "may" : "may not", owner);
            if (const auto found = d.find("supervised"); found != d.end() && !found->is_null()) {
                const auto& s = *found;
                std::string line =
                    fmt::format("  supervised driver: {}", s.at("state").get<std::string>());
                if (!s.at("pid").is_null()) {
                    line += fmt::format(" pid {} user {} since {}", s.at("pid").get<long>(),
                                        s.at("user").get<std::string>(),
                                        s.at("since").get<std::string>());
                }
                line += fmt::format(", restarts {}", s.at("restarts").get<long>());
                if (!s.at("last_exit").is_null()) {
                    line += fmt::format(", last exit: {}", s.at("last_exit").get<std::string>());
                }
                if (!s.at("note").get<std::string>().empty()) {
                    line += fmt::format(" ({})", s.at("note").get<std::string>());
                }
                fmt::print("{}\n", line);
            }
        }
    });
}

}  // namespace ring3::tool
