// The virtio PCI transport for modern devices (VIRTIO 1.2 §4.1).
#include "ring3/virtio/transport.hpp"

#include <fmt/core.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/pci/config_space.hpp"
#include "ring3/virtio/registers.hpp"
#include "ring3/virtio/spec.hpp"

namespace ring3::virtio {
namespace {

const char* structure_name(std::uint8_t type) {
    switch (type) {
        case pci_cap_type::common_cfg:
            return "common configuration";
        case pci_cap_type::notify_cfg:
            return "notifications";
        case pci_cap_type::isr_cfg:
            return "ISR status";
        case pci_cap_type::device_cfg:
            return "device configuration";
        default:
            return "?";
    }
}

}  // namespace

PciLayout find_structures(Device& device) {
    std::vector<std::uint8_t> bytes(pci::kConfigConventionalSize);
    device.read_config(0, std::as_writable_bytes(std::span<std::uint8_t>(bytes)));
    const pci::ConfigView view(bytes);
    const auto walk = pci::walk_capabilities(view);
    if (!walk.error.empty()) {
        log_warn("{}: capability list: {}", device.name(), walk.error);
    }
    PciLayout layout;
    bool any_virtio = false;
    for (const auto& capability : walk.capabilities) {
        if (capability.id != pci::cap::vendor_specific) {
            continue;
        }
        // §4.1.4: struct virtio_pci_cap; the walk checked that cap_len bytes are there.
        const auto* info = std::get_if<pci::VendorSpecificInfo>(&capability.detail);
        if (info == nullptr || info->length < sizeof(PciCap) ||
            !view.has(capability.offset, sizeof(PciCap))) {
            continue;
        }
        PciCap cap;
        std::memcpy(&cap, bytes.data() + capability.offset, sizeof cap);
        StructureLocation* slot = nullptr;
        switch (cap.cfg_type) {
            case pci_cap_type::common_cfg:
                slot = &layout.common;
                break;
            case pci_cap_type::notify_cfg:
                slot = &layout.notify;
                break;
            case pci_cap_type::isr_cfg:
                slot = &layout.isr;
                break;
            case pci_cap_type::device_cfg:
                slot = &layout.device;
                break;
            default:
                continue;  // PCI cfg access, shared memory, vendor data: not used
        }
        any_virtio = true;
        // §4.1.4.1: a reserved BAR value (6..255) means "ignore this capability"; the first
        // capability of each type is the preferred one (§4.1.4).
        if (cap.bar > 5 || slot->present) {
            continue;
        }
        if (cap.cfg_type == pci_cap_type::notify_cfg) {
            if (info->length < sizeof(PciNotifyCap) ||
                !view.has(capability.offset, sizeof(PciNotifyCap))) {
                continue;
            }
            PciNotifyCap notify;
            std::memcpy(&notify, bytes.data() + capability.offset, sizeof notify);
            layout.notify_off_multiplier = notify.notify_off_multiplier;
        }
        slot->present = true;
        slot->bar = cap.bar;
        slot->offset = cap.offset;
        slot->length = cap.length;
        slot->cap_offset = capability.offset;
    }
    if (!any_virtio) {
        throw Error::invalid(
            "open virtio device", device.name(),
            fmt::format("[{:04x}:{:04x}] is a legacy-only virtio device: its capability list has "
                        "no virtio structure capabilities (VIRTIO 1.2 §4.1.4; QEMU's "
                        "disable-modern=on makes such a device); ring3 drives modern "
                        "(VIRTIO 1.0+) devices only",
                        device.vendor_id(), device.device_id()),
            ENOTSUP);
    }
    const auto require = [&](const StructureLocation& location, std::uint8_t type,
                             std::uint32_t min_length) {
        if (!location.present) {
            throw Error::invalid(
                "open virtio device", device.name(),
                fmt::format("no usable {} capability (VIRTIO 1.2 §4.1.4)", structure_name(type)),
                ENODEV);
        }
        if (location.length < min_length) {
            throw Error::invalid("open virtio device", device.name(),
                                 fmt::format("the {} structure is {} bytes, at least {} needed",
                                             structure_name(type), location.length, min_length),
                                 ENODEV);
        }
    };
    require(layout.common, pci_cap_type::common_cfg, reg::kCommonConfigSize);
    require(layout.notify, pci_cap_type::notify_cfg, 2);
    require(layout.isr, pci_cap_type::isr_cfg, 1);
    return layout;
}

PciTransport::PciTransport(Device& device, const TransportOptions& options)
    : device_(device), options_(options), layout_(find_structures(device)), windows_(device) {
    const auto open = [&](const StructureLocation& location) {
        return windows_.open(location.bar, location.offset, location.length);
    };
    common_ = open(layout_.common);
    notify_ = open(layout_.notify);
    isr_ = open(layout_.isr);
    if (layout_.device.present && layout_.device.length > 0) {
        device_cfg_ = open(layout_.device);
    }
}

mmio::RegisterIo& PciTransport::device_config() {
    if (!device_cfg_) {
        throw Error::invalid("read device configuration", device_.name(),
                             "the device has no device configuration capability", ENODEV);
    }
    return *device_cfg_;
}

std::uint64_t PciTransport::negotiate(const Initializer::Features& features) {
    const auto device_bit_name = features.device_bit_name;
    Initializer init(*common_, features);
    for (;;) {
        const auto state = init.step(options_.now());
        if (state == Initializer::State::done) {
            break;
        }
        if (state == Initializer::State::failed) {
            throw Error::invalid("initialize virtio device", device_.name(), init.error(),
                                 init.error_code());
        }
        if (init.waiting()) {
            options_.pause();
        }
    }
    offered_ = init.offered();
    negotiated_ = init.negotiated();
    log_info("{}: virtio features offered: {}", device_.name(),
             describe_features(offered_, device_bit_name));
    log_info("{}: virtio features negotiated: {}", device_.name(),
             describe_features(negotiated_, device_bit_name));
    return negotiated_;
}

std::uint16_t PciTransport::num_queues() {
    return common_->read<reg::NumQueues>().raw();
}

std::uint16_t PciTransport::max_queue_size(std::uint16_t index) {
    common_->write_raw<reg::QueueSelect>(index);
    const std::uint16_t size = common_->read<reg::QueueSize>().raw();
    if (size == 0) {
        throw Error::invalid(fmt::format("set up virtqueue {}", index), device_.name(),
                             "the device reports queue_size 0: the queue is unavailable "
                             "(VIRTIO 1.2 §4.1.4.3)",
                             ENODEV);
    }
    return size;
}

std::size_t PciTransport::setup_queue(const QueueSetup& setup) {
    const auto what = fmt::format("set up virtqueue {}", setup.index);
    // §4.1.5.1.3 "Virtqueue Configuration": select, size, vector, addresses, then enable.
    common_->write_raw<reg::QueueSelect>(setup.index);
    common_->write_raw<reg::QueueSize>(setup.size);
    if (setup.msix_vector != kNoVector) {
        common_->write_raw<reg::QueueMsixVector>(setup.msix_vector);
        // §4.1.5.1.2: the device answers NO_VECTOR when it could not map the vector.
        const auto mapped = common_->read<reg::QueueMsixVector>().raw();
        if (mapped != setup.msix_vector) {
            throw Error::invalid(what, device_.name(),
                                 fmt::format("the device refused MSI-X vector {} (reads back "
                                             "{:#x})",
                                             setup.msix_vector, mapped),
                                 EIO);
        }
    } else {
        common_->write_raw<reg::QueueMsixVector>(kNoVector);
    }
    common_->write_raw<reg::QueueDescLow>(static_cast<std::uint32_t>(setup.desc));
    common_->write_raw<reg::QueueDescHigh>(static_cast<std::uint32_t>(setup.desc >> 32));
    common_->write_raw<reg::QueueDriverLow>(static_cast<std::uint32_t>(setup.driver));
    common_->write_raw<reg::QueueDriverHigh>(static_cast<std::uint32_t>(setup.driver >> 32));
    common_->write_raw<reg::QueueDeviceLow>(static_cast<std::uint32_t>(setup.device));
    common_->write_raw<reg::QueueDeviceHigh>(static_cast<std::uint32_t>(setup.device >> 32));
    const std::uint16_t notify_off = common_->read<reg::QueueNotifyOff>().raw();
    const std::size_t offset = reg::notify_offset(notify_off, layout_.notify_off_multiplier);
    if (offset + 2 > notify_->size()) {
        throw Error::invalid(
            what, device_.name(),
            fmt::format("queue_notify_off {} x multiplier {} = {:#x} lies outside "
                        "the {}-byte notification structure",
                        notify_off, layout_.notify_off_multiplier, offset, notify_->size()),
            EIO);
    }
    common_->write_raw<reg::QueueEnable>(1);
    return offset;
}

void PciTransport::set_config_vector(std::uint16_t vector) {
    common_->write_raw<reg::ConfigMsixVector>(vector);
    const auto mapped = common_->read<reg::ConfigMsixVector>().raw();
    if (mapped != vector) {
        throw Error::invalid(
            "set the configuration change vector", device_.name(),
            fmt::format("the device refused MSI-X vector {} (reads back {:#x})", vector, mapped),
            EIO);
    }
}

std::uint8_t PciTransport::status() {
    return common_->read<reg::DeviceStatus>().raw();
}

void PciTransport::driver_ok() {
    // §3.1.1 step 8: the device is "live" from here on.
    common_->write_raw<reg::DeviceStatus>(status::acknowledge | status::driver |
                                          status::features_ok | status::driver_ok);
    const auto value = status();
    if ((value & status::device_needs_reset) != 0 || (value & status::driver_ok) == 0) {
        throw Error::invalid("start virtio device", device_.name(),
                             fmt::format("device_status reads {:#04x} after DRIVER_OK", value),
                             EIO);
    }
}

void PciTransport::reset() noexcept {
    try {
        common_->write_raw<reg::DeviceStatus>(0);
        const auto deadline = options_.now() + Initializer::kResetTimeout;
        while (status() != 0) {
            if (options_.now() > deadline) {
                log_warn("{}: device_status did not read 0 within {} ms of the reset",
                         device_.name(), Initializer::kResetTimeout.count());
                return;
            }
            options_.pause();
        }
    } catch (const std::exception& e) {
        log_warn("{}: reset: {}", device_.name(), e.what());
    }
}

std::uint8_t PciTransport::generation() {
    return common_->read<reg::ConfigGeneration>().raw();
}

void PciTransport::throw_config_unstable() {
    throw Error::invalid("read device configuration", device_.name(),
                         "config_generation kept changing over 100 reads (VIRTIO 1.2 §2.5.1)", EIO);
}

}  // namespace ring3::virtio
