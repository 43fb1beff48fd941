// FakeDevice: a ring3::Device made of process memory, for drivers' unit tests (STYLE.md item 10:
// doubles at seams). It has
//   - config space (4096 bytes) with a header and a capability list the test builds;
//   - per BAR a register file (memfd-backed, so a "mappable" BAR can be mapped like a real one)
//     with read and write hooks that see every access made through region_read/region_write;
//     accesses through a mapping are plain memory (no hook sees them);
//   - an IOVA space backed by process memory: the arena's chunks get deterministic IOVAs, the
//     device side turns an IOVA back into memory with dma(), and every IOVA the device model
//     used (and every one it could not translate) is recorded;
//   - scriptable interrupts (counts per kind; raise() signals an enabled vector's eventfd) and
//     resets (counted, with a hook).
// Nothing here knows a particular device: models (a virtio device, an NVMe controller) are built
// on it in the tests, through the hooks.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ring3/core/error.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/device/device.hpp"
#include "ring3/dma/arena.hpp"

namespace ring3::testing {

// The device's view of DMA: chunks mapped at deterministic IOVAs (one contiguous run per chunk,
// like an IOMMU, starting at `base`), translated back for the device model.
class FakeDmaSpace final : public dma::IovaSpace {
  public:
    explicit FakeDmaSpace(std::uint64_t base = 0x4000'0000) : next_(base) {}

    std::size_t granule() const noexcept override { return kAnyGranule; }
    void map(const dma::ChunkView& chunk, std::span<std::uint64_t> iovas) override {
        const std::uint64_t step = chunk.size / iovas.size();
        for (std::size_t i = 0; i < iovas.size(); ++i) {
            iovas[i] = next_ + i * step;
        }
        mappings_.push_back({next_, chunk.size, chunk.cpu});
        next_ += chunk.size + 0x10'0000;  // a hole between chunks: straying addresses fault
    }
    void unmap(const dma::ChunkView& chunk,
               std::span<const std::uint64_t> iovas) noexcept override {
        for (auto it = mappings_.begin(); it != mappings_.end(); ++it) {
            if (!iovas.empty() && it->iova == iovas[0] && it->size == chunk.size) {
                mappings_.erase(it);
                return;
            }
        }
    }
    std::string name() const override { return "fake DMA space"; }

    // The memory behind [iova, iova + length), or nullptr (recorded in `faults`) when any of it
    // is not mapped. Every successful translation is recorded in `accessed`.
    std::byte* dma(std::uint64_t iova, std::size_t length) {
        for (const auto& m : mappings_) {
            if (iova >= m.iova && length <= m.size && iova - m.iova <= m.size - length) {
                accessed.push_back(iova);
                return m.cpu + (iova - m.iova);
            }
        }
        faults.push_back(iova);
        return nullptr;
    }
    std::vector<std::uint64_t> accessed;
    std::vector<std::uint64_t> faults;

  private:
    struct Mapped {
        std::uint64_t iova;
        std::size_t size;
        std::byte* cpu;
    };
    std::uint64_t next_;
    std::vector<Mapped> mappings_;
};

class FakeDevice final : public Device {
  public:
    struct Access {
        bool write = false;
        unsigned region = 0;
        std::uint64_t offset = 0;
        unsigned width = 0;
        std::uint64_t value = 0;
    };
    // A write hook sees the value after it was stored in the register file; a read hook runs
    // before the read and may change the register file (or return a value to read instead).
    using WriteHook =
        std::function<void(std::uint64_t offset, unsigned width, std::uint64_t value)>;
    using ReadHook =
        std::function<std::optional<std::uint64_t>(std::uint64_t offset, unsigned width)>;

    explicit FakeDevice(std::string name = "fake:0000:00:04.0") : name_(std::move(name)) {
        config_.fill(0);
    }
    ~FakeDevice() override {
        for (auto& fds : enabled_) {
            for (int fd : fds) {
                ::close(fd);
            }
        }
    }

    std::string name() const override { return name_; }
    std::optional<pci::Address> address() const override { return std::nullopt; }

    // ---- config space ----
    void set_ids(std::uint16_t vendor, std::uint16_t device, std::uint32_t class_code,
                 std::uint8_t revision = 1) {
        put16(0x00, vendor);
        put16(0x02, device);
        config_[0x08] = revision;
        config_[0x09] = static_cast<std::uint8_t>(class_code);
        config_[0x0a] = static_cast<std::uint8_t>(class_code >> 8);
        config_[0x0b] = static_cast<std::uint8_t>(class_code >> 16);
        config_[0x0e] = 0;  // header type 0
    }
    // Appends a capability (`body`: the bytes after ID and Next) to the list; returns its offset.
    std::uint16_t add_capability(std::uint8_t id, std::span<const std::uint8_t> body) {
        const std::uint16_t at = next_cap_;
        config_[at] = id;
        config_[at + 1] = 0;
        std::memcpy(&config_[at + 2], body.data(), body.size());
        if (last_cap_ == 0) {
            config_[0x34] = static_cast<std::uint8_t>(at);
            put16(0x06, static_cast<std::uint16_t>(get16(0x06) | 0x10));  // capabilities list
        } else {
            config_[last_cap_ + 1] = static_cast<std::uint8_t>(at);
        }
        last_cap_ = at;
        next_cap_ = static_cast<std::uint16_t>((at + 2 + body.size() + 3) & ~3u);
        return at;
    }
    std::array<std::uint8_t, 4096>& config() noexcept { return config_; }

    void read_config(std::uint32_t offset, std::span<std::byte> out) override {
        check_config(offset, out.size());
        std::memcpy(out.data(), &config_[offset], out.size());
    }
    void write_config(std::uint32_t offset, std::span<const std::byte> in) override {
        check_config(offset, in.size());
        std::memcpy(&config_[offset], in.data(), in.size());
    }

    // ---- regions ----
    void add_bar(unsigned index, std::size_t size, bool mappable) {
        Bar bar;
        bar.size = size;
        bar.mappable = mappable;
        bar.memfd = UniqueFd(::memfd_create("ring3-fake-bar", MFD_CLOEXEC));
        if (!bar.memfd || ::ftruncate(bar.memfd.get(), static_cast<off_t>(size)) != 0) {
            throw Error::from_errno("create fake BAR", name_);
        }
        void* view = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, bar.memfd.get(), 0);
        if (view == MAP_FAILED) {
            throw Error::from_errno("map fake BAR", name_);
        }
        bar.view = Mapping(view, size);
        bars_[index] = std::move(bar);
    }
    std::byte* bar(unsigned index) { return bar_at(index).view.data(); }
    void set_mappable(unsigned index, bool mappable) { bar_at(index).mappable = mappable; }
    template <typename T>
    T peek(unsigned index, std::uint64_t offset) {
        T value;
        std::memcpy(&value, bar(index) + offset, sizeof value);
        return value;
    }
    template <typename T>
    void poke(unsigned index, std::uint64_t offset, T value) {
        std::memcpy(bar(index) + offset, &value, sizeof value);
    }
    void on_write(unsigned index, WriteHook hook) {
        bar_at(index).write_hooks.push_back(std::move(hook));
    }
    void on_read(unsigned index, ReadHook hook) {
        bar_at(index).read_hooks.push_back(std::move(hook));
    }
    std::vector<Access> accesses;  // every region_read/region_write, in order
    unsigned maps = 0;             // map_region calls

    RegionInfo region_info(unsigned index) override {
        RegionInfo info;
        info.index = index;
        const auto it = bars_.find(index);
        if (it != bars_.end()) {
            info.size = it->second.size;
            info.readable = info.writable = true;
            info.mappable = it->second.mappable;
        }
        return info;
    }
    RegionMapping map_region(unsigned index, MapMode) override {
        Bar& bar = bar_at(index);
        if (!bar.mappable) {
            throw Error::invalid("map region", name_, "the fake BAR is not mappable");
        }
        void* view =
            ::mmap(nullptr, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, bar.memfd.get(), 0);
        if (view == MAP_FAILED) {
            throw Error::from_errno("map fake BAR", name_);
        }
        ++maps;
        return RegionMapping{Mapping(view, bar.size), 0, {}};
    }
    void region_read(unsigned index, std::uint64_t offset, std::span<std::byte> out) override {
        Bar& bar = checked(index, offset, out.size());
        std::uint64_t value = 0;
        std::optional<std::uint64_t> replaced;
        for (auto& hook : bar.read_hooks) {
            if (auto v = hook(offset, static_cast<unsigned>(out.size()))) {
                replaced = v;
            }
        }
        if (replaced) {
            value = *replaced;
        } else {
            std::memcpy(&value, bar.view.data() + offset, out.size());
        }
        std::memcpy(out.data(), &value, out.size());
        accesses.push_back({false, index, offset, static_cast<unsigned>(out.size()), value});
    }
    void region_write(unsigned index, std::uint64_t offset,
                      std::span<const std::byte> in) override {
        Bar& bar = checked(index, offset, in.size());
        std::uint64_t value = 0;
        std::memcpy(&value, in.data(), in.size());
        accesses.push_back({true, index, offset, static_cast<unsigned>(in.size()), value});
        std::memcpy(bar.view.data() + offset, in.data(), in.size());
        for (auto& hook : bar.write_hooks) {
            hook(offset, static_cast<unsigned>(in.size()), value);
        }
    }

    // ---- interrupts ----
    void set_irq_count(IrqKind kind, unsigned count) {
        irq_counts_[static_cast<unsigned>(kind)] = count;
    }
    unsigned irq_count(IrqKind kind) override { return irq_counts_[static_cast<unsigned>(kind)]; }
    std::vector<irq::Interrupt> enable_irqs(IrqKind kind, unsigned count) override {
        if (count > irq_count(kind)) {
            throw Error::invalid("enable interrupts", name_, "more vectors than the device has");
        }
        std::vector<irq::Interrupt> result;
        auto& mine = enabled_[static_cast<unsigned>(kind)];
        mine.clear();
        for (unsigned i = 0; i < count; ++i) {
            result.push_back(irq::Interrupt::make_eventfd(name_ + " vector " + std::to_string(i)));
            mine.push_back(::dup(result.back().fd()));
        }
        return result;
    }
    void disable_irqs(IrqKind kind) override {
        for (int fd : enabled_[static_cast<unsigned>(kind)]) {
            ::close(fd);
        }
        enabled_[static_cast<unsigned>(kind)].clear();
        ++disables;
    }
    void unmask_intx() override {}
    unsigned enabled_vectors(IrqKind kind) const {
        return static_cast<unsigned>(enabled_[static_cast<unsigned>(kind)].size());
    }
    // Signals vector `vector` of `kind` as the device would (false when it is not enabled).
    bool raise(IrqKind kind, unsigned vector) {
        auto& fds = enabled_[static_cast<unsigned>(kind)];
        if (vector >= fds.size()) {
            return false;
        }
        const std::uint64_t one = 1;
        return ::write(fds[vector], &one, sizeof one) == sizeof one;
    }
    unsigned disables = 0;

    // ---- DMA and control ----
    dma::IovaSpace& iova_space() override { return dma_; }
    FakeDmaSpace& dma() noexcept { return dma_; }
    bool can_reset() override { return resettable; }
    void reset() override {
        ++resets;
        if (on_reset) {
            on_reset();
        }
    }
    bool resettable = true;
    unsigned resets = 0;
    std::function<void()> on_reset;

  private:
    struct Bar {
        std::size_t size = 0;
        bool mappable = false;
        UniqueFd memfd;
        Mapping view;
        std::vector<WriteHook> write_hooks;
        std::vector<ReadHook> read_hooks;
    };
    Bar& bar_at(unsigned index) {
        const auto it = bars_.find(index);
        if (it == bars_.end()) {
            throw Error::invalid("access region " + std::to_string(index), name_, "no such BAR");
        }
        return it->second;
    }
    Bar& checked(unsigned index, std::uint64_t offset, std::size_t size) {
        Bar& bar = bar_at(index);
        if ((size != 1 && size != 2 && size != 4 && size != 8) || offset > bar.size ||
            size > bar.size - offset) {
            throw Error::invalid("access region " + std::to_string(index), name_,
                                 "bad offset or size");
        }
        return bar;
    }
    void check_config(std::uint32_t offset, std::size_t size) const {
        if (offset > config_.size() || size > config_.size() - offset) {
            throw Error::invalid("access config space", name_, "past the end");
        }
    }
    void put16(std::size_t at, std::uint16_t v) { std::memcpy(&config_[at], &v, 2); }
    std::uint16_t get16(std::size_t at) const {
        std::uint16_t v;
        std::memcpy(&v, &config_[at], 2);
        return v;
    }

    std::string name_;
    std::array<std::uint8_t, 4096> config_{};
    std::uint16_t next_cap_ = 0x40;
    std::uint16_t last_cap_ = 0;
    std::map<unsigned, Bar> bars_;
    std::array<unsigned, 5> irq_counts_{};
    std::array<std::vector<int>, 5> enabled_;
    FakeDmaSpace dma_;
};

}  // namespace ring3::testing
