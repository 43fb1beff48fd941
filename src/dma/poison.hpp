// AddressSanitizer poisoning of free DMA memory, and nothing at all in other builds.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define RING3_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RING3_ASAN 1
#endif
#endif

#ifdef RING3_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace ring3::dma {

inline void poison(const void* p, std::size_t size) noexcept {
#ifdef RING3_ASAN
    ASAN_POISON_MEMORY_REGION(p, size);
#else
    (void)p;
    (void)size;
#endif
}

inline void unpoison(const void* p, std::size_t size) noexcept {
#ifdef RING3_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, size);
#else
    (void)p;
    (void)size;
#endif
}

}  // namespace ring3::dma
