// emu::PciFunction: BARs (handlers and memfd-backed areas), the client's DMA memory, MSI-X.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <thread>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/emu/server.hpp"

namespace ring3::emu {

void PciFunction::run_poller(const std::atomic<bool>& stop,
                             const std::function<bool()>& poll_once) {
    // Without this the kernel's default timer slack (50 µs) doubles each idle sleep, and the
    // first request after a pause waits for it.
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    auto idle_since = std::chrono::steady_clock::now();
    while (!stop.load(std::memory_order_relaxed)) {
        bool worked = false;
        {
            auto held = lock();
            worked = poll_once();
        }
        const auto now = std::chrono::steady_clock::now();
        if (worked) {
            idle_since = now;
        } else if (now - idle_since < std::chrono::microseconds(200)) {
            std::this_thread::yield();  // spin a little: the next request is usually close
        } else {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }
}
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint32_t kVectorMasked = 1u;  // PCI 3.0 §6.8.2.9 Vector Control bit 0

bool aligned(std::uint64_t value, std::uint64_t to) {
    return (value & (to - 1)) == 0;
}
// [a, a + a_size) inside [b, b + b_size), without overflow (sizes already known not to wrap).
bool inside(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
    return a >= b && a - b <= b_size && a_size <= b_size - (a - b);
}

}  // namespace

PciFunction::PciFunction(std::string name) : name_(std::move(name)), bars_(kBarCount) {
    disconnect_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!disconnect_) {
        throw Error::from_errno("create eventfd for", name_);
    }
}

PciFunction::~PciFunction() = default;

void PciFunction::set_bar_handlers(unsigned index, BarRead read, BarWrite write) {
    if (index >= kBarCount || config_.bar_size(index) == 0) {
        throw Error::invalid("set handlers of BAR", std::to_string(index), "BAR not declared");
    }
    bars_[index].read = std::move(read);
    bars_[index].write = std::move(write);
}

std::span<std::byte> PciFunction::add_memory_area(unsigned index, std::uint64_t offset,
                                                  std::uint64_t size, bool mmap_able) {
    const std::uint64_t bar_size = index < kBarCount ? config_.bar_size(index) : 0;
    if (bar_size == 0 || size == 0 || !aligned(offset, kPage) || !aligned(size, kPage) ||
        !inside(offset, size, 0, bar_size)) {
        throw Error::invalid("add memory area to BAR", std::to_string(index),
                             "not page aligned or outside the BAR");
    }
    Bar& bar = bars_[index];
    for (const MemoryArea& area : bar.areas) {
        if (offset < area.offset + area.size && area.offset < offset + size) {
            throw Error::invalid("add memory area to BAR", std::to_string(index),
                                 "overlaps another area");
        }
    }
    if (bar.memory == nullptr) {
        // One memfd for the whole function; each BAR with memory gets a BAR-sized slice of it,
        // so an area's offset in the fd is the BAR's slice start plus its offset in the BAR.
        if (!memory_fd_) {
            memory_fd_.reset(memfd_create(("ring3-emu-" + name_).c_str(), MFD_CLOEXEC));
            if (!memory_fd_) {
                throw Error::from_errno("memfd_create for", name_);
            }
        }
        const std::uint64_t slice = (bar_size + kPage - 1) & ~(kPage - 1);
        bar.fd_offset = memory_fd_size_;
        memory_fd_size_ += slice;
        if (ftruncate(memory_fd_.get(), static_cast<off_t>(memory_fd_size_)) != 0) {
            throw Error::from_errno("size memfd of", name_);
        }
        memory_views_.push_back(Mapping::map(memory_fd_.get(), slice, PROT_READ | PROT_WRITE,
                                             MAP_SHARED, bar.fd_offset, name_));
        bar.memory = memory_views_.back().data();
        bar.size = bar_size;
    }
    bar.areas.push_back(MemoryArea{offset, size, mmap_able});
    return {bar.memory + offset, size};
}

std::uint64_t PciFunction::region_size(unsigned region) const noexcept {
    if (region < kBarCount) {
        return config_.bar_size(region);
    }
    return region == kConfigRegion ? config_.size() : 0;
}

// --- BAR and config accesses ------------------------------------------------------------------

std::uint64_t PciFunction::msix_access(std::uint64_t offset, unsigned width,
                                       const std::uint64_t* value) {
    // PCI 3.0 §6.8.2: the table and PBA take aligned dword or qword accesses.
    if ((width != 4 && width != 8) || !aligned(offset, width)) {
        throw Error::invalid("access MSI-X structure of", name_,
                             "only aligned 4- and 8-byte accesses", EINVAL);
    }
    ensure_msix();
    const std::uint64_t table = config_.msix_table_offset();
    const unsigned vectors = config_.msix_vectors();
    std::uint64_t result = 0;
    for (unsigned part = 0; part < width / 4; ++part) {
        const std::uint64_t at = offset + 4 * part;
        std::uint32_t dword = 0;
        if (inside(at, 4, table, 16ull * vectors)) {
            const std::size_t slot = (at - table) / 4;
            if (value != nullptr) {
                dword = static_cast<std::uint32_t>(*value >> (32 * part));
                const bool control = slot % 4 == 3;
                msix_table_[slot] = control ? (dword & kVectorMasked) : dword;
                const unsigned vector = static_cast<unsigned>(slot / 4);
                if (control && !msix_vector_masked(vector) && msix_pending_[vector]) {
                    signal(vector);  // §6.8.2.9: a pending message is sent on unmask
                }
            }
            dword = msix_table_[slot];
        } else {  // the PBA (read-only)
            const std::uint64_t bit0 = (at - config_.msix_pba_offset()) * 8;
            for (unsigned bit = 0; bit < 32; ++bit) {
                if (bit0 + bit < vectors && msix_pending_[bit0 + bit]) {
                    dword |= 1u << bit;
                }
            }
        }
        result |= std::uint64_t{dword} << (32 * part);
    }
    return result;
}

// Whether an access falls inside the MSI-X table or PBA (PCI 3.0 §6.8.2), served here.
bool PciFunction::msix_structure(unsigned region, std::uint64_t offset,
                                 std::uint64_t size) const noexcept {
    const unsigned vectors = config_.msix_vectors();
    return vectors != 0 && region == config_.msix_bar() &&
           (inside(offset, size, config_.msix_table_offset(), 16ull * vectors) ||
            inside(offset, size, config_.msix_pba_offset(), 8ull * ((vectors + 63) / 64)));
}

void PciFunction::region_read(unsigned region, std::uint64_t offset, std::span<std::byte> data) {
    if (region == kConfigRegion) {
        config_.read(offset, data);
        return;
    }
    const Bar& b = bars_.at(region);
    const unsigned width = static_cast<unsigned>(data.size());
    std::uint64_t value = 0;
    if (msix_structure(region, offset, data.size())) {
        value = msix_access(offset, width, nullptr);
        std::memcpy(data.data(), &value, data.size());
        return;
    }
    for (const MemoryArea& area : b.areas) {
        if (inside(offset, data.size(), area.offset, area.size)) {
            std::memcpy(data.data(), b.memory + offset, data.size());
            return;
        }
    }
    if ((width != 1 && width != 2 && width != 4 && width != 8) || !aligned(offset, width)) {
        throw Error::invalid("read BAR" + std::to_string(region) + " of", name_,
                             "registers take aligned 1-, 2-, 4- and 8-byte accesses");
    }
    if (b.read) {
        value = b.read(offset, width);
    }
    std::memcpy(data.data(), &value, data.size());
}

void PciFunction::region_write(unsigned region, std::uint64_t offset,
                               std::span<const std::byte> data) {
    if (region == kConfigRegion) {
        const bool flr = config_.write(offset, data);
        if (flr) {
            reset_device();
        } else {
            config_written();
        }
        return;
    }
    Bar& b = bars_.at(region);
    const unsigned width = static_cast<unsigned>(data.size());
    std::uint64_t value = 0;
    if (msix_structure(region, offset, data.size())) {
        if (inside(offset, data.size(), config_.msix_table_offset(),
                   16ull * config_.msix_vectors())) {
            std::memcpy(&value, data.data(), std::min<std::size_t>(data.size(), 8));
            msix_access(offset, width, &value);
        }
        return;  // the PBA is read-only
    }
    for (const MemoryArea& area : b.areas) {
        if (inside(offset, data.size(), area.offset, area.size)) {
            std::memcpy(b.memory + offset, data.data(), data.size());
            return;
        }
    }
    if ((width != 1 && width != 2 && width != 4 && width != 8) || !aligned(offset, width)) {
        throw Error::invalid("write BAR" + std::to_string(region) + " of", name_,
                             "registers take aligned 1-, 2-, 4- and 8-byte accesses");
    }
    std::memcpy(&value, data.data(), data.size());
    if (b.write) {
        b.write(offset, width, value);
    }
}

void PciFunction::config_written() {
    // Unmasking the whole function sends what is pending (PCI 3.0 §6.8.2.3).
    ensure_msix();
    for (unsigned v = 0; v < msix_pending_.size(); ++v) {
        if (msix_pending_[v] && !msix_vector_masked(v)) {
            signal(v);
        }
    }
}

// --- DMA --------------------------------------------------------------------------------------

void PciFunction::map_dma(std::uint64_t iova, std::uint64_t size, std::uint64_t fd_offset,
                          std::uint32_t flags, UniqueFd fd, std::uint32_t max_maps) {
    const std::string what = fmt::format("[{:#x}, +{:#x})", iova, size);
    if (size == 0 || iova + size < iova || !aligned(iova, kPage) || !aligned(size, kPage) ||
        !aligned(fd_offset, kPage) || fd_offset + size < fd_offset) {
        throw Error::invalid("DMA_MAP", what, "address, size and offset must be page aligned");
    }
    if ((flags & ~(vfio_user::kDmaRead | vfio_user::kDmaWrite)) != 0 || flags == 0) {
        throw Error::invalid("DMA_MAP", what, fmt::format("bad flags {:#x}", flags));
    }
    if (dma_.size() >= max_maps) {
        throw Error::invalid("DMA_MAP", what, "too many mappings", ENOSPC);
    }
    auto next = dma_.lower_bound(iova);
    if (next != dma_.end() && next->first < iova + size) {
        throw Error::invalid("DMA_MAP", what, "overlaps an existing mapping", EEXIST);
    }
    if (next != dma_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second.size > iova) {
            throw Error::invalid("DMA_MAP", what, "overlaps an existing mapping", EEXIST);
        }
    }
    // A mapping past the file's end would fault (SIGBUS) on first touch: refuse it now.
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) {
        throw Error::from_errno("DMA_MAP fstat", what);
    }
    if (!S_ISREG(st.st_mode) || fd_offset + size > static_cast<std::uint64_t>(st.st_size)) {
        throw Error::invalid("DMA_MAP", what, "the fd is not a file holding offset + size bytes");
    }
    int prot = 0;
    if ((flags & vfio_user::kDmaRead) != 0) {
        prot |= PROT_READ;
    }
    if ((flags & vfio_user::kDmaWrite) != 0) {
        prot |= PROT_READ | PROT_WRITE;
    }
    DmaRegion region;
    region.size = size;
    region.flags = flags;
    region.mapping = Mapping::map(fd.get(), size, prot, MAP_SHARED, fd_offset, what);
    region.base = region.mapping.data();
    dma_.emplace(iova, std::move(region));
}

void PciFunction::unmap_dma(std::uint64_t iova, std::uint64_t size) {
    const std::string what = fmt::format("[{:#x}, +{:#x})", iova, size);
    if (size == 0 || iova + size < iova) {
        throw Error::invalid("DMA_UNMAP", what, "empty or wrapping range");
    }
    auto it = dma_.lower_bound(iova);
    if (it != dma_.begin() && std::prev(it)->first + std::prev(it)->second.size > iova) {
        throw Error::invalid("DMA_UNMAP", what, "cuts a mapping in two");
    }
    auto end = it;
    while (end != dma_.end() && end->first < iova + size) {
        if (end->first + end->second.size > iova + size) {
            throw Error::invalid("DMA_UNMAP", what, "cuts a mapping in two");
        }
        ++end;
    }
    dma_.erase(it, end);
}

std::byte* PciFunction::dma(std::uint64_t iova, std::uint64_t length, bool write) noexcept {
    auto it = dma_.upper_bound(iova);
    if (it == dma_.begin()) {
        return nullptr;
    }
    --it;
    const DmaRegion& region = it->second;
    if (!inside(iova, length, it->first, region.size)) {
        return nullptr;
    }
    const std::uint32_t need = write ? vfio_user::kDmaWrite : vfio_user::kDmaRead;
    if ((region.flags & need) == 0) {
        return nullptr;
    }
    return region.base + (iova - it->first);
}

bool PciFunction::dma_read(std::uint64_t iova, std::span<std::byte> out) noexcept {
    const std::byte* from = dma(iova, out.size(), false);
    if (from == nullptr) {
        return false;
    }
    std::memcpy(out.data(), from, out.size());
    return true;
}

bool PciFunction::dma_write(std::uint64_t iova, std::span<const std::byte> in) noexcept {
    std::byte* to = dma(iova, in.size(), true);
    if (to == nullptr) {
        return false;
    }
    std::memcpy(to, in.data(), in.size());
    return true;
}

// --- Interrupts -------------------------------------------------------------------------------

void PciFunction::ensure_msix() {
    // PCI 3.0 §6.8.2.9: after reset every vector is masked until software unmasks it.
    const std::size_t vectors = config_.msix_vectors();
    if (msix_table_.size() != 4 * vectors) {
        msix_table_.assign(4 * vectors, 0);
        for (std::size_t v = 0; v < vectors; ++v) {
            msix_table_[4 * v + 3] = kVectorMasked;
        }
        msix_pending_.assign(vectors, false);
    }
}

bool PciFunction::msix_vector_masked(unsigned vector) const noexcept {
    if (!config_.msix_enabled()) {
        return false;  // the client did not take MSI-X in config space: eventfds decide
    }
    return config_.msix_function_masked() ||
           (vector < msix_table_.size() / 4 && (msix_table_[4 * vector + 3] & kVectorMasked));
}

void PciFunction::signal(unsigned vector) noexcept {
    msix_pending_[vector] = false;
    if (vector < msix_fds_.size() && msix_fds_[vector]) {
        const std::uint64_t one = 1;
        // An eventfd only refuses a write at a count of 2^64 - 2: nothing to do then anyway.
        [[maybe_unused]] const ssize_t n = ::write(msix_fds_[vector].get(), &one, sizeof one);
    }
}

bool PciFunction::raise_msix(unsigned vector) noexcept {
    if (vector >= config_.msix_vectors()) {
        return false;
    }
    ensure_msix();
    if (msix_vector_masked(vector)) {
        msix_pending_[vector] = true;
        return false;
    }
    if (vector >= msix_fds_.size() || !msix_fds_[vector]) {
        return false;
    }
    signal(vector);
    return true;
}

void PciFunction::set_msix_eventfds(unsigned start, std::vector<UniqueFd> fds) {
    if (msix_fds_.size() < config_.msix_vectors()) {
        msix_fds_.resize(config_.msix_vectors());
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
        msix_fds_.at(start + i) = std::move(fds[i]);
    }
}

void PciFunction::clear_msix_eventfds() noexcept {
    for (UniqueFd& fd : msix_fds_) {
        fd.reset();
    }
}

void PciFunction::detach_client() noexcept {
    dma_.clear();
    clear_msix_eventfds();
    if (model_ != nullptr) {
        model_->client_detached();
    }
}

void PciFunction::reset_device() {
    config_.reset();
    msix_table_.clear();  // rebuilt, all vectors masked (§6.8.2.9), at the next use
    msix_pending_.clear();
    if (model_ != nullptr) {
        model_->reset();
    }
}

void PciFunction::request_disconnect() noexcept {
    disconnect_requested_.store(true);
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(disconnect_.get(), &one, sizeof one);
}

bool PciFunction::take_disconnect_request() noexcept {
    std::uint64_t count = 0;
    [[maybe_unused]] const ssize_t n = ::read(disconnect_.get(), &count, sizeof count);
    return disconnect_requested_.exchange(false);
}

}  // namespace ring3::emu
