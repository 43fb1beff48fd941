#include "ring3/irq/interrupt.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace ring3::irq {
namespace {

using namespace std::chrono_literals;

TEST(Interrupt, EventfdWaitReturnsTheSignalsSinceLastWait) {
    auto irq = Interrupt::make_eventfd("test");
    irq.signal();
    irq.signal();
    EXPECT_EQ(irq.wait(10ms), 2u);
    EXPECT_EQ(irq.wait(1ms), 0u);  // nothing new: a timeout
}

TEST(Interrupt, WaitTimesOutWithinItsBound) {
    auto irq = Interrupt::make_eventfd("test");
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(irq.wait(20ms), 0u);
    const auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_GE(waited, 20ms);
    EXPECT_LT(waited, 5s);  // a liveness bound, not a speed test
}

TEST(Interrupt, WakesAWaiterFromAnotherThread) {
    auto irq = Interrupt::make_eventfd("test");
    std::thread signaller([&] {
        std::this_thread::sleep_for(5ms);
        irq.signal();
    });
    EXPECT_EQ(irq.wait(10s), 1u);
    signaller.join();
}

TEST(Interrupt, DrainConsumesWithoutBlocking) {
    auto irq = Interrupt::make_eventfd("test");
    EXPECT_EQ(irq.drain(), 0u);
    irq.signal();
    EXPECT_EQ(irq.drain(), 1u);
    EXPECT_EQ(irq.drain(), 0u);
}

TEST(WaitMode, ParsesItsThreeNames) {
    EXPECT_EQ(parse_wait_mode("poll"), WaitMode::poll);
    EXPECT_EQ(parse_wait_mode("interrupt"), WaitMode::interrupt);
    EXPECT_EQ(parse_wait_mode("adaptive"), WaitMode::adaptive);
    EXPECT_EQ(parse_wait_mode("Poll"), std::nullopt);
    EXPECT_STREQ(to_string(WaitMode::adaptive), "adaptive");
}

}  // namespace
}  // namespace ring3::irq
