// Typed device registers without macros (STYLE.md item 3; the shape of Genode's Register and
// Fuchsia's hwreg, none of their code).
//
//   // NVMe Base 2.0 §3.1.3.6: Controller Status
//   struct Csts : mmio::Register<0x1c, std::uint32_t> {
//       using Rdy = Field<0, 0>;
//       using Cfs = Field<1, 1>;
//       using Shst = Field<3, 2>;
//   };
//   if (regs.read<Csts::Rdy>()) ...
//   auto cc = regs.read<Cc>();                   // one load
//   cc.set<Cc::En>(1).set<Cc::Iosqes>(6);        // changed on a local copy...
//   regs.write(cc);                              // ...and stored once
//
// Fields are written high bit first, as datasheets print them. Bits a register declares
// reserved-zero are cleared on every write; write-one-to-clear fields are named so a
// read-modify-write does not clear them by accident (Value::without_w1c()).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace ring3::mmio {

template <typename T>
concept RegisterWord = std::same_as<T, std::uint8_t> || std::same_as<T, std::uint16_t> ||
    std::same_as<T, std::uint32_t> || std::same_as<T, std::uint64_t>;

// Bits hi..lo (inclusive) of a register.
template <unsigned Hi, unsigned Lo>
struct Field {
    static_assert(Hi >= Lo && Hi < 64, "a field is bits hi..lo with hi >= lo, inside 64 bits");
    static constexpr unsigned hi = Hi;
    static constexpr unsigned lo = Lo;
    static constexpr unsigned width = Hi - Lo + 1;
    static constexpr std::uint64_t max = width == 64 ? ~0ull : (1ull << width) - 1;
    static constexpr std::uint64_t mask = max << Lo;
};

// The value of a register: a word of its type with typed field access.
template <typename Reg>
class Value {
  public:
    using word_type = typename Reg::word_type;

    constexpr Value() = default;
    constexpr explicit Value(word_type raw) : raw_(raw) {}

    constexpr word_type raw() const { return raw_; }

    template <typename F>
    constexpr std::uint64_t get() const {
        static_assert(F::hi < sizeof(word_type) * 8, "field outside the register");
        return (static_cast<std::uint64_t>(raw_) >> F::lo) & F::max;
    }

    // Values wider than the field are a programming error caught at compile time when constant;
    // at run time the excess bits are dropped (never spilling into the next field).
    template <typename F>
    constexpr Value& set(std::uint64_t value) {
        static_assert(F::hi < sizeof(word_type) * 8, "field outside the register");
        const auto cleared = static_cast<std::uint64_t>(raw_) & ~F::mask;
        raw_ = static_cast<word_type>(cleared | ((value & F::max) << F::lo));
        return *this;
    }

    // The word to store: reserved-zero bits cleared.
    constexpr word_type for_write() const {
        return static_cast<word_type>(raw_ & ~static_cast<word_type>(Reg::reserved_zero));
    }
    // For read-modify-write of registers with write-one-to-clear bits: drop them, so writing
    // the value back does not clear events nobody handled.
    constexpr Value without_w1c() const {
        return Value(
            static_cast<word_type>(raw_ & ~static_cast<word_type>(Reg::write_one_to_clear)));
    }

  private:
    word_type raw_ = 0;
};

// A register at `Offset` in its window, of word type `Word`. `ReservedZero` and
// `WriteOneToClear` are bit masks.
template <std::size_t Offset, RegisterWord Word, std::uint64_t ReservedZero = 0,
          std::uint64_t WriteOneToClear = 0>
struct Register {
    using word_type = Word;
    static constexpr std::size_t offset = Offset;
    static constexpr std::uint64_t reserved_zero = ReservedZero;
    static constexpr std::uint64_t write_one_to_clear = WriteOneToClear;
    static_assert(Offset % sizeof(Word) == 0, "registers are naturally aligned");
    template <unsigned Hi, unsigned Lo>
    using Field = mmio::Field<Hi, Lo>;
};

// Element `index` of a register array (doorbells, per-queue registers): offset plus stride.
template <std::size_t Base, std::size_t Stride, RegisterWord Word>
struct RegisterArray {
    using word_type = Word;
    static constexpr std::size_t base = Base;
    static constexpr std::size_t stride = Stride;
    static constexpr std::size_t offset_of(std::size_t index) { return Base + index * Stride; }
};

// Where registers live. Implementations: a mapped BAR (MappedIo), a region accessed through the
// device's read/write calls (vfio-user without mmap), and a fake register file in tests.
class RegisterIo {
  public:
    virtual ~RegisterIo() = default;
    virtual std::size_t size() const noexcept = 0;
    virtual std::uint32_t read32(std::size_t offset) = 0;
    virtual void write32(std::size_t offset, std::uint32_t value) = 0;
    virtual std::uint64_t read64(std::size_t offset) = 0;
    virtual void write64(std::size_t offset, std::uint64_t value) = 0;
    virtual std::uint16_t read16(std::size_t offset) = 0;
    virtual void write16(std::size_t offset, std::uint16_t value) = 0;
    virtual std::uint8_t read8(std::size_t offset) = 0;
    virtual void write8(std::size_t offset, std::uint8_t value) = 0;

    template <typename Reg>
    Value<Reg> read() {
        static_assert(RegisterWord<typename Reg::word_type>);
        return Value<Reg>(load<typename Reg::word_type>(Reg::offset));
    }
    template <typename Reg>
    void write(const Value<Reg>& value) {
        store<typename Reg::word_type>(Reg::offset, value.for_write());
    }
    template <typename Reg>
    void write_raw(typename Reg::word_type raw) {
        write(Value<Reg>(raw));
    }

    template <typename Word>
    Word load(std::size_t offset) {
        if constexpr (std::same_as<Word, std::uint8_t>) {
            return read8(offset);
        } else if constexpr (std::same_as<Word, std::uint16_t>) {
            return read16(offset);
        } else if constexpr (std::same_as<Word, std::uint32_t>) {
            return read32(offset);
        } else {
            return read64(offset);
        }
    }
    template <typename Word>
    void store(std::size_t offset, Word value) {
        if constexpr (std::same_as<Word, std::uint8_t>) {
            write8(offset, value);
        } else if constexpr (std::same_as<Word, std::uint16_t>) {
            write16(offset, value);
        } else if constexpr (std::same_as<Word, std::uint32_t>) {
            write32(offset, value);
        } else {
            write64(offset, value);
        }
    }
};

// Registers in a mapped BAR: each access one volatile load or store of its width. Offsets are
// trusted (they come from register declarations, checked against size() at construction time of
// the driver), so this is the hot path's doorbell writer too.
class MappedIo final : public RegisterIo {
  public:
    MappedIo(std::byte* base, std::size_t size) noexcept : base_(base), size_(size) {}
    std::size_t size() const noexcept override { return size_; }
    std::byte* base() const noexcept { return base_; }

    std::uint8_t read8(std::size_t offset) override { return *ptr<std::uint8_t>(offset); }
    std::uint16_t read16(std::size_t offset) override { return *ptr<std::uint16_t>(offset); }
    std::uint32_t read32(std::size_t offset) override { return *ptr<std::uint32_t>(offset); }
    std::uint64_t read64(std::size_t offset) override { return *ptr<std::uint64_t>(offset); }
    void write8(std::size_t offset, std::uint8_t v) override { *ptr<std::uint8_t>(offset) = v; }
    void write16(std::size_t offset, std::uint16_t v) override { *ptr<std::uint16_t>(offset) = v; }
    void write32(std::size_t offset, std::uint32_t v) override { *ptr<std::uint32_t>(offset) = v; }
    void write64(std::size_t offset, std::uint64_t v) override { *ptr<std::uint64_t>(offset) = v; }

  private:
    template <typename T>
    volatile T* ptr(std::size_t offset) const noexcept {
        return reinterpret_cast<volatile T*>(base_ + offset);
    }
    std::byte* base_;
    std::size_t size_;
};

}  // namespace ring3::mmio
