// A replacement operator new that counts allocations, for tests that prove a code path
// allocates nothing (tests/guest/programs/nvme_test.cpp, NvmePollMode).
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

std::atomic<std::uint64_t> g_allocations{0};

void* operator new(std::size_t size) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) {
        return p;
    }
    throw std::bad_alloc();
}

void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
