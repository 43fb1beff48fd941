// Waiting for completions in one of the three modes (DESIGN.md, "Interrupts and waiting"), for any
// driver's queue: poll spins on the queue, interrupt sleeps on the vector, adaptive spins a while
// and then sleeps. The queue supplies two calls:
//   poll()  -> unsigned: reaps what is ready, returns how many (noexcept, no system call);
//   arm()   -> bool: asks the device for an interrupt at the next completion and returns true when
//              completions are already there (then the wait polls instead of sleeping: their
//              interrupt may have been suppressed).
// The eventfd counts signals, so a completion landing between arm() and the sleep is not lost.
// A UIO INTx is re-enabled after each wake-up once the queue was polled (the poll cleared the
// cause; Interrupt::rearm() does nothing for an eventfd), so no driver asks which backend it has.
// Used by NVMe (a queue with no interrupt suppression passes an arm() that returns false),
// virtio-blk and virtio-net.
#pragma once

#include <algorithm>
#include <chrono>

#include "ring3/core/cycle_clock.hpp"
#include "ring3/irq/interrupt.hpp"

namespace ring3::irq {

inline constexpr std::chrono::microseconds kAdaptiveSpin{50};

template <typename Poll, typename Arm, typename Disarm>
unsigned wait_for_completions(WaitMode mode, Interrupt* interrupt,
                              std::chrono::microseconds timeout, Poll&& poll, Arm&& arm,
                              Disarm&& disarm, std::chrono::microseconds spin = kAdaptiveSpin) {
    unsigned done = poll();
    if (done != 0) {
        return done;
    }
    const auto start = CycleClock::now();
    const auto deadline = start + timeout;
    if (mode == WaitMode::poll || interrupt == nullptr) {
        do {
            done = poll();
        } while (done == 0 && CycleClock::now() < deadline);
        return done;
    }
    if (mode == WaitMode::adaptive) {
        const auto spin_until = std::min(deadline, start + spin);
        do {
            done = poll();
        } while (done == 0 && CycleClock::now() < spin_until);
    }
    while (done == 0) {
        if (arm()) {
            done = poll();
            continue;
        }
        const auto left =
            std::chrono::duration_cast<std::chrono::microseconds>(deadline - CycleClock::now());
        if (left.count() <= 0) {
            break;
        }
        const auto signalled = interrupt->wait(left);
        done = poll();
        interrupt->rearm();
        if (signalled == 0) {
            break;
        }
    }
    disarm();
    return done;
}

}  // namespace ring3::irq
