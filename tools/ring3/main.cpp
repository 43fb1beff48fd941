// ring3: inspect PCI devices and hand them to user-space drivers. See README.md.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <exception>

#include "commands.hpp"
#include "ring3/core/cycle_clock.hpp"
#include "ring3/core/error.hpp"

int main(int argc, char** argv) {
    // The cycle counter's calibration measures from here: by the time a driver first needs it,
    // the interval has passed and nothing waits (core/cycle_clock.hpp).
    ring3::CycleClock::begin_calibration();
    CLI::App app{"ring3: PCI devices for user-space drivers"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "ring3 0.1.0");
    ring3::tool::add_ls_command(app);
    ring3::tool::add_show_command(app);
    ring3::tool::add_bar_command(app);
    ring3::tool::add_bind_commands(app);
    ring3::tool::add_irq_test_command(app);
    ring3::tool::add_nvme_command(app);
    ring3::tool::add_perf_command(app);
    ring3::tool::add_hold_command(app);
    ring3::tool::add_ps_command(app);
    ring3::tool::add_emu_command(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const ring3::Error& e) {
        fmt::print(stderr, "ring3: {}\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "ring3: {}\n", e.what());
        return 1;
    }
    return 0;
}
