#include "ring3/irq/interrupt.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "ring3/core/error.hpp"

namespace ring3::irq {

Interrupt::Interrupt(UniqueFd fd, Source source, std::string name) noexcept
    : fd_(std::move(fd)), source_(source), name_(std::move(name)) {}

Interrupt Interrupt::uio_intx(UniqueFd uio_fd, UniqueFd config_fd, std::string name) noexcept {
    Interrupt interrupt(std::move(uio_fd), Source::uio, std::move(name));
    interrupt.config_fd_ = std::move(config_fd);
    return interrupt;
}

Interrupt Interrupt::make_eventfd(std::string name) {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
        throw Error::from_errno("create eventfd for", name);
    }
    return Interrupt(UniqueFd(fd), Source::eventfd, std::move(name));
}

// Reads what is pending without blocking; 0 when nothing is.
std::uint64_t Interrupt::consume() {
    if (source_ == Source::eventfd) {
        std::uint64_t count = 0;
        const ssize_t n = ::read(fd_.get(), &count, sizeof count);
        if (n == sizeof count) {
            return count;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return 0;
        }
        throw Error::from_errno("read interrupt eventfd", name_);
    }
    // UIO: the read returns the total number of interrupts the device has seen (a u32 that wraps).
    std::uint32_t total = 0;
    const ssize_t n = ::read(fd_.get(), &total, sizeof total);
    if (n == sizeof total) {
        const std::uint32_t arrived = uio_count_known_ ? total - uio_last_count_ : 1;
        uio_last_count_ = total;
        uio_count_known_ = true;
        return arrived;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return 0;
    }
    throw Error::from_errno("read UIO interrupt", name_);
}

std::uint64_t Interrupt::wait(std::chrono::microseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (const auto arrived = consume(); arrived != 0) {
            return arrived;
        }
        const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return 0;
        }
        // ppoll for microsecond resolution: poll's milliseconds would dominate measured latency.
        const timespec ts{static_cast<time_t>(left.count() / 1000000),
                          static_cast<long>((left.count() % 1000000) * 1000)};
        pollfd pfd{fd_.get(), POLLIN, 0};
        const int rc = ::ppoll(&pfd, 1, &ts, nullptr);
        if (rc < 0 && errno != EINTR) {
            throw Error::from_errno("poll interrupt", name_);
        }
        if (rc > 0 && (pfd.revents & (POLLERR | POLLNVAL)) != 0) {
            throw Error::invalid("poll interrupt", name_, "the fd reports an error (device gone?)",
                                 EIO);
        }
    }
}

std::uint64_t Interrupt::drain() {
    std::uint64_t total = 0;
    for (std::uint64_t n = consume(); n != 0; n = consume()) {
        total += n;
    }
    return total;
}

void Interrupt::rearm() {
    if (source_ == Source::uio) {
        set_interrupt_disable(false);
    }
}

void Interrupt::mask() {
    if (source_ == Source::uio) {
        set_interrupt_disable(true);
    }
}

// PCI Local Bus 3.0 §6.2.2: Command register (offset 04h) bit 10, Interrupt Disable. Only the
// kernel's handler sets it while we are running (and only when it is clear), so the
// read-modify-write cannot lose an update of it; other bits are written back as read.
void Interrupt::set_interrupt_disable(bool disable) {
    constexpr off_t kCommand = 0x04;
    constexpr std::uint16_t kInterruptDisable = 1u << 10;
    std::uint16_t command = 0;
    if (::pread(config_fd_.get(), &command, sizeof command, kCommand) != sizeof command) {
        throw Error::from_errno("read command register for", name_);
    }
    const auto updated = static_cast<std::uint16_t>(disable ? command | kInterruptDisable
                                                            : command & ~kInterruptDisable);
    if (updated != command &&
        ::pwrite(config_fd_.get(), &updated, sizeof updated, kCommand) != sizeof updated) {
        throw Error::from_errno("write command register for", name_);
    }
}

void Interrupt::signal() {
    if (source_ != Source::eventfd) {
        throw Error::invalid("signal interrupt", name_, "only an eventfd can be signalled");
    }
    const std::uint64_t one = 1;
    if (::write(fd_.get(), &one, sizeof one) != sizeof one) {
        throw Error::from_errno("signal eventfd", name_);
    }
}

std::optional<WaitMode> parse_wait_mode(std::string_view text) {
    if (text == "poll")
        return WaitMode::poll;
    if (text == "interrupt")
        return WaitMode::interrupt;
    if (text == "adaptive")
        return WaitMode::adaptive;
    return std::nullopt;
}

const char* to_string(WaitMode mode) noexcept {
    switch (mode) {
        case WaitMode::poll:
            return "poll";
        case WaitMode::interrupt:
            return "interrupt";
        case WaitMode::adaptive:
            return "adaptive";
    }
    return "?";
}

}  // namespace ring3::irq
