// run_as UID CMD...: drop to UID (and GID = UID, no supplementary groups) and exec CMD. The
// guest's busybox has no setpriv --reuid; guest cases use this to test unprivileged use.
#include <grp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: run_as UID CMD [ARG...]\n");
        return 2;
    }
    const auto id = static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10));
    if (::setgroups(0, nullptr) != 0 || ::setresgid(id, id, id) != 0 ||
        ::setresuid(id, id, id) != 0) {
        std::perror("run_as: dropping privileges");
        return 2;
    }
    ::execvp(argv[2], argv + 2);
    std::perror("run_as: exec");
    return 127;
}
