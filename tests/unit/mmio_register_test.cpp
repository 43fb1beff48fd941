#include "ring3/mmio/register.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstring>

namespace ring3::mmio {
namespace {

// Shaped like NVMe's CC and CSTS (NVMe Base 2.0 §3.1.3.5, §3.1.3.6) for the test.
struct Cc : Register<0x14, std::uint32_t, /*reserved*/ 0xff00000e> {
    using Iocqes = Field<23, 20>;
    using Iosqes = Field<19, 16>;
    using Shn = Field<15, 14>;
    using Mps = Field<10, 7>;
    using En = Field<0, 0>;
};
struct Csts : Register<0x1c, std::uint32_t, 0, /*w1c: NSSRO*/ 1u << 4> {
    using Nssro = Field<4, 4>;
    using Shst = Field<3, 2>;
    using Rdy = Field<0, 0>;
};
struct Cap : Register<0x00, std::uint64_t> {
    using Mpsmin = Field<51, 48>;
    using Dstrd = Field<35, 32>;
    using To = Field<31, 24>;
    using Mqes = Field<15, 0>;
};

class FakeRegisterFile final : public RegisterIo {
  public:
    std::size_t size() const noexcept override { return bytes.size(); }
    std::uint8_t read8(std::size_t o) override { return get<std::uint8_t>(o); }
    std::uint16_t read16(std::size_t o) override { return get<std::uint16_t>(o); }
    std::uint32_t read32(std::size_t o) override { return get<std::uint32_t>(o); }
    std::uint64_t read64(std::size_t o) override { return get<std::uint64_t>(o); }
    void write8(std::size_t o, std::uint8_t v) override { put(o, v); }
    void write16(std::size_t o, std::uint16_t v) override { put(o, v); }
    void write32(std::size_t o, std::uint32_t v) override { put(o, v); }
    void write64(std::size_t o, std::uint64_t v) override { put(o, v); }
    std::array<std::uint8_t, 64> bytes{};
    int writes = 0;

  private:
    template <typename T>
    T get(std::size_t o) {
        T v;
        std::memcpy(&v, bytes.data() + o, sizeof v);
        return v;
    }
    template <typename T>
    void put(std::size_t o, T v) {
        std::memcpy(bytes.data() + o, &v, sizeof v);
        ++writes;
    }
};

TEST(Register, FieldsReadFromOneLoad) {
    FakeRegisterFile regs;
    regs.write64(0, 0x0000'0030'0f01'07ffull);  // like QEMU's CAP: MQES 2047, TO 15, DSTRD 0
    const auto cap = regs.read<Cap>();
    EXPECT_EQ(cap.get<Cap::Mqes>(), 0x7ffu);
    EXPECT_EQ(cap.get<Cap::To>(), 0x0fu);
    EXPECT_EQ(cap.get<Cap::Dstrd>(), 0x0u);
    EXPECT_EQ(cap.get<Cap::Mpsmin>(), 0x0u);
}

TEST(Register, SetChangesOnlyItsFieldAndWritesOnce) {
    FakeRegisterFile regs;
    auto cc = regs.read<Cc>();
    cc.set<Cc::Iocqes>(4).set<Cc::Iosqes>(6).set<Cc::En>(1);
    cc.set<Cc::Mps>(0x1f);  // wider than the field: the excess is dropped, not spilled
    EXPECT_EQ(cc.get<Cc::Mps>(), 0xfu);
    EXPECT_EQ(cc.get<Cc::Shn>(), 0u);
    regs.writes = 0;
    regs.write(cc);
    EXPECT_EQ(regs.writes, 1);
    EXPECT_EQ(regs.read32(0x14), 0x00460781u);
}

TEST(Register, ReservedZeroBitsAreClearedOnWrite) {
    FakeRegisterFile regs;
    regs.write(Value<Cc>(0xffffffff));
    EXPECT_EQ(regs.read32(0x14), 0x00fffff1u);
}

TEST(Register, WriteOneToClearBitsAreDroppedForReadModifyWrite) {
    FakeRegisterFile regs;
    regs.write32(0x1c, (1u << 4) | 1u);  // NSSRO pending, RDY
    const auto csts = regs.read<Csts>();
    EXPECT_EQ(csts.get<Csts::Nssro>(), 1u);
    EXPECT_EQ(csts.without_w1c().get<Csts::Nssro>(), 0u);
    EXPECT_EQ(csts.without_w1c().get<Csts::Rdy>(), 1u);
}

TEST(Register, MappedIoUsesThePointer) {
    alignas(8) std::array<std::byte, 64> window{};
    MappedIo io(window.data(), window.size());
    io.write(Value<Csts>(1));
    EXPECT_EQ(io.read<Csts>().get<Csts::Rdy>(), 1u);
    EXPECT_EQ(std::to_integer<int>(window[0x1c]), 1);
}

}  // namespace
}  // namespace ring3::mmio
