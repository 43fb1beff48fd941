// The part of a virtio PCI driver every device type shares (session.hpp).
#include "ring3/virtio/session.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::virtio {

std::uint16_t round_down_pow2(std::uint32_t value) noexcept {
    std::uint32_t p = 1;
    while (p * 2 <= value && p * 2 <= kMaxQueueSize) {
        p *= 2;
    }
    return static_cast<std::uint16_t>(p);
}

Session::Session(std::unique_ptr<Device> device, const SessionOptions& options)
    : device_(std::move(device)), options_(options), resources_(*device_) {
    try {
        transport_ = std::make_unique<PciTransport>(*device_, options.transport);
        mark(options.timeline, "virtio capabilities");
        if (options.mode != irq::WaitMode::poll) {
            // §4.1.5.1.2: vector 0 for configuration changes, the others for queues.
            const unsigned msix = device_->irq_count(IrqKind::msix);
            if (msix < 2) {
                throw Error::invalid(
                    fmt::format("open {} in {} mode", options.driver, to_string(options.mode)),
                    name(),
                    fmt::format("the device offers {} MSI-X vector(s) through this backend; "
                                "interrupt mode needs at least 2 (use --mode poll)",
                                msix),
                    ENOTSUP);
            }
            resources_.enable_irqs(IrqKind::msix, std::min(msix, std::max(2u, options.vectors)));
        }
        resources_.create_dma(options.arena);
        mark(options.timeline, "DMA arena");
    } catch (...) {
        release();
        throw;
    }
}

Session::~Session() {
    reset_device();
    release();
}

std::uint16_t Session::vector_for(unsigned n) const noexcept {
    const std::size_t vectors = resources_.vector_count();
    if (vectors < 2) {
        return kNoVector;
    }
    return static_cast<std::uint16_t>(1 + n % (vectors - 1));
}

irq::Interrupt* Session::interrupt_for(unsigned n) noexcept {
    const std::uint16_t vector = vector_for(n);
    return vector == kNoVector ? nullptr : &resources_.interrupts()[vector];
}

std::uint64_t Session::start(const Initializer::Features& features) {
    const std::uint64_t negotiated = transport_->negotiate(features);
    mark(options_.timeline, "virtio reset and feature negotiation");
    resources_.enable_bus_master();
    if (has_vectors()) {
        transport_->set_config_vector(0);
    }
    return negotiated;
}

std::unique_ptr<SplitQueue> Session::create_queue(std::uint16_t index, std::uint16_t size,
                                                  std::uint16_t vector) {
    auto ring = std::make_unique<SplitQueue>(resources_.pool(), index, size,
                                             has(feature::event_idx), transport_->notify(), 0);
    PciTransport::QueueSetup setup;
    setup.index = index;
    setup.size = size;
    setup.desc = ring->desc_iova();
    setup.driver = ring->avail_iova();
    setup.device = ring->used_iova();
    setup.msix_vector = vector;
    ring->set_notify_offset(transport_->setup_queue(setup));
    return ring;
}

void Session::driver_ok() {
    transport_->driver_ok();
    mark(options_.timeline, "DRIVER_OK");
}

void Session::need_config(std::size_t end, const char* what) {
    mmio::RegisterIo& cfg = transport_->device_config();
    if (cfg.size() < end) {
        throw Error::invalid(fmt::format("read {} configuration", options_.driver), name(),
                             fmt::format("the device configuration is {} bytes, {} needed for {}",
                                         cfg.size(), end, what),
                             EIO);
    }
}

void Session::refuse(const std::string& why) {
    reset_device();
    throw Error::invalid(fmt::format("open {}", options_.driver), name(), why, EIO);
}

void Session::reset_device() noexcept {
    const std::lock_guard lock(reset_mutex_);
    if (transport_ && !reset_) {
        reset_ = true;
        transport_->reset();  // §4.1.4.3.2: the device stops using the rings
    }
}

int Session::check_health() noexcept {
    if (const int known = failure(); known != 0) {
        return known;
    }
    int error = 0;
    std::string why;
    try {
        if (auto gone = device_->lost()) {
            error = ENODEV;
            why = "the device is gone (" + *gone + ")";
        } else if (const std::uint8_t value = transport_->status(); value == 0xff) {
            error = ENODEV;
            why = "device_status reads 0xff: the device is not responding (removed?)";
        } else if ((value & status::device_needs_reset) != 0) {
            error = EIO;
            why = fmt::format(
                "the device set DEVICE_NEEDS_RESET (device_status {:#04x}, VIRTIO 1.2 §2.1.2): "
                "it cannot go on until it is reset",
                value);
        } else if ((value & status::driver_ok) == 0) {
            error = EIO;
            why = fmt::format(
                "device_status reads {:#04x} without DRIVER_OK: the device was reset "
                "under the driver",
                value);
        }
    } catch (const std::exception& e) {
        error = EIO;
        why = fmt::format("reading device_status: {}", e.what());
    }
    if (error == 0) {
        return 0;
    }
    return fail(error, why);
}

int Session::fail(int error, std::string_view why) noexcept {
    int expected = 0;
    if (!failure_.compare_exchange_strong(expected, error, std::memory_order_acq_rel)) {
        return expected;  // another queue's thread found it first and said so
    }
    try {
        log_error("{}: {}; its queues stop", name(), why);
    } catch (...) {  // the errno still says it
    }
    return error;
}

void Session::release() noexcept {
    resources_.release();
    transport_.reset();
}

}  // namespace ring3::virtio
