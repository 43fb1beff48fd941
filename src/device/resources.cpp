// DriverResources (resources.hpp): a driver's vectors, DMA arena and pool, and bus mastering.
#include "ring3/device/resources.hpp"

#include "ring3/core/log.hpp"

namespace ring3 {

std::vector<irq::Interrupt>& DriverResources::enable_irqs(IrqKind kind, unsigned count) {
    interrupts_ = device_.enable_irqs(kind, count);
    irq_kind_ = kind;
    return interrupts_;
}

dma::DmaPool& DriverResources::create_dma(const dma::ArenaOptions& options) {
    arena_ = dma::DmaArena::create(options);
    space_index_ = arena_->attach(device_.iova_space());
    pool_ = std::make_unique<dma::DmaPool>(*arena_, space_index_);
    return *pool_;
}

void DriverResources::enable_bus_master() {
    device_.set_bus_master(true);
    bus_master_ = true;
}

void DriverResources::release() noexcept {
    if (bus_master_) {
        bus_master_ = false;
        try {
            device_.set_bus_master(false);
        } catch (const std::exception& e) {
            log_warn("{}: turning bus mastering off: {}", device_.name(), e.what());
        }
    }
    pool_.reset();
    if (arena_) {
        arena_->detach(device_.iova_space());
        arena_.reset();
    }
    if (!interrupts_.empty()) {
        interrupts_.clear();
        try {
            device_.disable_irqs(irq_kind_);
        } catch (const std::exception& e) {
            log_warn("{}: disabling its interrupts: {}", device_.name(), e.what());
        }
    }
}

}  // namespace ring3
