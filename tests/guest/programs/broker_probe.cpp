// ring3_guest_broker_probe: talks to ring3d on its socket the way a careless or hostile client
// would, with code of its own (raw SEQPACKET messages, not ring3's client), for the ring3d guest
// case.
//   flood SOCKET PID CLIENTS N   N bad requests spread over CLIENTS connections (malformed JSON,
//                                oversized, fds attached, unknown verbs and keys, wrong version,
//                                claims of absent devices); every one must be answered with
//                                "ok":false; prints ring3d's (PID) VmRSS before and after
//   request SOCKET JSON          one request, the reply printed (and the number of fds with it)
//   kill PID                     SIGKILL to PID; prints "killed pid=PID realtime_ns=T", the
//                                CLOCK_REALTIME just before the signal (the ring3d-supervise case
//                                times a restart from it)
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

namespace {

int connect_to(const char* path) {
    const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        std::perror("broker_probe: connect");
        std::exit(2);
    }
    return fd;
}

// Sends `text` (with `fds` attached) and returns the reply and how many fds came with it.
std::string exchange(int fd, const std::string& text, const std::vector<int>& fds, int* got_fds) {
    iovec iov{const_cast<char*>(text.data()), text.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
    if (!fds.empty()) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    if (::sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) {
        std::perror("broker_probe: sendmsg");
        std::exit(2);
    }
    char buffer[8192];
    iovec in{buffer, sizeof buffer};
    msghdr reply{};
    reply.msg_iov = &in;
    reply.msg_iovlen = 1;
    alignas(cmsghdr) char rcontrol[CMSG_SPACE(sizeof(int) * 8)] = {};
    reply.msg_control = rcontrol;
    reply.msg_controllen = sizeof rcontrol;
    const ssize_t n = ::recvmsg(fd, &reply, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
        std::fprintf(stderr, "broker_probe: no reply to %.60s\n", text.c_str());
        std::exit(1);
    }
    *got_fds = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&reply); c != nullptr; c = CMSG_NXTHDR(&reply, c)) {
        const int count = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
            ::close(received);
        }
        *got_fds += count;
    }
    return std::string(buffer, static_cast<std::size_t>(n));
}

long rss_kib(const char* pid) {
    std::ifstream status(std::string("/proc/") + pid + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::atol(line.c_str() + 6);
        }
    }
    return -1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::strcmp(argv[1], "kill") == 0) {
        const pid_t pid = static_cast<pid_t>(std::atol(argv[2]));
        timespec t{};
        ::clock_gettime(CLOCK_REALTIME, &t);
        if (pid <= 0 || ::kill(pid, SIGKILL) != 0) {
            std::perror("broker_probe: kill");
            return 2;
        }
        std::printf("killed pid=%ld realtime_ns=%lld\n", static_cast<long>(pid),
                    static_cast<long long>(t.tv_sec) * 1000000000LL + t.tv_nsec);
        return 0;
    }
    if (argc == 4 && std::strcmp(argv[1], "request") == 0) {
        const int fd = connect_to(argv[2]);
        int fds = 0;
        const std::string reply = exchange(fd, argv[3], {}, &fds);
        std::printf("%s\nfds: %d\n", reply.c_str(), fds);
        return 0;
    }
    if (argc != 6 || std::strcmp(argv[1], "flood") != 0) {
        std::fprintf(stderr,
                     "usage: ring3_guest_broker_probe flood SOCKET PID CLIENTS N | "
                     "request SOCKET JSON\n");
        return 2;
    }
    const char* path = argv[2];
    const int clients = std::atoi(argv[4]);
    const long total = std::atol(argv[5]);
    const long before = rss_kib(argv[3]);
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const std::string big(6000, '{');
    const std::string kinds[] = {
        "{not json",
        "[1,2,3]",
        R"({"version":1,"verb":"clam"})",
        R"({"version":9,"verb":"list"})",
        R"({"version":1,"verb":"claim"})",
        R"({"version":1,"verb":"claim","device":"0000:7f:1f.7"})",
        R"({"version":1,"verb":"claim","device":"zz:zz"})",
        R"({"version":1,"verb":"list","extra":1})",
        R"({"version":1,"verb":"release","device":"0000:00:00.0"})",
        big,
        "fds",  // a valid-looking request with a descriptor attached
    };
    std::vector<int> sockets;
    for (int c = 0; c < clients; ++c) {
        sockets.push_back(connect_to(path));
    }
    long refused = 0;
    for (long i = 0; i < total; ++i) {
        const std::string& kind = kinds[i % (sizeof kinds / sizeof kinds[0])];
        int got = 0;
        const bool with_fd = kind == "fds";
        const std::string reply =
            exchange(sockets[static_cast<std::size_t>(i % clients)],
                     with_fd ? R"({"version":1,"verb":"list"})" : kind,
                     with_fd ? std::vector<int>{null_fd} : std::vector<int>{}, &got);
        if (reply.find("\"ok\":false") == std::string::npos || got != 0) {
            std::fprintf(stderr, "broker_probe: request %ld (%.40s) was not refused: %s\n", i,
                         kind.c_str(), reply.c_str());
            return 1;
        }
        ++refused;
    }
    for (const int s : sockets) {
        ::close(s);
    }
    const long after = rss_kib(argv[3]);
    std::printf("refused %ld of %ld bad requests over %d connections\n", refused, total, clients);
    std::printf("ring3d VmRSS before %ld KiB, after %ld KiB\n", before, after);
    return 0;
}
