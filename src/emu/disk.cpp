#include "ring3/emu/disk.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ring3/core/error.hpp"
#include "ring3/core/unique_fd.hpp"

namespace ring3::emu {

Mapping map_disk(std::uint64_t size, const std::string& backing, const char* what) {
    if (backing.empty()) {
        return Mapping::map(-1, size, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, 0, what);
    }
    UniqueFd file = UniqueFd::open(backing, O_RDWR | O_CREAT, 0644);
    struct stat st {};
    if (fstat(file.get(), &st) != 0) {
        throw Error::from_errno("stat backing file", backing);
    }
    if (!S_ISREG(st.st_mode)) {
        throw Error::invalid("use backing file", backing, "not a regular file");
    }
    if (static_cast<std::uint64_t>(st.st_size) < size &&
        ftruncate(file.get(), static_cast<off_t>(size)) != 0) {
        throw Error::from_errno("extend backing file", backing);
    }
    return Mapping::map(file.get(), size, PROT_READ | PROT_WRITE, MAP_SHARED, 0, backing);
}

}  // namespace ring3::emu
