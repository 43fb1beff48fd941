// DriverResources: what a driver holds for its device beside the registers, and gives back in the
// one safe order: the interrupt vectors it enabled, a DMA arena attached to the device's IOVA space
// with a DmaPool over it, and bus mastering. Every driver needs these (virtio's Session and the
// e1000e port hold one each); their bring-up and teardown live here, once.
//
//   DriverResources resources(device);
//   auto& irqs = resources.enable_irqs(IrqKind::msix, 2);
//   dma::DmaPool& pool = resources.create_dma(options.arena);
//   ... program the rings ...; resources.enable_bus_master();
//   ... stop the device (reset) and destroy what was allocated from the pool ...
//   resources.release();   // bus mastering off, pool and arena gone, vectors disabled
//
// The device must outlive the resources (declare its owner member first). release() runs in the
// destructor too; it must come after the device stopped using the memory (the driver resets it).
#pragma once
#include <cstddef>
#include <memory>
#include <vector>
#include "ring3/device/device.hpp"
#include "ring3/dma/arena.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/irq/interrupt.hpp"

namespace ring3 {

class DriverResources {
  public:
    explicit DriverResources(Device& device) noexcept : device_(device) {}
    DriverResources(const DriverResources&) = delete;
    DriverResources& operator=(const DriverResources&) = delete;
    ~DriverResources() { release(); }

    // Enables vectors 0..count-1 of `kind` (Device::enable_irqs: all at once, replacing any set
    // enabled before). Throws ring3::Error.
    std::vector<irq::Interrupt>& enable_irqs(IrqKind kind, unsigned count);
    // Creates the DMA arena, attaches it to the device's IOVA space and makes the pool over it.
    dma::DmaPool& create_dma(const dma::ArenaOptions& options);
    // Bus mastering gates the device's DMA and its MSI/MSI-X messages (memory writes).
    void enable_bus_master();

    std::vector<irq::Interrupt>& interrupts() noexcept { return interrupts_; }
    std::size_t vector_count() const noexcept { return interrupts_.size(); }
    IrqKind irq_kind() const noexcept { return irq_kind_; }
    dma::DmaArena& arena() noexcept { return *arena_; }
    std::size_t space_index() const noexcept { return space_index_; }
    dma::DmaPool& pool() noexcept { return *pool_; }

    // Bus mastering off, the pool and the arena gone (detached from the IOVA space), the vectors
    // disabled. Idempotent; failures are logged, not thrown.
    void release() noexcept;

  private:
    Device& device_;
    std::vector<irq::Interrupt> interrupts_;
    IrqKind irq_kind_ = IrqKind::intx;
    std::unique_ptr<dma::DmaArena> arena_;
    std::size_t space_index_ = 0;
    std::unique_ptr<dma::DmaPool> pool_;
    bool bus_master_ = false;
};

}  // namespace ring3
