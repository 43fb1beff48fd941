// The NVMe initialization state machine stepped register by register over a fake controller
// and a fake clock: no device, no sleeping.
#include "ring3/nvme/initializer.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ring3/nvme/spec.hpp"

namespace ring3::nvme {
namespace {

using namespace std::chrono_literals;
using State = Initializer::State;

// A controller's register file that follows CC.EN after `delay` reads of CSTS, and logs writes.
class FakeController final : public mmio::RegisterIo {
  public:
    explicit FakeController(std::uint64_t cap = 0x0000'0030'0f01'07ffull) { put64(0x00, cap); }

    std::size_t size() const noexcept override { return sizeof(bytes_); }
    std::uint8_t read8(std::size_t o) override { return bytes_[o]; }
    std::uint16_t read16(std::size_t o) override { return get<std::uint16_t>(o); }
    std::uint32_t read32(std::size_t o) override {
        if (o == 0x1c) {
            return csts();
        }
        return get<std::uint32_t>(o);
    }
    std::uint64_t read64(std::size_t o) override { return get<std::uint64_t>(o); }
    void write8(std::size_t o, std::uint8_t v) override { bytes_[o] = v; }
    void write16(std::size_t o, std::uint16_t v) override { std::memcpy(bytes_ + o, &v, 2); }
    void write32(std::size_t o, std::uint32_t v) override {
        log.push_back(name(o) + "=" + hex(v));
        std::memcpy(bytes_ + o, &v, 4);
        if (o == 0x14) {
            reads_until_change_ = delay;
        }
    }
    void write64(std::size_t o, std::uint64_t v) override {
        log.push_back(name(o) + "=" + hex(v));
        put64(o, v);
    }

    void set_enabled(bool en, bool ready) {
        std::uint32_t cc = en ? 1u : 0u;
        std::memcpy(bytes_ + 0x14, &cc, 4);
        ready_ = ready;
        reads_until_change_ = delay;  // a controller caught mid-transition
    }

    unsigned delay = 2;        // CSTS reads before RDY follows EN
    bool never_ready = false;  // RDY never becomes 1
    bool fatal = false;        // CSTS.CFS once enabled
    bool removed = false;      // every read returns all ones
    std::vector<std::string> log;

  private:
    std::uint32_t csts() {
        if (removed) {
            return ~0u;
        }
        const bool en = (get<std::uint32_t>(0x14) & 1u) != 0;
        if (en != ready_ && reads_until_change_ > 0) {
            --reads_until_change_;
        } else if (en != ready_ && !(en && never_ready)) {
            ready_ = en;
        }
        return (ready_ ? 1u : 0u) | (fatal && en ? 2u : 0u);
    }
    template <typename T>
    T get(std::size_t o) const {
        T v;
        std::memcpy(&v, bytes_ + o, sizeof v);
        return v;
    }
    void put64(std::size_t o, std::uint64_t v) { std::memcpy(bytes_ + o, &v, 8); }
    static std::string name(std::size_t o) {
        switch (o) {
            case 0x14:
                return "CC";
            case 0x24:
                return "AQA";
            case 0x28:
                return "ASQ";
            case 0x30:
                return "ACQ";
            default:
                return "reg" + std::to_string(o);
        }
    }
    static std::string hex(std::uint64_t v) {
        char text[32];
        std::snprintf(text, sizeof text, "%#llx", static_cast<unsigned long long>(v));
        return text;
    }

    alignas(8) std::uint8_t bytes_[0x40] = {};
    bool ready_ = false;
    unsigned reads_until_change_ = 0;
};

const Initializer::AdminQueue kAdmin{0x100000, 0x101000, 32};

// Steps until done/failed (or `limit` steps), advancing the fake clock 1 ms per step.
State run(Initializer& init, Initializer::TimePoint& now, int limit = 100000) {
    State state = init.state();
    for (int i = 0; i < limit && state != State::done && state != State::failed; ++i) {
        state = init.step(now);
        now += 1ms;
    }
    return state;
}

TEST(NvmeInitializer, BringsUpAnEnabledControllerRegisterByRegister) {
    FakeController regs;
    regs.set_enabled(true, true);
    Initializer init(regs, kAdmin);
    Initializer::TimePoint now{};
    EXPECT_EQ(init.step(now), State::disable);  // read CAP, CC, CSTS
    EXPECT_EQ(init.ready_timeout(), 7500ms);    // CAP.TO = 15
    EXPECT_EQ(init.step(now), State::wait_disabled);
    EXPECT_EQ(regs.log, (std::vector<std::string>{"CC=0"}));
    EXPECT_EQ(init.step(now), State::wait_disabled);  // RDY still 1 (the fake lags 2 reads)
    EXPECT_EQ(init.step(now), State::wait_disabled);
    EXPECT_EQ(init.step(now), State::configure);
    EXPECT_EQ(init.step(now), State::wait_ready);
    EXPECT_EQ(regs.log, (std::vector<std::string>{"CC=0", "AQA=0x1f001f", "ASQ=0x100000",
                                                  "ACQ=0x101000", "CC=0x460001"}));
    EXPECT_EQ(run(init, now), State::done);
}

TEST(NvmeInitializer, LetsAnEnablingControllerFinishBeforeDisablingIt) {
    FakeController regs;
    regs.set_enabled(true, false);  // §3.5.2: EN = 1, RDY = 0
    Initializer init(regs, kAdmin);
    Initializer::TimePoint now{};
    EXPECT_EQ(init.step(now), State::wait_ready_before_disable);
    State state = init.state();
    int waits = 0;
    while (state == State::wait_ready_before_disable && waits < 100) {
        EXPECT_TRUE(regs.log.empty());  // CC untouched until RDY = 1
        state = init.step(now);
        ++waits;
    }
    EXPECT_EQ(state, State::disable);
    EXPECT_GE(waits, 1);
    EXPECT_EQ(run(init, now), State::done);
    EXPECT_EQ(regs.log.front(), "CC=0");
}

TEST(NvmeInitializer, AControllerThatNeverGetsReadyFailsAfterCapTo) {
    FakeController regs;
    regs.never_ready = true;
    Initializer init(regs, kAdmin);
    Initializer::TimePoint now{};
    EXPECT_EQ(run(init, now), State::failed);
    EXPECT_EQ(init.error(),
              "CSTS.RDY did not become 1 within CAP.TO = 7500 ms (wait for CSTS.RDY = 1)");
    EXPECT_EQ(init.error_code(), ETIMEDOUT);
    // Not before the deadline: CAP.TO plus the slack, measured on the fake clock.
    EXPECT_GE(now - Initializer::TimePoint{}, 7500ms + Initializer::kSlack);
    EXPECT_LT(now - Initializer::TimePoint{}, 7500ms + Initializer::kSlack + 20ms);
}

TEST(NvmeInitializer, FatalStatusEndsTheWaitAtOnce) {
    FakeController regs;
    regs.fatal = true;
    regs.never_ready = true;
    Initializer init(regs, kAdmin);
    Initializer::TimePoint now{};
    EXPECT_EQ(run(init, now), State::failed);
    EXPECT_EQ(init.error(), "controller fatal status (CSTS.CFS = 1) while enabling");
    EXPECT_LT(now - Initializer::TimePoint{}, 100ms);
}

TEST(NvmeInitializer, ARemovedDeviceIsNamed) {
    FakeController regs(~0ull);
    Initializer init(regs, kAdmin);
    EXPECT_EQ(init.step({}), State::failed);
    EXPECT_EQ(init.error(), "CAP reads all ones: the device is not responding (removed?)");

    FakeController gone;
    gone.removed = true;
    Initializer later(gone, kAdmin);
    Initializer::TimePoint now{};
    EXPECT_EQ(run(later, now), State::failed);
    EXPECT_EQ(later.error(), "CSTS reads all ones: the device stopped responding");
}

TEST(NvmeInitializer, CapToOfZeroStillWaits) {
    FakeController regs(0x0000'0030'0001'07ffull);  // TO = 0
    Initializer init(regs, kAdmin);
    Initializer::TimePoint now{};
    EXPECT_EQ(run(init, now), State::done);
    EXPECT_EQ(init.ready_timeout(), 500ms);
}

TEST(NvmeStatus, NamesDecodeTypeAndCode) {
    EXPECT_EQ(status_name(0x0004), "Generic Command Status: Data Transfer Error (04h)");
    EXPECT_EQ(status_name(0x0080), "Generic Command Status: LBA Out of Range (80h)");
    EXPECT_EQ(status_name(0x0101), "Command Specific Status: Invalid Queue Identifier (01h)");
    EXPECT_EQ(status_name(0x0281), "Media and Data Integrity Error: Unrecovered Read Error (81h)");
    EXPECT_EQ(status_name(0x07ff), "status SCT 7 SC 0xff");
    EXPECT_EQ(status_name(0x0050), "status SCT 0 SC 0x50");
}

}  // namespace
}  // namespace ring3::nvme
