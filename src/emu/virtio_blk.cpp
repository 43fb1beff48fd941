// emu::VirtioBlkDevice: the block device (VIRTIO 1.2 §5.2) on the virtio PCI transport of
// emu::VirtioFunction (virtio_function.cpp), with memory or a shared file mapping as its disk.
#include "ring3/emu/virtio_blk.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/emu/disk.hpp"
#include "ring3/virtio/registers.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::emu {
namespace {

namespace reg = virtio::reg;
using virtio::bit;

// PCI Code and ID Assignment §1.1: 01h mass storage controller, 00h SCSI (what virtio-blk
// devices report).
constexpr std::uint32_t kStorageClass = 0x010000;
constexpr std::uint64_t kHeader = sizeof(virtio::BlkRequestHeader);  // §5.2.6: 16 bytes
constexpr std::uint64_t kSector = virtio::kSectorSize;  // §5.2.6: sectors are 512 bytes, always
constexpr char kSerial[] = "ring3-emu-blk";             // GET_ID's answer, zero-padded to 20

}  // namespace

BlkCheck check_blk_request(const BlkRequestShape& r, std::uint64_t capacity,
                           std::uint32_t seg_max) noexcept {
    BlkCheck c;
    const auto fail = [&c](BlkVerdict verdict, const char* why) {
        c.verdict = verdict;
        c.data_bytes = 0;
        c.why = why;
        return c;
    };
    // §5.2.6: the status byte is the last device-writable byte; without one nothing can be
    // answered.
    if (r.writable == 0) {
        return fail(BlkVerdict::no_status, "no device-writable byte for the status");
    }
    // §5.2.6: the header (type, reserved, sector) comes first, device-readable.
    if (r.readable < kHeader) {
        return fail(BlkVerdict::ioerr, "the header is shorter than 16 device-readable bytes");
    }
    // §5.2.4 seg_max: data descriptors per request at most (header and status besides).
    if (r.descriptors > std::uint64_t{seg_max} + 2) {
        return fail(BlkVerdict::ioerr, "more descriptors than seg_max allows");
    }
    const auto in_range = [capacity](std::uint64_t sector, std::uint64_t bytes) {
        const std::uint64_t sectors = bytes / kSector;
        return sector <= capacity && sectors <= capacity - sector;
    };
    switch (r.type) {
        case virtio::blk_type::in:
            // §5.2.6: a read's data is device-writable, before the status byte.
            if (r.readable != kHeader) {
                return fail(BlkVerdict::ioerr, "a read (IN) with device-readable data");
            }
            c.data_bytes = r.writable - 1;
            break;
        case virtio::blk_type::out:
            // §5.2.6: a write's data is device-readable, after the header.
            if (r.writable != 1) {
                return fail(BlkVerdict::ioerr, "a write (OUT) with device-writable data");
            }
            c.data_bytes = r.readable - kHeader;
            break;
        case virtio::blk_type::flush:
            if (r.readable != kHeader || r.writable != 1) {
                return fail(BlkVerdict::ioerr, "a flush with data");
            }
            return c;
        case virtio::blk_type::get_id:
            // §5.2.6: the device writes a 20-byte identifier.
            if (r.readable != kHeader || r.writable - 1 < VirtioBlkDevice::kIdBytes) {
                return fail(BlkVerdict::ioerr, "GET_ID without 20 device-writable bytes");
            }
            c.data_bytes = VirtioBlkDevice::kIdBytes;
            return c;
        default:
            return fail(BlkVerdict::unsupported, "a request type the device does not know");
    }
    // §5.2.6: data in whole 512-byte sectors, inside the capacity.
    if (c.data_bytes == 0 || c.data_bytes % kSector != 0) {
        return fail(BlkVerdict::ioerr, "data that is not a positive multiple of 512 bytes");
    }
    if (!in_range(r.sector, c.data_bytes)) {
        return fail(BlkVerdict::ioerr, "a sector range beyond the capacity");
    }
    return c;
}

VirtioBlkOptions VirtioBlkDevice::checked(VirtioBlkOptions o, const std::string& name) {
    if (o.size < kSector || o.size % kSector != 0) {
        throw Error::invalid("create virtio-blk device", name,
                             fmt::format("a disk of {} bytes: the size must be a positive "
                                         "multiple of 512 (VIRTIO 1.2 §5.2.4 counts sectors)",
                                         o.size));
    }
    if (o.queues < 1 || o.queues > VirtioFunction::kMaxQueues - 1 || o.queue_size < 4 ||
        o.queue_size > virtio::kMaxQueueSize || (o.queue_size & (o.queue_size - 1)) != 0 ||
        o.seg_max < 1) {
        throw Error::invalid("create virtio-blk device", name,
                             fmt::format("queues 1..{}, queue size a power of two 4..32768 (a "
                                         "request takes three descriptors), seg_max at least 1",
                                         VirtioFunction::kMaxQueues - 1));
    }
    return o;
}

VirtioFunction::Options VirtioBlkDevice::transport_options(const VirtioBlkOptions& options) {
    VirtioFunction::Options t;
    // §4.1.2: device 0x1040 + 2 (block device).
    t.device_id = virtio::kBlockModernDeviceId;
    t.class_code = kStorageClass;
    t.num_queues = static_cast<std::uint16_t>(options.queues);
    t.queue_size = options.queue_size;
    // §4.1.5.1.2: vector 0 for configuration changes, one per request queue after it.
    t.msix_vectors = options.queues + 1;
    t.config_length = kConfigLength;
    // Header, seg_max data descriptors of at most 4 GiB each would be absurd; the driver's
    // largest request is far below this, and a longer chain is garbage.
    t.max_chain_bytes = 64ull << 20;
    t.faults = options.faults;
    return t;
}

VirtioBlkDevice::VirtioBlkDevice(PciFunction& function, VirtioBlkOptions options)
    : function_(function),
      options_(checked(std::move(options), function.name())),
      storage_(map_disk(options_.size, options_.backing, "virtio-blk disk")),
      transport_(function, *this, transport_options(options_)) {
    chain_.runs.reserve(std::size_t{options_.seg_max} + 2);
    transport_.start();
}

VirtioBlkDevice::~VirtioBlkDevice() {
    transport_.stop();
    if (!options_.backing.empty()) {
        msync(storage_.get(), storage_.size(), MS_SYNC);
    }
}

VirtioBlkCounters VirtioBlkDevice::counters() const {
    const VirtioCounters transport = transport_.counters();
    auto lock = function_.lock();
    VirtioBlkCounters c = counters_;
    c.interrupts = transport.interrupts;
    c.needs_reset = transport.needs_reset;
    c.resets = transport.resets;
    return c;
}

std::uint64_t VirtioBlkDevice::offered_features() const noexcept {
    namespace blk = virtio::blk_feature;
    return bit(virtio::feature::version_1) | bit(virtio::feature::access_platform) |
           bit(virtio::feature::event_idx) | bit(blk::seg_max) | bit(blk::blk_size) |
           bit(blk::flush) | bit(blk::mq);
}

void VirtioBlkDevice::read_config(std::span<std::byte> out) const noexcept {
    // §5.2.4: struct virtio_blk_config: capacity (always), seg_max, blk_size, num_queues; the
    // fields of features not offered (size_max, geometry, topology, writeback) read 0.
    std::byte config[kConfigLength] = {};
    const std::uint64_t capacity = capacity_sectors();
    const std::uint32_t block_size = kSector;
    const auto queues = static_cast<std::uint16_t>(options_.queues);
    std::memcpy(config + reg::blk::CapacityLow::offset, &capacity, 8);
    std::memcpy(config + reg::blk::SegMax::offset, &options_.seg_max, 4);
    std::memcpy(config + reg::blk::BlkSize::offset, &block_size, 4);
    std::memcpy(config + reg::blk::NumQueues::offset, &queues, 2);
    for (std::size_t i = 0; i < out.size() && i < sizeof config; ++i) {
        out[i] = config[i];
    }
}

// --- Requests (§5.2.6) ------------------------------------------------------------------------

bool VirtioBlkDevice::process(VirtioFunction& transport) {
    bool worked = false;
    for (unsigned i = 0; i < options_.queues && transport.live(); ++i) {
        worked = process_queue(i) || worked;
    }
    return worked;
}

bool VirtioBlkDevice::process_queue(unsigned index) {
    VirtioFunction::Rings r;
    if (!transport_.rings(index, r)) {
        return false;
    }
    bool worked = false;
    for (unsigned budget = 64; budget != 0 && transport_.next_chain(index, r, chain_); --budget) {
        const std::uint32_t written = execute(index);
        ++transport_.queue(index).last_avail;
        worked = true;
        transport_.complete(index, r, chain_.head, written);
        if (!transport_.live()) {
            break;  // a fault on the way
        }
    }
    return worked;
}

std::uint32_t VirtioBlkDevice::execute(unsigned index) {
    const VirtioFunction::Chain& chain = chain_;
    virtio::BlkRequestHeader header{};
    if (chain.readable >= kHeader) {
        gather(0, {reinterpret_cast<std::byte*>(&header), sizeof header});
    }
    BlkRequestShape shape;
    shape.type = header.type;
    shape.sector = header.sector;
    shape.readable = chain.readable;
    shape.writable = chain.writable;
    shape.descriptors = chain.descriptors;
    const BlkCheck check = check_blk_request(shape, capacity_sectors(), options_.seg_max);
    const auto report = [&](const char* what) {
        const std::uint64_t n = counters_.ioerr + counters_.unsupported + counters_.no_status;
        if ((n & (n - 1)) == 0) {  // the 1st, 2nd, 4th... bad request
            log_warn(
                "{}: queue {}: request from descriptor {} (type {}, sector {}, {} readable "
                "and {} writable bytes) {}: {}",
                function_.name(), index, chain.head, header.type, header.sector, chain.readable,
                chain.writable, what, check.why);
        }
    };
    std::uint8_t answer = virtio::blk_status::ok;
    std::uint32_t data_written = 0;
    switch (check.verdict) {
        case BlkVerdict::no_status:
            ++counters_.no_status;
            report("returned unanswered");
            return 0;
        case BlkVerdict::ioerr:
            ++counters_.ioerr;
            report("answered IOERR");
            answer = virtio::blk_status::ioerr;
            break;
        case BlkVerdict::unsupported:
            ++counters_.unsupported;
            report("answered UNSUPP");
            answer = virtio::blk_status::unsupp;
            break;
        case BlkVerdict::ok: {
            // Reads and writes: [sector, + data) is inside the disk (checked above).
            const std::uint64_t at = header.sector * kSector;
            switch (header.type) {
                case virtio::blk_type::in:
                    scatter(0, storage_.bytes().subspan(at, check.data_bytes));
                    data_written = static_cast<std::uint32_t>(check.data_bytes);
                    ++counters_.reads;
                    counters_.bytes_read += check.data_bytes;
                    break;
                case virtio::blk_type::out:
                    gather(kHeader, storage_.bytes().subspan(at, check.data_bytes));
                    ++counters_.writes;
                    counters_.bytes_written += check.data_bytes;
                    break;
                case virtio::blk_type::flush:
                    // §5.2.6: what was written is durable once a flush completes; memory has
                    // nowhere further to go, a file is written back.
                    if (!options_.backing.empty() &&
                        msync(storage_.get(), storage_.size(), MS_SYNC) != 0) {
                        log_warn("{}: flush of {}: {}", function_.name(), options_.backing,
                                 std::strerror(errno));
                        answer = virtio::blk_status::ioerr;
                        ++counters_.ioerr;
                    }
                    ++counters_.flushes;
                    break;
                case virtio::blk_type::get_id: {
                    std::byte id[kIdBytes] = {};
                    std::memcpy(id, kSerial, sizeof kSerial - 1);
                    scatter(0, id);
                    data_written = kIdBytes;
                    ++counters_.get_ids;
                    break;
                }
                default:
                    break;  // refused by the check
            }
            break;
        }
    }
    // §5.2.6: the status byte is the chain's last device-writable byte.
    const std::byte byte{answer};
    scatter(chain.writable - 1, {&byte, 1});
    return data_written + 1;
}

void VirtioBlkDevice::gather(std::uint64_t offset, std::span<std::byte> out) const noexcept {
    std::size_t done = 0;
    for (const VirtioFunction::Run& run : chain_.runs) {
        if (run.writable || done == out.size()) {
            continue;
        }
        if (offset >= run.length) {
            offset -= run.length;
            continue;
        }
        const std::size_t n = std::min<std::size_t>(run.length - offset, out.size() - done);
        std::memcpy(out.data() + done, run.data + offset, n);
        done += n;
        offset = 0;
    }
}

void VirtioBlkDevice::scatter(std::uint64_t offset, std::span<const std::byte> in) const noexcept {
    std::size_t done = 0;
    for (const VirtioFunction::Run& run : chain_.runs) {
        if (!run.writable || done == in.size()) {
            continue;
        }
        if (offset >= run.length) {
            offset -= run.length;
            continue;
        }
        const std::size_t n = std::min<std::size_t>(run.length - offset, in.size() - done);
        std::memcpy(run.data + offset, in.data() + done, n);
        done += n;
        offset = 0;
    }
}

}  // namespace ring3::emu
