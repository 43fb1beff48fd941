// An emulated virtio-blk device served over vfio-user (VIRTIO 1.2 §5.2 block device), on the
// shared virtio PCI transport of emu::VirtioFunction (virtio_function.hpp: BAR0 layout, queues
// polled by a thread, descriptor validation, faults).
//
// Configuration (§5.2.4): capacity in 512-byte sectors, seg_max, blk_size 512 and num_queues;
// features VERSION_1, ACCESS_PLATFORM, EVENT_IDX, SEG_MAX, BLK_SIZE, FLUSH and MQ (§5.2.3).
// Requests (§5.2.6): IN, OUT, FLUSH and GET_ID; anything else is answered UNSUPP. Every request
// is checked before memory is touched: a header of 16 device-readable bytes, a device-writable
// status byte last, data a multiple of 512 bytes in the right direction, the sector range inside
// the capacity, at most seg_max + 2 descriptors. A request that fails a check gets IOERR (a chain
// with no writable byte cannot be told anything: it is returned with nothing written, and the
// driver's preset status says it failed). Bad rings and descriptors (indexes, loops, unmapped
// memory) are the transport's: DEVICE_NEEDS_RESET.
//
// Storage: anonymous memory of `size` bytes, or a file mapped shared (created or extended to
// `size`), so that a host-side checker can read what was written.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ring3/core/mapping.hpp"
#include "ring3/emu/virtio_function.hpp"

namespace ring3::emu {

struct VirtioBlkOptions {
    std::uint64_t size = 64ull << 20;  // bytes of the disk: a multiple of 512
    std::string backing;               // a file (created/extended to `size`); empty: memory
    unsigned queues = 1;               // request queues (num_queues, §5.2.4)
    std::uint16_t queue_size = 256;    // each virtqueue's maximum (a power of two)
    std::uint32_t seg_max = 128;       // data descriptors per request at most (§5.2.4)
    // Counted over requests completed from the device's creation:
    //   delay:US   every used element is returned US µs late
    //   drop:N     the Nth request is never returned
    //   corrupt:N  the Nth request's used element names a descriptor that does not exist
    //   cfs:N      DEVICE_NEEDS_RESET after N requests
    //   vanish:N   the connection is dropped after N requests
    Faults faults;
};

struct VirtioBlkCounters {
    std::uint64_t reads = 0;
    std::uint64_t writes = 0;
    std::uint64_t flushes = 0;
    std::uint64_t get_ids = 0;
    std::uint64_t bytes_read = 0;     // from the disk into the driver's memory
    std::uint64_t bytes_written = 0;  // into the disk
    std::uint64_t ioerr = 0;          // requests answered VIRTIO_BLK_S_IOERR
    std::uint64_t unsupported = 0;    // requests answered VIRTIO_BLK_S_UNSUPP
    std::uint64_t no_status = 0;      // chains returned without a status byte to write
    std::uint64_t interrupts = 0;
    std::uint64_t needs_reset = 0;
    std::uint64_t resets = 0;
};

// What is wrong with a request, from its header and the shape of its chain (§5.2.6), before
// any data moves; pure, so it is unit-tested on its own.
struct BlkRequestShape {
    std::uint32_t type = 0;
    std::uint64_t sector = 0;
    std::uint64_t readable = 0;  // device-readable bytes, the 16-byte header included
    std::uint64_t writable = 0;  // device-writable bytes, the status byte included
    unsigned descriptors = 0;    // in the chain
};
enum class BlkVerdict {
    ok,           // carry it out
    ioerr,        // answer VIRTIO_BLK_S_IOERR
    unsupported,  // answer VIRTIO_BLK_S_UNSUPP
    no_status,    // nothing can be answered: no writable byte
};
struct BlkCheck {
    BlkVerdict verdict = BlkVerdict::ok;
    std::uint64_t data_bytes = 0;  // IN: bytes to write into the chain; OUT: bytes to read
    const char* why = "";          // for the log, when not ok
};
BlkCheck check_blk_request(const BlkRequestShape& request, std::uint64_t capacity_sectors,
                           std::uint32_t seg_max) noexcept;

class VirtioBlkDevice final : public VirtioDeviceType {
  public:
    static constexpr std::uint32_t kCommonOffset = VirtioFunction::kCommonOffset;
    static constexpr std::uint32_t kDeviceOffset = VirtioFunction::kDeviceOffset;
    // §5.2.4: struct virtio_blk_config through num_queues (and its padding).
    static constexpr std::uint32_t kConfigLength = 0x24;
    static constexpr std::size_t kIdBytes = 20;  // §5.2.6: GET_ID's answer (VIRTIO_BLK_ID_BYTES)

    // Declares the function's config space and BAR0, maps the storage and starts the polling
    // thread. Throws ring3::Error for bad options or a backing file that cannot be used.
    VirtioBlkDevice(PciFunction& function, VirtioBlkOptions options);
    VirtioBlkDevice(const VirtioBlkDevice&) = delete;
    VirtioBlkDevice& operator=(const VirtioBlkDevice&) = delete;
    ~VirtioBlkDevice() override;  // stops the poller; writes a file backing back

    VirtioBlkCounters counters() const;  // any thread (takes the lock)
    std::uint8_t status() const noexcept { return transport_.status(); }
    std::span<std::byte> storage() const noexcept { return storage_.bytes(); }
    std::uint64_t capacity_sectors() const noexcept { return options_.size / 512; }

    // VirtioDeviceType, under the function's lock.
    std::uint64_t offered_features() const noexcept override;
    void read_config(std::span<std::byte> out) const noexcept override;
    bool process(VirtioFunction& transport) override;

  private:
    static VirtioBlkOptions checked(VirtioBlkOptions options, const std::string& name);
    static VirtioFunction::Options transport_options(const VirtioBlkOptions& options);
    bool process_queue(unsigned index);
    // The request in chain_: carried out; returns the bytes written into the chain.
    std::uint32_t execute(unsigned index);
    // Copies between the chain's device-readable bytes from `offset` on and `out`, or into its
    // device-writable bytes from `offset` on from `in`.
    void gather(std::uint64_t offset, std::span<std::byte> out) const noexcept;
    void scatter(std::uint64_t offset, std::span<const std::byte> in) const noexcept;

    PciFunction& function_;
    VirtioBlkOptions options_;
    Mapping storage_;
    VirtioFunction::Chain chain_;  // scratch: the request in hand
    VirtioBlkCounters counters_;   // under the lock
    VirtioFunction transport_;     // last: built after, and stopped before, the state above
};

}  // namespace ring3::emu
