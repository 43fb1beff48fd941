// ring3's Python bindings (module ring3._ring3; the package ring3 re-exports it and adds the
// asyncio helpers, python/ring3/__init__.py). For prototyping drivers: a device opened by spec
// string, its config space, BARs with bounds-checked accesses, DMA buffers that speak the buffer
// protocol, and interrupt vectors as eventfds. See python/README.md.
//
// Ownership: every object handed to Python (Bar, DmaBuffer, Interrupt) holds a shared_ptr to the
// DeviceHandle it came from, so the device, its DMA arena and pool live until the last of them is
// gone, whatever order Python drops them in. Inside the handle the pool goes before the arena and
// the arena before the device (the arena is attached to the device's IOVA space).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ring3/core/error.hpp"
#include "ring3/device/device.hpp"
#include "ring3/device/region_access.hpp"
#include "ring3/dma/arena.hpp"
#include "ring3/dma/pool.hpp"
#include "ring3/irq/interrupt.hpp"
#include "ring3/pci/bar.hpp"

namespace py = pybind11;

namespace ring3::python {
namespace {

// ring3.Error: an OSError whose str() is ring3's message, with errno and the message's parts.
PyObject* error_type = nullptr;

// Arguments Python got wrong become ValueError (pybind11 translates std::invalid_argument), not
// ring3.Error: they are the caller's bug, not the device's or the system's.
[[noreturn]] void invalid_argument(const std::string& message) {
    throw std::invalid_argument(message);
}

std::uint64_t checked_value(std::uint64_t value, unsigned bits, const char* what) {
    if (bits < 64 && value >> bits != 0) {
        invalid_argument(fmt::format("{}: value {:#x} does not fit in {} bits", what, value, bits));
    }
    return value;
}

IrqKind parse_irq_kind(const std::string& kind) {
    if (kind == "intx") {
        return IrqKind::intx;
    }
    if (kind == "msi") {
        return IrqKind::msi;
    }
    if (kind == "msix") {
        return IrqKind::msix;
    }
    invalid_argument(fmt::format("interrupt kind '{}': expected 'intx', 'msi' or 'msix'", kind));
}

struct DmaOptions {
    std::size_t max_size = std::size_t{64} << 20;
    dma::HugePages huge_pages = dma::HugePages::automatic;
};

class DeviceHandle {
  public:
    DeviceHandle(std::unique_ptr<Device> device, DmaOptions dma) noexcept
        : device_(std::move(device)), dma_options_(dma) {}
    DeviceHandle(const DeviceHandle&) = delete;
    DeviceHandle& operator=(const DeviceHandle&) = delete;
    ~DeviceHandle() {
        pool_.reset();
        arena_.reset();
        device_.reset();
    }

    Device& device() const noexcept { return *device_; }

    // The arena is made on the first allocation: a program that only reads registers needs none
    // (and UIO's needs hugepages).
    dma::DmaPool& pool() {
        if (!pool_) {
            dma::ArenaOptions options;
            options.max_size = dma_options_.max_size;
            options.huge_pages = dma_options_.huge_pages;
            options.name = "ring3-python-dma";
            auto arena = dma::DmaArena::create(options);
            const std::size_t space = arena->attach(device_->iova_space());
            arena_ = std::move(arena);
            pool_ = std::make_unique<dma::DmaPool>(*arena_, space);
        }
        return *pool_;
    }

  private:
    std::unique_ptr<Device> device_;
    DmaOptions dma_options_;
    std::unique_ptr<dma::DmaArena> arena_;
    std::unique_ptr<dma::DmaPool> pool_;
};
using DeviceRef = std::shared_ptr<DeviceHandle>;

class Bar {
  public:
    Bar(DeviceRef owner, unsigned index, bool write_combining)
        : owner_(std::move(owner)),
          index_(index),
          region_(
              open_region_access(owner_->device(), index,
                                 write_combining ? MapMode::write_combining : MapMode::uncached)) {}

    unsigned index() const noexcept { return index_; }
    std::uint64_t size() const noexcept { return region_->size(); }
    bool mapped() const noexcept { return region_->mapped() != nullptr; }
    const std::string& name() const noexcept { return region_->name(); }
    // RegionAccess checks bounds and alignment before touching anything.
    pci::RegionAccess& region() { return *region_; }

  private:
    DeviceRef owner_;  // declared first: destroyed after the region
    unsigned index_;
    std::unique_ptr<pci::RegionAccess> region_;
};

class Buffer {
  public:
    Buffer(DeviceRef owner, std::size_t size, std::size_t alignment)
        : owner_(std::move(owner)), buffer_(owner_->pool().allocate(size, alignment)) {}

    std::uint64_t iova() const noexcept { return buffer_.iova(); }
    std::size_t size() const noexcept { return buffer_.size(); }
    std::byte* data() const noexcept { return buffer_.data(); }

  private:
    // No free(): the memory goes back when the Python object dies, which a memoryview or numpy
    // array over it prevents (they hold a reference), so no view outlives the memory.
    DeviceRef owner_;  // declared first: the pool outlives the buffer
    dma::DmaBuffer buffer_;
};

class Vector {
  public:
    Vector(DeviceRef owner, irq::Interrupt interrupt, IrqKind kind, unsigned index)
        : owner_(std::move(owner)), interrupt_(std::move(interrupt)), kind_(kind), index_(index) {}

    irq::Interrupt& interrupt() { return interrupt_; }
    IrqKind kind() const noexcept { return kind_; }
    unsigned index() const noexcept { return index_; }

  private:
    DeviceRef owner_;
    irq::Interrupt interrupt_;
    IrqKind kind_;
    unsigned index_;
};

// None: wait for ever (a day at a time).
std::chrono::microseconds to_timeout(std::optional<double> seconds) {
    if (!seconds) {
        return std::chrono::hours(24);
    }
    if (!std::isfinite(*seconds) || *seconds < 0) {
        invalid_argument(fmt::format("timeout {}: expected seconds >= 0 or None", *seconds));
    }
    return std::chrono::microseconds(static_cast<std::int64_t>(std::min(*seconds, 86400.0) * 1e6));
}

void bind_error(py::module_& m) {
    error_type = PyErr_NewExceptionWithDoc(
        "ring3.Error",
        "An error from ring3 (ring3::Error): an OSError whose str() is ring3's message\n"
        "(\"<operation> <object>: <reason>\"), with errno, operation, object and reason.",
        PyExc_OSError, nullptr);
    if (error_type == nullptr) {
        throw py::error_already_set();
    }
    m.attr("Error") = py::reinterpret_borrow<py::object>(error_type);
    py::register_exception_translator([](std::exception_ptr thrown) {
        try {
            if (thrown) {
                std::rethrow_exception(thrown);
            }
        } catch (const Error& e) {
            py::object exception =
                py::reinterpret_borrow<py::object>(error_type)(py::str(e.what()));
            exception.attr("errno") = e.errnum();
            exception.attr("operation") = e.operation();
            exception.attr("object") = e.object();
            exception.attr("reason") = e.reason();
            PyErr_SetObject(error_type, exception.ptr());
        }
    });
}

void bind_bar(py::module_& m) {
    py::class_<Bar, std::shared_ptr<Bar>> bar(m, "Bar",
                                              "A device BAR: bounds- and alignment-checked "
                                              "register accesses (ring3.Error when outside).");
    bar.def_property_readonly("index", &Bar::index)
        .def_property_readonly("size", &Bar::size)
        .def_property_readonly("mapped", &Bar::mapped,
                               "True when mapped into this process (else each access is a "
                               "system call)")
        .def_property_readonly("name", &Bar::name)
        .def("__len__", &Bar::size)
        .def("__repr__", [](const Bar& b) {
            return fmt::format("<ring3.Bar {} size={:#x}>", b.name(), b.size());
        });
    bar.def("read8", [](Bar& b, std::uint64_t offset) { return b.region().read8(offset); })
        .def("read16", [](Bar& b, std::uint64_t offset) { return b.region().read16(offset); })
        .def("read32", [](Bar& b, std::uint64_t offset) { return b.region().read32(offset); })
        .def("read64", [](Bar& b, std::uint64_t offset) { return b.region().read64(offset); })
        .def("write8",
             [](Bar& b, std::uint64_t offset, std::uint64_t value) {
                 b.region().write8(
                     offset, static_cast<std::uint8_t>(checked_value(value, 8, "Bar.write8")));
             })
        .def("write16",
             [](Bar& b, std::uint64_t offset, std::uint64_t value) {
                 b.region().write16(
                     offset, static_cast<std::uint16_t>(checked_value(value, 16, "Bar.write16")));
             })
        .def("write32",
             [](Bar& b, std::uint64_t offset, std::uint64_t value) {
                 b.region().write32(
                     offset, static_cast<std::uint32_t>(checked_value(value, 32, "Bar.write32")));
             })
        .def("write64", [](Bar& b, std::uint64_t offset, std::uint64_t value) {
            b.region().write64(offset, value);
        });
}

void bind_buffer(py::module_& m) {
    py::class_<Buffer, std::shared_ptr<Buffer>>(
        m, "DmaBuffer", py::buffer_protocol(),
        "Memory the device reaches at .iova; a writable buffer (memoryview, bytes(), "
        "numpy.frombuffer) without copies. Keeps its device alive.")
        .def_property_readonly("iova", &Buffer::iova)
        .def_property_readonly("size", &Buffer::size)
        .def("__len__", &Buffer::size)
        .def("__repr__",
             [](const Buffer& b) {
                 return fmt::format("<ring3.DmaBuffer iova={:#x} size={}>", b.iova(), b.size());
             })
        .def_buffer([](Buffer& b) {
            return py::buffer_info(b.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                                   {static_cast<py::ssize_t>(b.size())}, {py::ssize_t{1}},
                                   /*readonly=*/false);
        });
}

void bind_vector(py::module_& m) {
    py::class_<Vector, std::shared_ptr<Vector>>(
        m, "Interrupt",
        "One interrupt vector: an eventfd (or /dev/uioN for UIO INTx). wait(), fileno() for "
        "select/epoll, wait_async() for asyncio.")
        .def_property_readonly("kind",
                               [](const Vector& v) { return std::string(to_string(v.kind())); })
        .def_property_readonly("index", &Vector::index)
        .def_property_readonly("name", [](Vector& v) { return v.interrupt().name(); })
        .def("fileno", [](Vector& v) { return v.interrupt().fd(); })
        .def(
            "wait",
            [](Vector& v, std::optional<double> timeout) -> std::uint64_t {
                // In slices, so that Ctrl-C (a Python signal handler) is honoured while waiting.
                constexpr std::chrono::microseconds kSlice{200'000};
                const auto limit = to_timeout(timeout);
                const auto deadline = std::chrono::steady_clock::now() + limit;
                for (;;) {
                    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
                        deadline - std::chrono::steady_clock::now());
                    std::uint64_t count = 0;
                    {
                        py::gil_scoped_release unlocked;
                        count = v.interrupt().wait(
                            std::clamp(left, std::chrono::microseconds{0}, kSlice));
                    }
                    if (count != 0) {
                        return count;
                    }
                    if (PyErr_CheckSignals() != 0) {
                        throw py::error_already_set();
                    }
                    if (timeout && left <= kSlice) {
                        return 0;
                    }
                }
            },
            py::arg("timeout") = py::none(),
            "Blocks up to `timeout` seconds (None: until it comes); returns how many interrupts "
            "arrived since the last wait, 0 on timeout.")
        .def(
            "drain", [](Vector& v) { return v.interrupt().drain(); },
            "Consumes pending interrupts without blocking; returns how many")
        .def(
            "rearm", [](Vector& v) { v.interrupt().rearm(); },
            "UIO INTx: re-enables the interrupt after the device's cause was cleared; no-op "
            "otherwise")
        .def(
            "signal", [](Vector& v) { v.interrupt().signal(); },
            "Signals the eventfd from this process (tests; waking a waiter)")
        .def("__repr__", [](Vector& v) {
            return fmt::format("<ring3.Interrupt {} {} fd={}>", to_string(v.kind()), v.index(),
                               v.interrupt().fd());
        });
}

std::uint32_t config_offset(std::int64_t offset, unsigned width) {
    if (offset < 0 || offset > 0xfff) {
        invalid_argument(fmt::format("config offset {:#x}: expected 0..0xfff", offset));
    }
    if (offset % width != 0) {
        invalid_argument(
            fmt::format("config offset {:#x}: not aligned to the {}-byte access", offset, width));
    }
    return static_cast<std::uint32_t>(offset);
}

void bind_device(py::module_& m) {
    py::class_<DeviceHandle, DeviceRef> device(m, "Device",
                                               "A PCI device opened with ring3.open(spec).");
    device.def_property_readonly("name", [](DeviceHandle& d) { return d.device().name(); })
        .def_property_readonly("bdf",
                               [](DeviceHandle& d) -> std::optional<std::string> {
                                   const auto address = d.device().address();
                                   if (!address) {
                                       return std::nullopt;
                                   }
                                   return address->to_string();
                               })
        .def_property_readonly("vendor_id", [](DeviceHandle& d) { return d.device().vendor_id(); })
        .def_property_readonly("device_id", [](DeviceHandle& d) { return d.device().device_id(); })
        .def_property_readonly("class_code",
                               [](DeviceHandle& d) { return d.device().class_code(); })
        .def("__repr__", [](DeviceHandle& d) {
            return fmt::format("<ring3.Device {} {:04x}:{:04x}>", d.device().name(),
                               d.device().vendor_id(), d.device().device_id());
        });

    device
        .def("config_read8",
             [](DeviceHandle& d, std::int64_t offset) {
                 return d.device().config_read8(config_offset(offset, 1));
             })
        .def("config_read16",
             [](DeviceHandle& d, std::int64_t offset) {
                 return d.device().config_read16(config_offset(offset, 2));
             })
        .def("config_read32",
             [](DeviceHandle& d, std::int64_t offset) {
                 return d.device().config_read32(config_offset(offset, 4));
             })
        .def("config_write8",
             [](DeviceHandle& d, std::int64_t offset, std::uint64_t value) {
                 d.device().config_write8(
                     config_offset(offset, 1),
                     static_cast<std::uint8_t>(checked_value(value, 8, "config_write8")));
             })
        .def("config_write16",
             [](DeviceHandle& d, std::int64_t offset, std::uint64_t value) {
                 d.device().config_write16(
                     config_offset(offset, 2),
                     static_cast<std::uint16_t>(checked_value(value, 16, "config_write16")));
             })
        .def("config_write32", [](DeviceHandle& d, std::int64_t offset, std::uint64_t value) {
            d.device().config_write32(
                config_offset(offset, 4),
                static_cast<std::uint32_t>(checked_value(value, 32, "config_write32")));
        });

    device
        .def_property(
            "bus_master", [](DeviceHandle& d) { return d.device().bus_master(); },
            [](DeviceHandle& d, bool enable) { d.device().set_bus_master(enable); },
            "PCI Command bit 2: gates the device's DMA and its MSI/MSI-X")
        .def_property_readonly("can_reset", [](DeviceHandle& d) { return d.device().can_reset(); })
        .def(
            "reset",
            [](DeviceHandle& d) {
                py::gil_scoped_release unlocked;
                d.device().reset();
            },
            "Function-level (or the backend's) reset")
        .def(
            "map_bar",
            [](const DeviceRef& d, std::int64_t index, bool write_combining) {
                if (index < 0 || index > 5) {
                    invalid_argument(fmt::format("BAR index {}: expected 0..5", index));
                }
                return std::make_shared<Bar>(d, static_cast<unsigned>(index), write_combining);
            },
            py::arg("index"), py::arg("write_combining") = false)
        .def(
            "dma_alloc",
            [](const DeviceRef& d, std::int64_t size, std::int64_t alignment) {
                if (size <= 0) {
                    invalid_argument(fmt::format("DMA buffer size {}: expected > 0", size));
                }
                if (alignment <= 0 || (alignment & (alignment - 1)) != 0) {
                    invalid_argument(
                        fmt::format("DMA alignment {}: expected a power of two", alignment));
                }
                return std::make_shared<Buffer>(d, static_cast<std::size_t>(size),
                                                static_cast<std::size_t>(alignment));
            },
            py::arg("size"), py::arg("alignment") = 4096,
            "Zeroed DMA memory from the device's arena, contiguous for the device")
        .def(
            "irq_count",
            [](DeviceHandle& d, const std::string& kind) {
                return d.device().irq_count(parse_irq_kind(kind));
            },
            py::arg("kind"))
        .def(
            "enable_irqs",
            [](const DeviceRef& d, const std::string& kind_name, std::int64_t count) {
                const IrqKind kind = parse_irq_kind(kind_name);
                if (count <= 0) {
                    invalid_argument(fmt::format("vector count {}: expected > 0", count));
                }
                std::vector<irq::Interrupt> interrupts =
                    d->device().enable_irqs(kind, static_cast<unsigned>(count));
                std::vector<std::shared_ptr<Vector>> vectors;
                for (unsigned i = 0; i < interrupts.size(); ++i) {
                    vectors.push_back(
                        std::make_shared<Vector>(d, std::move(interrupts[i]), kind, i));
                }
                return vectors;
            },
            py::arg("kind"), py::arg("count") = 1,
            "Enables vectors 0..count-1 of `kind` ('intx', 'msi', 'msix') at once, replacing "
            "what was enabled; returns one Interrupt each")
        .def(
            "disable_irqs",
            [](DeviceHandle& d, const std::string& kind) {
                d.device().disable_irqs(parse_irq_kind(kind));
            },
            py::arg("kind"))
        .def("unmask_intx", [](DeviceHandle& d) { d.device().unmask_intx(); });
}

}  // namespace
}  // namespace ring3::python

PYBIND11_MODULE(_ring3, m) {
    using namespace ring3;
    using namespace ring3::python;
    m.doc() = "ring3: user-space PCI drivers (the C++ part; import ring3)";
    bind_error(m);
    bind_bar(m);
    bind_buffer(m);
    bind_vector(m);
    bind_device(m);
    m.def(
        "open",
        [](const std::string& spec, std::int64_t dma_max_size, const std::string& huge_pages) {
            DmaOptions dma;
            if (dma_max_size <= 0) {
                invalid_argument(fmt::format("dma_max_size {}: expected > 0", dma_max_size));
            }
            dma.max_size = static_cast<std::size_t>(dma_max_size);
            if (huge_pages == "auto") {
                dma.huge_pages = dma::HugePages::automatic;
            } else if (huge_pages == "required") {
                dma.huge_pages = dma::HugePages::required;
            } else if (huge_pages == "never") {
                dma.huge_pages = dma::HugePages::never;
            } else {
                invalid_argument(fmt::format(
                    "huge_pages '{}': expected 'auto', 'required' or 'never'", huge_pages));
            }
            std::unique_ptr<Device> device;
            {
                py::gil_scoped_release unlocked;  // a ring3d claim waits on a socket
                device = open_device(spec);
            }
            return std::make_shared<DeviceHandle>(std::move(device), dma);
        },
        py::arg("spec"), py::arg("dma_max_size") = std::int64_t{64} << 20,
        py::arg("huge_pages") = "auto",
        "Opens a device by spec: 'vfio:BDF', 'uio:BDF', 'ring3d:BDF' or a bare BDF. "
        "dma_max_size bounds its DMA arena (device addresses grow from low ones).");
}
