// The vfio-user server side (QEMU docs/interop/vfio-user.rst, protocol 0.1): an emulated PCI
// function and the server that carries it to one client at a time over an AF_UNIX socket.
//
// Three pieces, built in this order and destroyed in the reverse one:
//   PciFunction  what the client sees: config space (with capabilities, MSI-X), up to six BARs
//                served by handlers or by memory (parts of it mmap-able by the client through
//                a memfd: the fast path), the client's DMA memory as mapped fds, MSI-X eventfds;
//   DeviceModel  the device's behaviour (e.g. emu::NvmeController): it declares the config space
//                and BARs on the function in its constructor and handles resets;
//   Server       the socket and the message loop (VERSION, DEVICE_GET_INFO, REGION_*, DMA_*,
//                DEVICE_SET_IRQS, DEVICE_RESET); on disconnect it drops the client's DMA memory
//                and eventfds, keeps the device state and accepts the next client.
//
// Threads: the server's loop runs in one thread; a model may run its own (a doorbell poller).
// Both take PciFunction::lock() around any use of the function or the model's state: the server
// holds it while it handles a message (BAR handlers and reset() run under it), a model's thread
// while it touches DMA memory or raises interrupts. Pointers from dma() are valid only under it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "ring3/core/mapping.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/vfio_user/protocol.hpp"

namespace ring3::emu {

// VFIO PCI region and IRQ indexes (linux/vfio.h), which vfio-user reuses.
inline constexpr unsigned kBarCount = 6;
inline constexpr unsigned kRomRegion = 6;
inline constexpr unsigned kConfigRegion = 7;
inline constexpr unsigned kRegionCount = 9;  // BAR0-5, ROM, config, VGA
inline constexpr unsigned kIrqCount = 5;     // INTx, MSI, MSI-X, ERR, REQ
inline constexpr unsigned kMsixIrq = 2;

// Config space contents and which bits a client may change, built by a model (PCI Local Bus 3.0
// §6.1 header, §6.2.5 BARs, §6.7 capability list, §6.8.2 MSI-X; PCI Express Base 4.0 §7.5.3).
class ConfigSpace {
  public:
    ConfigSpace();

    // Identity: vendor/device, 24-bit class code, revision; subsystem ids default to the same.
    void set_identity(std::uint16_t vendor, std::uint16_t device, std::uint32_t class_code,
                      std::uint8_t revision = 0);
    // A memory BAR of `size` bytes (a power of two, at least 16): its register reads back
    // ~(size - 1) after all ones are written (sizing, §6.2.5.1). A 64-bit BAR takes two slots.
    void add_bar(unsigned index, std::uint64_t size, bool is_64bit, bool prefetchable = false);
    // A capability in the standard list: `body` is what follows its id and next pointer; the
    // bits set in `writable` (same length as body, or empty) may be written. Returns its offset.
    std::uint8_t add_capability(std::uint8_t id, std::span<const std::uint8_t> body,
                                std::span<const std::uint8_t> writable = {});
    // MSI-X (PCI 3.0 §6.8.2): `vectors` entries, table and PBA in BAR `bar` at the offsets
    // given (8-byte aligned). Message Control's Enable and Function Mask are writable.
    void add_msix(unsigned vectors, unsigned bar, std::uint32_t table_offset,
                  std::uint32_t pba_offset);
    // A PCI Express endpoint capability (PCIe 4.0 §7.5.3) with Function Level Reset: config
    // space becomes 4 KiB. A write of Initiate FLR calls the reset hook.
    void add_pcie_endpoint();

    std::size_t size() const noexcept { return size_; }
    std::span<const std::uint8_t> bytes() const noexcept { return {bytes_.data(), size_}; }
    std::uint64_t bar_size(unsigned index) const noexcept;
    bool bar_is_upper_half(unsigned index) const noexcept;

    // Reads/writes whole byte ranges inside size() (the caller checks bounds); writes change
    // only writable bits. Returns true when a write asked for a function level reset.
    void read(std::size_t offset, std::span<std::byte> out) const noexcept;
    bool write(std::size_t offset, std::span<const std::byte> in) noexcept;

    // MSI-X state, as the client last wrote it.
    unsigned msix_vectors() const noexcept { return msix_vectors_; }
    unsigned msix_bar() const noexcept { return msix_bar_; }
    std::uint32_t msix_table_offset() const noexcept { return msix_table_; }
    std::uint32_t msix_pba_offset() const noexcept { return msix_pba_; }
    bool msix_enabled() const noexcept;
    bool msix_function_masked() const noexcept;

    // Back to the values a model declared (DEVICE_RESET, FLR): writable bits cleared.
    void reset() noexcept;

  private:
    std::uint8_t allocate(std::size_t length);
    void put8(std::size_t at, std::uint8_t value, std::uint8_t writable = 0);
    void put16(std::size_t at, std::uint16_t value, std::uint16_t writable = 0);
    void put32(std::size_t at, std::uint32_t value, std::uint32_t writable = 0);

    std::vector<std::uint8_t> bytes_;
    std::vector<std::uint8_t> writable_;
    std::vector<std::uint8_t> initial_;
    std::size_t size_ = 256;
    std::size_t next_cap_ = 0x40;
    std::uint8_t last_cap_ = 0;  // offset of the last capability (its next pointer is patched)
    std::uint64_t bar_sizes_[kBarCount] = {};
    bool upper_half_[kBarCount] = {};
    unsigned msix_vectors_ = 0;
    unsigned msix_bar_ = 0;
    std::uint32_t msix_table_ = 0;
    std::uint32_t msix_pba_ = 0;
    std::uint8_t msix_cap_ = 0;
    std::uint8_t pcie_cap_ = 0;
};

// A trapped BAR access: `width` is 1, 2, 4 or 8 and the offset is inside the BAR.
using BarRead = std::function<std::uint64_t(std::uint64_t offset, unsigned width)>;
using BarWrite = std::function<void(std::uint64_t offset, unsigned width, std::uint64_t value)>;

class DeviceModel;

class PciFunction {
  public:
    explicit PciFunction(std::string name);
    PciFunction(const PciFunction&) = delete;
    PciFunction& operator=(const PciFunction&) = delete;
    ~PciFunction();

    const std::string& name() const noexcept { return name_; }
    ConfigSpace& config() noexcept { return config_; }

    // --- Set up by a model before the server starts ------------------------------------------
    // BAR `index` (declared in config()) is served by these handlers; accesses to its memory
    // areas (below) and to the MSI-X table/PBA do not reach them.
    void set_bar_handlers(unsigned index, BarRead read, BarWrite write);
    // Gives [offset, offset + size) of BAR `index` memory backing (page aligned, zeroed); with
    // `mmap_able` the client may map it (a sparse-mmap area of the region's info, sent as a
    // memfd). Returns the server's view of it; the model polls it (e.g. doorbells).
    std::span<std::byte> add_memory_area(unsigned index, std::uint64_t offset, std::uint64_t size,
                                         bool mmap_able);
    void set_model(DeviceModel* model) noexcept { model_ = model; }

    // --- For a model, under lock() -----------------------------------------------------------
    std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(mutex_); }
    // Host pointer to client memory [iova, iova + length) when it lies inside one DMA mapping
    // that allows `write` (device writes to memory) or reads; nullptr otherwise.
    std::byte* dma(std::uint64_t iova, std::uint64_t length, bool write) noexcept;
    // Copies through dma(); false when the range is not mapped.
    bool dma_read(std::uint64_t iova, std::span<std::byte> out) noexcept;
    bool dma_write(std::uint64_t iova, std::span<const std::byte> in) noexcept;
    // Signals MSI-X vector `vector` (eventfd write). When the client enabled MSI-X in config
    // space, the function mask and the vector's mask bit are honoured (a masked vector's PBA bit
    // is set and it fires on unmask); when it did not (VFIO-style clients leave that to the
    // kernel), every vector with an eventfd fires. Returns false when nothing was signalled.
    bool raise_msix(unsigned vector) noexcept;
    // A model's polling thread: calls `poll_once` under lock() until `stop` is set; spins (yield)
    // for 200 µs after the last call that found work, then sleeps 50 µs per round, with a 1 µs
    // timer slack so the sleeps are not stretched. Shared by every device model.
    void run_poller(const std::atomic<bool>& stop, const std::function<bool()>& poll_once);
    // Asks the server to drop the connection (fault injection: a device that vanishes). Thread
    // safe, no lock needed.
    void request_disconnect() noexcept;
    std::size_t dma_mapping_count() const noexcept { return dma_.size(); }

    // --- For the server, under lock() --------------------------------------------------------
    struct MemoryArea {
        std::uint64_t offset = 0;  // in the BAR
        std::uint64_t size = 0;
        bool mmap_able = false;
    };
    struct Bar {
        std::uint64_t size = 0;
        BarRead read;
        BarWrite write;
        std::vector<MemoryArea> areas;
        std::uint64_t fd_offset = 0;  // where the BAR's memory starts in memory_fd()
        std::byte* memory = nullptr;  // the server's view of it (whole BAR), or null
    };
    const Bar& bar(unsigned index) const { return bars_.at(index); }
    int memory_fd() const noexcept { return memory_fd_.get(); }
    std::uint64_t region_size(unsigned region) const noexcept;
    // Region access at [offset, offset + data.size()), already bounds-checked by the caller.
    // Throws ring3::Error (EINVAL) for an access a handler cannot take (width, alignment).
    void region_read(unsigned region, std::uint64_t offset, std::span<std::byte> data);
    void region_write(unsigned region, std::uint64_t offset, std::span<const std::byte> data);
    // DMA_MAP / DMA_UNMAP: throws ring3::Error (EINVAL, EEXIST, ENOSPC, ENOENT) naming why.
    void map_dma(std::uint64_t iova, std::uint64_t size, std::uint64_t fd_offset,
                 std::uint32_t flags, UniqueFd fd, std::uint32_t max_maps);
    void unmap_dma(std::uint64_t iova, std::uint64_t size);
    // DEVICE_SET_IRQS for MSI-X: eventfds for vectors [start, start + fds.size()), or none.
    void set_msix_eventfds(unsigned start, std::vector<UniqueFd> fds);
    void clear_msix_eventfds() noexcept;
    void detach_client() noexcept;  // drops DMA mappings and eventfds
    void reset_device();            // config space, MSI-X table, then the model
    int disconnect_fd() const noexcept { return disconnect_.get(); }
    bool take_disconnect_request() noexcept;

  private:
    struct DmaRegion {
        std::uint64_t size = 0;
        std::uint32_t flags = 0;
        Mapping mapping;
        std::byte* base = nullptr;  // iova's host address (mapping + page offset)
    };
    std::uint64_t msix_access(std::uint64_t offset, unsigned width, const std::uint64_t* value);
    void ensure_msix();
    bool msix_structure(unsigned region, std::uint64_t offset, std::uint64_t size) const noexcept;
    bool msix_vector_masked(unsigned vector) const noexcept;
    void signal(unsigned vector) noexcept;
    void config_written();

    std::string name_;
    std::mutex mutex_;
    ConfigSpace config_;
    std::vector<Bar> bars_;
    UniqueFd memory_fd_;
    std::uint64_t memory_fd_size_ = 0;
    std::vector<Mapping> memory_views_;
    std::map<std::uint64_t, DmaRegion> dma_;  // by IOVA
    std::vector<std::uint32_t> msix_table_;   // 4 dwords per vector (§6.8.2.6)
    std::vector<bool> msix_pending_;
    std::vector<UniqueFd> msix_fds_;
    DeviceModel* model_ = nullptr;
    UniqueFd disconnect_;  // eventfd the server polls
    std::atomic<bool> disconnect_requested_{false};
};

// A device's behaviour. Constructed on a PciFunction (it declares config space and BARs and
// calls set_model(this)); the hooks run under the function's lock in the server's thread.
class DeviceModel {
  public:
    virtual ~DeviceModel() = default;
    // DEVICE_RESET or a function level reset: back to the power-on state.
    virtual void reset() = 0;
    // The client went away (its DMA memory is already gone); device state stays.
    virtual void client_detached() {}
};

// Serves one PciFunction at a socket path, one client at a time.
class Server {
  public:
    struct Options {
        vfio_user::Limits limits;
        bool once = false;  // return from run() after the first client leaves
    };
    // Listens at `path` (a stale socket is replaced). Throws ring3::Error naming the path.
    Server(std::string path, PciFunction& function, Options options);
    Server(std::string path, PciFunction& function)
        : Server(std::move(path), function, Options{}) {}
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    ~Server();  // removes the socket file

    const std::string& path() const noexcept { return path_; }
    // Accepts and serves clients until stop() (or, with `once`, until the first one leaves).
    void run();
    // Serves one already connected client (a socketpair end, a fuzzer's stream) until it
    // leaves; then drops its DMA mappings and eventfds. run() does this for each accepted one.
    void serve_client(UniqueFd socket);
    // Thread and signal safe: makes run() return soon.
    void stop() noexcept;
    unsigned clients_served() const noexcept { return clients_; }

  private:
    void serve(vfio_user::Channel& channel);
    // Handles one command; returns false when the connection must be closed.
    bool dispatch(vfio_user::Channel& channel, vfio_user::Message& message);
    std::vector<std::byte> handle(vfio_user::Channel& channel, vfio_user::Message& message,
                                  std::vector<int>& reply_fds);
    std::vector<std::byte> region_info(const vfio_user::RegionInfoPayload& request,
                                       std::vector<int>& reply_fds);
    std::vector<std::byte> region_access(vfio_user::Message& message);
    void set_irqs(vfio_user::Message& message);

    std::string path_;
    PciFunction& function_;
    Options options_;
    vfio_user::Limits negotiated_;
    bool versioned_ = false;
    UniqueFd listener_;
    UniqueFd stop_fd_;
    std::atomic<bool> stopping_{false};
    unsigned clients_ = 0;
};

}  // namespace ring3::emu
