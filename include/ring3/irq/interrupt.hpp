// Interrupt: one interrupt vector as a file descriptor (DESIGN.md, "Interrupts and waiting").
//
// Two kinds of fd stand behind it: an eventfd that VFIO or a vfio-user server signals (read gives
// the number of signals since the last read), and a UIO device node /dev/uioN (read blocks until
// the next interrupt and gives the running total; INTx stays disabled until 1 is written back).
// Either way the fd is pollable, so a caller may also put fd() in its own epoll set.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "ring3/core/unique_fd.hpp"

namespace ring3::irq {

class Interrupt {
  public:
    enum class Source { eventfd, uio };

    Interrupt() noexcept = default;
    Interrupt(UniqueFd fd, Source source, std::string name) noexcept;
    // A UIO INTx: `uio_fd` is /dev/uioN (non-blocking), `config_fd` the device's sysfs `config`.
    static Interrupt uio_intx(UniqueFd uio_fd, UniqueFd config_fd, std::string name) noexcept;

    // A fresh non-blocking eventfd (what VFIO_DEVICE_SET_IRQS and vfio-user take).
    static Interrupt make_eventfd(std::string name);

    int fd() const noexcept { return fd_.get(); }
    Source source() const noexcept { return source_; }
    const std::string& name() const noexcept { return name_; }
    explicit operator bool() const noexcept { return static_cast<bool>(fd_); }

    // Blocks up to `timeout` for the interrupt; returns how many arrived since the last wait
    // (at least 1), or 0 on timeout. Throws ring3::Error on a failing fd.
    std::uint64_t wait(std::chrono::microseconds timeout);
    // Consumes pending signals without blocking; returns how many there were.
    std::uint64_t drain();
    // UIO only: re-enables INTx after the cause was cleared in the device (PCI 3.0 §6.2.2,
    // Command bit 10). No-op for an eventfd.
    void rearm();
    // UIO only: masks INTx (sets Command bit 10).
    void mask();
    // Signals an eventfd from user space (tests, and waking a waiter on shutdown).
    void signal();

  private:
    std::uint64_t consume();

    void set_interrupt_disable(bool disable);

    UniqueFd fd_;
    UniqueFd config_fd_;  // UIO: the device's config space, for the Interrupt Disable bit
    Source source_ = Source::eventfd;
    std::string name_;
    std::uint32_t uio_last_count_ = 0;
    bool uio_count_known_ = false;
};

// How a queue waits for completions.
enum class WaitMode { poll, interrupt, adaptive };
std::optional<WaitMode> parse_wait_mode(std::string_view text);
const char* to_string(WaitMode mode) noexcept;

}  // namespace ring3::irq
