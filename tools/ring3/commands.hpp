// The `ring3` tool's subcommands. Each lives in its own cmd_*.cpp and registers itself on the
// application; a handler throws ring3::Error on failure and main() prints it and exits 1.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace ring3::tool {

void add_ls_command(CLI::App& app);
void add_show_command(CLI::App& app);
void add_bar_command(CLI::App& app);
void add_bind_commands(CLI::App& app);  // bind and unbind
void add_irq_test_command(CLI::App& app);
void add_nvme_command(CLI::App& app);
void add_perf_command(CLI::App& app);       // perf blk, perf pattern, perf net
void add_perf_net_command(CLI::App& perf);  // perf net (cmd_perf_net.cpp)
void add_hold_command(CLI::App& app);
void add_ps_command(CLI::App& app);              // ring3d's devices and owners
void add_emu_command(CLI::App& app);             // emulated devices over vfio-user (cmd_emu.cpp)
void add_emu_virtio_net_command(CLI::App& emu);  // emu virtio-net (cmd_emu_virtio.cpp)
void add_emu_virtio_blk_command(CLI::App& emu);  // emu virtio-blk (cmd_emu_virtio.cpp)
// "4096", "64K", "512M", "1G", "2T" (powers of 1024) for `command`'s `option`; throws
// ring3::Error naming both (cmd_emu.cpp).
std::uint64_t parse_emu_size(const std::string& text, const char* command, const char* option);

}  // namespace ring3::tool
