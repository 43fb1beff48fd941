// ring3d's server (server.hpp).
#include "server.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <fmt/format.h>
#include <linux/vfio.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ring3/core/error.hpp"
#include "ring3/core/log.hpp"
#include "ring3/pci/bind.hpp"

namespace ring3::broker {
namespace {

constexpr int kListenerTag = -1;
// How long the owner of a revoked device has to let go before ring3d kills it.
constexpr std::chrono::seconds kRevokeGrace{10};
constexpr int kSignalTag = -2;

std::string ok_reply(nlohmann::json body = nlohmann::json::object()) {
    body["ok"] = true;
    return body.dump();
}

std::string iso_time(std::chrono::system_clock::time_point t) {
    const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    ::gmtime_r(&seconds, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

std::string owner_text(pid_t pid, uid_t uid, const std::string& user,
                       std::chrono::system_clock::time_point since) {
    return fmt::format("pid {} (user {}{}) since {}", pid, uid, user.empty() ? "" : " " + user,
                       iso_time(since));
}

void add_to_epoll(int epoll, int fd, int tag) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP;
    event.data.fd = tag == 0 ? fd : tag;
    if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) {
        throw Error::from_errno("watch", fmt::format("fd {}", fd));
    }
}

// Leaves the device as ring3d found it before handing it out: no DMA, no interrupts, reset
// (VFIO_DEVICE_RESET: FLR or whatever reset the device has). `opened` is consumed.
void quiesce(const pci::Address& address, vfio::OpenedDevice opened) {
    try {
        auto device =
            vfio::adopt(address, std::move(opened.container), std::move(opened.device_fd));
        try {
            device->set_bus_master(false);
        } catch (const std::exception& e) {
            log_warn("{}: turning bus mastering off: {}", address.to_string(), e.what());
        }
        for (const IrqKind kind : {IrqKind::msix, IrqKind::msi, IrqKind::intx}) {
            try {
                if (device->irq_count(kind) != 0) {
                    device->disable_irqs(kind);
                }
            } catch (const std::exception&) {
                // Nothing was enabled through this fd: VFIO says so; not a problem.
            }
        }
        try {
            device->reset();
        } catch (const std::exception& e) {
            log_warn("{}: reset after the claim: {}", address.to_string(), e.what());
        }
    } catch (const std::exception& e) {
        log_warn("{}: quiesce after the claim: {}", address.to_string(), e.what());
    }
}

}  // namespace

std::string error_reply(const std::string& message, int code) {
    return nlohmann::json{{"ok", false}, {"error", message}, {"errno", code}}.dump();
}

Server::Server(Policy policy, ServerOptions options)
    : policy_(std::move(policy)), options_(std::move(options)) {}

Server::~Server() = default;

Server::Managed* Server::managed(const pci::Address& address) {
    for (Managed& m : devices_) {
        if (m.info.address == address) {
            return &m;
        }
    }
    return nullptr;
}

void Server::prepare() {
    const pci::Sysfs sysfs(options_.sysfs_root);
    devices_.clear();
    for (const pci::DeviceInfo& info : sysfs.devices()) {
        if (policy_.rule_for(info.address, info.vendor_id, info.device_id, info.class_code) ==
            nullptr) {
            continue;
        }
        Managed m;
        m.info = info;
        if (options_.bind && info.driver != "vfio-pci") {
            try {
                pci::BindEnvironment environment;
                environment.sysfs_root = options_.sysfs_root;
                pci::DriverBinder(environment).bind(info.address, "vfio-pci");
                m.info = sysfs.device(info.address);
            } catch (const Error& e) {
                m.note = e.what();
            }
        }
        if (m.note.empty() && m.info.driver != "vfio-pci") {
            m.note = fmt::format("bound to {}, not vfio-pci",
                                 m.info.driver.empty() ? "no driver" : m.info.driver);
        }
        if (m.note.empty() && m.info.iommu_group) {
            const pci::IommuGroup group = sysfs.iommu_group(*m.info.iommu_group);
            if (!group.viable_for_vfio()) {
                std::string others;
                for (const auto& member : group.members_on_kernel_drivers()) {
                    others += fmt::format("{}{} ({})", others.empty() ? "" : ", ", member.name,
                                          member.driver);
                }
                m.note = fmt::format("IOMMU group {} is not viable: {}", group.number, others);
            }
        }
        log_info("ring3d: manages {} [{:04x}:{:04x}]{}", m.info.address.to_string(),
                 m.info.vendor_id, m.info.device_id,
                 m.note.empty() ? "" : fmt::format(" (cannot hand it out: {})", m.note));
        devices_.push_back(std::move(m));
    }
    if (devices_.empty()) {
        log_warn("ring3d: the policy {} names no device present here", policy_.file);
    }

    // The socket: a SOCK_SEQPACKET Unix socket anyone may connect to; the policy decides.
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (options_.socket.size() >= sizeof address.sun_path) {
        throw Error::invalid("listen", options_.socket, "the socket path is too long",
                             ENAMETOOLONG);
    }
    std::memcpy(address.sun_path, options_.socket.data(), options_.socket.size());
    listener_ = UniqueFd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listener_) {
        throw Error::from_errno("create the listening socket", options_.socket);
    }
    ::unlink(options_.socket.c_str());  // a stale socket of an earlier ring3d
    if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        throw Error::from_errno("bind the listening socket", options_.socket);
    }
    ::chmod(options_.socket.c_str(), 0666);
    if (::listen(listener_.get(), 64) != 0) {
        throw Error::from_errno("listen on", options_.socket);
    }

    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) {
        throw Error::from_errno("create", "an epoll instance");
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    signals_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signals_) {
        throw Error::from_errno("create", "a signalfd");
    }
    add_to_epoll(epoll_.get(), listener_.get(), kListenerTag);
    add_to_epoll(epoll_.get(), signals_.get(), kSignalTag);
    recover_claims();
    start_drivers();
}

// The claims, as a restarted ring3d needs them: written atomically (a new file renamed over the
// old) after every change.
void Server::save_claims() const {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [bdf, c] : claims_) {
        list.push_back(
            {{"address", bdf},
             {"pid", c.pid},
             {"uid", c.uid},
             {"user", c.user},
             {"since", std::chrono::duration_cast<std::chrono::seconds>(c.since.time_since_epoch())
                           .count()}});
    }
    const std::string temporary = options_.state_file + ".new";
    {
        std::ofstream out(temporary, std::ios::trunc);
        out << list.dump() << "\n";
        if (!out) {
            log_warn("ring3d: cannot record the claims in {}", temporary);
            return;
        }
    }
    if (std::rename(temporary.c_str(), options_.state_file.c_str()) != 0) {
        log_warn("ring3d: cannot record the claims in {}: {}", options_.state_file,
                 std::strerror(errno));
    }
}

// After a restart: a claim whose owner still runs is kept (ring3 ps shows it, a second claim is
// refused) and its owner watched; one whose owner is gone is ended now (its device quiesced).
void Server::recover_claims() {
    std::ifstream in(options_.state_file);
    if (!in) {
        return;
    }
    std::stringstream text;
    text << in.rdbuf();
    const nlohmann::json list = nlohmann::json::parse(text.str(), nullptr, false);
    if (!list.is_array()) {
        log_warn("ring3d: {} is not a claims record; ignored", options_.state_file);
        return;
    }
    for (const auto& entry : list) {
        try {
            const pci::Address address =
                pci::Address::parse(entry.at("address").get<std::string>());
            Claim c;
            c.address = address;
            c.pid = entry.at("pid").get<pid_t>();
            c.uid = entry.at("uid").get<uid_t>();
            c.user = entry.at("user").get<std::string>();
            c.since = std::chrono::system_clock::time_point(
                std::chrono::seconds(entry.at("since").get<std::int64_t>()));
            const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, c.pid, 0));
            if (pidfd < 0 || managed(address) == nullptr) {
                if (pidfd >= 0) {
                    ::close(pidfd);
                }
                log_info("ring3d: the recorded owner of {} (pid {}) is gone; quiescing it",
                         address.to_string(), c.pid);
                OpenOptions open;
                open.sysfs_root = options_.sysfs_root;
                open.dev_root = options_.dev_root;
                try {
                    quiesce(address, vfio::open_fds(address, open));
                } catch (const std::exception& e) {
                    log_warn("ring3d: {}: {}", address.to_string(), e.what());
                }
                continue;
            }
            c.pidfd = UniqueFd(pidfd);
            add_to_epoll(epoll_.get(), pidfd, 0);
            watched_.emplace(pidfd, address.to_string());
            log_info("ring3d: {} is still held by {} (recovered)", address.to_string(),
                     owner_text(c.pid, c.uid, c.user, c.since));
            claims_.emplace(address.to_string(), std::move(c));
        } catch (const std::exception& e) {
            log_warn("ring3d: a recorded claim in {} is unreadable ({}); ignored",
                     options_.state_file, e.what());
        }
    }
    save_claims();
}

int Server::run() {
    epoll_event events[32];
    for (;;) {
        // Idle time opens devices ahead of their claims; events come first.
        int n = ::epoll_wait(epoll_.get(), events, 32, 0);
        if (n == 0 && warm_one()) {
            continue;
        }
        if (n == 0) {
            n = ::epoll_wait(epoll_.get(), events, 32, next_timeout_ms());
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw Error::from_errno("wait for", "events");
        }
        for (int i = 0; i < n; ++i) {
            const int tag = events[i].data.fd;
            if (tag == kListenerTag) {
                accept_clients();
            } else if (tag == kSignalTag) {
                signalfd_siginfo info{};
                while (::read(signals_.get(), &info, sizeof info) == sizeof info) {
                    if (info.ssi_signo == SIGHUP) {
                        reload();
                    } else {
                        stop_drivers();
                        log_info(
                            "ring3d: signal {}: stopping ({} claim(s) stay with their "
                            "owners)",
                            info.ssi_signo, claims_.size());
                        return 0;
                    }
                }
            } else if (children_.count(tag) != 0) {
                driver_exited(tag);
            } else if (const auto request = requests_.find(tag); request != requests_.end()) {
                std::uint64_t count = 0;
                [[maybe_unused]] const auto n_read = ::read(tag, &count, sizeof count);
                revoke(request->second);
            } else if (auto owner = watched_.find(tag); owner != watched_.end()) {
                // A recovered claim's owner exited.
                const std::string bdf = owner->second;
                ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, tag, nullptr);
                watched_.erase(owner);
                end_claim(pci::Address::parse(bdf), "its process exited");
                if (auto d = drivers_.find(bdf);
                    d != drivers_.end() && d->second.state == Driver::State::waiting) {
                    start(d->second);  // the previous ring3d's driver is gone: ours now
                }
            } else if (auto found = clients_.find(tag); found != clients_.end()) {
                if ((events[i].events & EPOLLIN) != 0) {
                    serve(found->second);
                }
                // serve() may have dropped the client.
                if (clients_.count(tag) != 0 &&
                    (events[i].events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) != 0 &&
                    (events[i].events & EPOLLIN) == 0) {
                    closed(tag);
                }
            }
        }
        deadlines_due();
    }
}

void Server::accept_clients() {
    for (;;) {
        UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                log_warn("ring3d: accept: {}", std::strerror(errno));
            }
            return;
        }
        if (clients_.size() >= options_.max_clients) {
            try {
                send_message(fd.get(), error_reply(fmt::format("ring3d serves at most {} "
                                                               "connections at once",
                                                               options_.max_clients),
                                                   EMFILE));
            } catch (const std::exception&) {
            }
            continue;  // closed
        }
        ucred cred{};
        socklen_t length = sizeof cred;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
            log_warn("ring3d: SO_PEERCRED: {}", std::strerror(errno));
            continue;
        }
        ++stats_.clients;
        const int key = fd.get();
        add_to_epoll(epoll_.get(), key, 0);
        Client client;
        client.fd = std::move(fd);
        client.pid = cred.pid;
        client.who = identity_of(cred.uid, cred.gid);
        // A client sends its request right after connecting: served now if it is there, without
        // a trip through epoll (under emulation every sleep and wake-up costs milliseconds).
        serve(clients_.emplace(key, std::move(client)).first->second);
    }
}

void Server::serve(Client& client) {
    const int key = client.fd.get();
    const auto began = std::chrono::steady_clock::now();
    std::optional<Message> message;
    std::string reply;
    std::vector<int> fds;
    bool granted = false;
    try {
        message = receive_message(key, 0);  // clients send no fds
        if (!message) {
            closed(key);
            return;
        }
        ++stats_.requests;
        reply = handle(client, parse_request(message->text), fds, granted);
    } catch (const Error& e) {
        if (!message && (e.errnum() == EAGAIN || e.errnum() == EWOULDBLOCK)) {
            return;  // a stale readiness event: nothing to read
        }
        ++stats_.requests;
        // The reason alone: the client knows what it asked and about which device.
        ++stats_.bad_requests;
        reply = error_reply(e.reason().empty() ? e.what() : e.reason(), e.errnum());
    } catch (const std::exception& e) {
        ++stats_.bad_requests;
        reply = error_reply(e.what(), EIO);
    }
    try {
        send_message(key, reply, fds);
        if (granted) {
            const Claim& c = claims_.at(client.claim->to_string());
            log_info("ring3d: {} claimed by {}", client.claim->to_string(),
                     owner_text(c.pid, c.uid, c.user, c.since));
            save_claims();
        }
        log_debug("ring3d: request of pid {} served in {} us", client.pid,
                  std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - began)
                      .count());
    } catch (const std::exception& e) {
        log_warn("ring3d: reply to pid {}: {}", client.pid, e.what());
        if (granted) {
            // The grant never arrived: it is void.
            end_claim(*client.claim, "the grant could not be sent");
        }
        drop(key);
    }
}

std::string Server::handle(Client& client, const Request& request, std::vector<int>& fds,
                           bool& granted) {
    switch (request.verb) {
        case Verb::list:
            return list(client);
        case Verb::status:
            return status();
        case Verb::claim:
            return claim(client, *request.device, fds, granted);
        case Verb::release: {
            const std::string bdf = request.device->to_string();
            if (!client.claim || *client.claim != *request.device) {
                throw Error::invalid("release", bdf, "this connection holds no claim on it",
                                     ENOENT);
            }
            end_claim(*request.device, "released");
            ++stats_.releases;
            return ok_reply({{"released", bdf}});
        }
    }
    throw Error::invalid("serve", "request", "unknown verb", EINVAL);
}

std::string Server::claim(Client& client, const pci::Address& address, std::vector<int>& fds,
                          bool& granted) {
    const std::string bdf = address.to_string();
    Managed* m = managed(address);
    if (m == nullptr) {
        throw Error::invalid("claim", bdf,
                             fmt::format("not managed by ring3d: no [[device]] rule of {} names "
                                         "it, or it is not present",
                                         policy_.file),
                             ENODEV);
    }
    const DeviceRule* rule =
        policy_.rule_for(address, m->info.vendor_id, m->info.device_id, m->info.class_code);
    if (rule == nullptr) {
        throw Error::invalid("claim", bdf, "no policy rule names it since the last reload", ENODEV);
    }
    if (const auto d = drivers_.find(bdf); d != drivers_.end()) {
        if (client.supervised != address) {
            throw Error::invalid(
                "claim", bdf,
                fmt::format("reserved for its supervised driver ({}{})",
                            rule->describe(policy_.file),
                            d->second.pid != 0 ? fmt::format(", pid {}", d->second.pid) : ""),
                EBUSY);
        }
    } else if (client.supervised) {
        throw Error::invalid("claim", bdf,
                             fmt::format("this connection is the supervised driver of {}, and "
                                         "may claim that device only",
                                         client.supervised->to_string()),
                             EACCES);
    } else if (const auto why = policy_.refusal(*rule, client.who)) {
        throw Error::invalid("claim", bdf, *why, EACCES);
    }
    if (!m->note.empty()) {
        throw Error::invalid("claim", bdf, "ring3d cannot hand it out: " + m->note, ENODEV);
    }
    if (const auto found = claims_.find(bdf); found != claims_.end()) {
        const Claim& c = found->second;
        throw Error::invalid("claim", bdf,
                             "busy, owned by " + owner_text(c.pid, c.uid, c.user, c.since), EBUSY);
    }
    if (client.claim) {
        throw Error::invalid("claim", bdf,
                             fmt::format("this connection already holds {}; one claim per "
                                         "connection",
                                         client.claim->to_string()),
                             EBUSY);
    }
    vfio::OpenedDevice opened;
    if (m->ready) {
        opened = std::move(*m->ready);
        m->ready.reset();
    } else {
        OpenOptions open;
        open.sysfs_root = options_.sysfs_root;
        open.dev_root = options_.dev_root;
        opened = vfio::open_fds(address, open);
        watch_requests(*m, opened.device_fd.get());
    }
    m->warm_failed = false;
    Claim c;
    c.address = address;
    c.client = client.fd.get();
    c.pid = client.pid;
    c.uid = client.who.uid;
    c.user = client.who.user_name;
    c.since = std::chrono::system_clock::now();
    fds = {opened.container->fd(), opened.device_fd.get()};
    c.opened = std::move(opened);
    granted = true;
    client.claim = address;
    claims_.emplace(bdf, std::move(c));
    ++stats_.claims;
    // The log line and the record (save_claims) are written once the grant is sent (serve()):
    // the claimant does not wait for them. Were ring3d to die in between, the claim would be
    // missing from the record, yet safe: the claimant's open VFIO group makes any other
    // claim fail (the kernel allows one container per group).
    return ok_reply({{"device", bdf}, {"fds", {"container", "device"}}});
}

std::string Server::list(const Client& client) const {
    nlohmann::json devices = nlohmann::json::array();
    for (const Managed& m : devices_) {
        const std::string bdf = m.info.address.to_string();
        nlohmann::json d = {
            {"address", bdf},
            {"id", fmt::format("{:04x}:{:04x}", m.info.vendor_id, m.info.device_id)},
            {"class", fmt::format("{:06x}", m.info.class_code)},
            {"driver", m.info.driver},
            {"available", m.note.empty()},
            {"ready", m.ready.has_value()},
            {"note", m.note},
        };
        const DeviceRule* rule =
            policy_.rule_for(m.info.address, m.info.vendor_id, m.info.device_id, m.info.class_code);
        d["allowed"] = rule != nullptr && !policy_.refusal(*rule, client.who).has_value();
        if (const auto found = claims_.find(bdf); found != claims_.end()) {
            const Claim& c = found->second;
            d["owner"] = {
                {"pid", c.pid}, {"uid", c.uid}, {"user", c.user}, {"since", iso_time(c.since)}};
        } else {
            d["owner"] = nullptr;
        }
        d["supervised"] = driver_json(bdf);
        devices.push_back(std::move(d));
    }
    return ok_reply({{"devices", std::move(devices)}});
}

std::string Server::status() const {
    return ok_reply({{"version", kProtocolVersion},
                     {"pid", ::getpid()},
                     {"policy", policy_.file},
                     {"devices", devices_.size()},
                     {"claims", claims_.size()},
                     {"connections", clients_.size()},
                     {"requests", stats_.requests},
                     {"bad_requests", stats_.bad_requests}});
}

void Server::end_claim(const pci::Address& address, const char* why) {
    const std::string bdf = address.to_string();
    const auto found = claims_.find(bdf);
    if (found == claims_.end()) {
        return;
    }
    Claim c = std::move(found->second);
    claims_.erase(found);
    if (Managed* m = managed(address)) {
        m->warm_failed = false;  // free again: worth opening ahead of the next claim
    }
    if (const auto client = clients_.find(c.client); client != clients_.end()) {
        client->second.claim.reset();
    }
    save_claims();
    log_info("ring3d: {} back from pid {} ({}); quiescing and resetting it", bdf, c.pid, why);
    if (!c.opened.device_fd) {
        // A recovered claim: ring3d holds no references; the owner's are gone with it.
        OpenOptions open;
        open.sysfs_root = options_.sysfs_root;
        open.dev_root = options_.dev_root;
        try {
            c.opened = vfio::open_fds(address, open);
        } catch (const std::exception& e) {
            log_warn("ring3d: {}: cannot open it to quiesce it: {}", bdf, e.what());
            return;
        }
    }
    const auto began = std::chrono::steady_clock::now();
    quiesce(address, std::move(c.opened));
    if (Managed* m = managed(address)) {
        unwatch_requests(*m);
    }
    log_info("ring3d: {} quiesced and reset in {} ms", bdf,
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - began)
                 .count());
}

// A connection's peer closed it. A supervised driver's connection closes when the driver dies,
// a moment before its process can be reaped: waiting that moment lets driver_exited() start its
// successor before the device is quiesced, so that its exec overlaps the reset.
void Server::closed(int fd) {
    const auto found = clients_.find(fd);
    if (found != clients_.end() && found->second.supervised) {
        if (auto d = drivers_.find(found->second.supervised->to_string());
            d != drivers_.end() && d->second.connection == fd && d->second.pidfd) {
            pollfd p{d->second.pidfd.get(), POLLIN, 0};
            if (::poll(&p, 1, 100) == 1) {
                driver_exited(p.fd);
                return;
            }
        }
    }
    drop(fd);
}

void Server::drop(int fd) {
    const auto found = clients_.find(fd);
    if (found == clients_.end()) {
        return;
    }
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    if (found->second.supervised) {
        // The number may be reused at once: the driver no longer owns it.
        if (auto d = drivers_.find(found->second.supervised->to_string());
            d != drivers_.end() && d->second.connection == fd) {
            d->second.connection = -1;
        }
    }
    if (found->second.claim) {
        end_claim(*found->second.claim, "its connection closed");
    }
    clients_.erase(fd);
}

void Server::reload() {
    try {
        Policy fresh = Policy::load(policy_.file);
        policy_ = std::move(fresh);
        log_info("ring3d: policy {} reloaded ({} rule(s))", policy_.file, policy_.devices.size());
    } catch (const Error& e) {
        log_error("ring3d: policy not reloaded, the old one stays: {}", e.what());
        return;
    }
    // Drivers follow the new policy: a new [device.driver] starts, a changed one applies from its
    // next (re)start, a removed one is stopped.
    for (auto& [bdf, d] : drivers_) {
        const Managed* m = managed(d.address);
        const DeviceRule* rule = m == nullptr
                                     ? nullptr
                                     : policy_.rule_for(d.address, m->info.vendor_id,
                                                        m->info.device_id, m->info.class_code);
        if (rule == nullptr || !rule->driver) {
            d.spec.restart = Restart::no;
            d.restart_at.reset();
            if (d.pid != 0) {
                log_info("ring3d: {}: the policy has no driver for it any more; stopping pid {}",
                         bdf, d.pid);
                ::kill(d.pid, SIGTERM);
            } else {
                d.state = Driver::State::stopped;
                d.note = "removed from the policy";
            }
        } else {
            d.spec = *rule->driver;
        }
    }
    start_drivers();
}

bool Server::warm_one() {
    for (Managed& m : devices_) {
        const std::string bdf = m.info.address.to_string();
        if (m.ready || m.warm_failed || !m.note.empty() || claims_.count(bdf) != 0) {
            continue;
        }
        OpenOptions open;
        open.sysfs_root = options_.sysfs_root;
        open.dev_root = options_.dev_root;
        const auto began = std::chrono::steady_clock::now();
        try {
            m.ready = vfio::open_fds(m.info.address, open);
            watch_requests(m, m.ready->device_fd.get());
            log_debug("ring3d: {} opened ahead of its next claim in {} ms", bdf,
                      std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - began)
                          .count());
        } catch (const std::exception& e) {
            m.warm_failed = true;
            log_debug("ring3d: {} not opened ahead of its claim: {}", bdf, e.what());
        }
        return true;
    }
    return false;
}

// The drivers the policy names for the devices ring3d manages and can hand out.
void Server::start_drivers() {
    for (const Managed& m : devices_) {
        const std::string bdf = m.info.address.to_string();
        const DeviceRule* rule =
            policy_.rule_for(m.info.address, m.info.vendor_id, m.info.device_id, m.info.class_code);
        if (rule == nullptr || !rule->driver || drivers_.count(bdf) != 0) {
            continue;
        }
        Driver& d = drivers_[bdf];
        d.address = m.info.address;
        d.spec = *rule->driver;
        if (!m.note.empty()) {
            d.state = Driver::State::failed;
            d.note = "the device cannot be handed out: " + m.note;
            log_error("ring3d: {}: not starting its driver: {}", bdf, d.note);
        } else if (const auto c = claims_.find(bdf); c != claims_.end()) {
            // A driver of the previous ring3d still runs: it is started anew when that ends.
            d.state = Driver::State::waiting;
            d.note = fmt::format("waiting for pid {} (recovered claim) to exit", c->second.pid);
            log_info("ring3d: {}: driver {}", bdf, d.note);
        } else {
            start(d);
        }
    }
}

void Server::start(Driver& d) {
    const std::string bdf = d.address.to_string();
    d.restart_at.reset();
    try {
        Spawned s = spawn_driver(d.address, d.spec, d.restarts.restarts());
        ++stats_.driver_starts;
        const int key = s.socket.get();
        add_to_epoll(epoll_.get(), key, 0);
        Client client;
        client.fd = std::move(s.socket);
        client.pid = s.pid;
        client.who = s.who;
        client.supervised = d.address;
        clients_.emplace(key, std::move(client));
        add_to_epoll(epoll_.get(), s.pidfd.get(), 0);
        children_.emplace(s.pidfd.get(), bdf);
        d.pid = s.pid;
        d.pidfd = std::move(s.pidfd);
        d.connection = key;
        d.user = s.who.user_name.empty() ? std::to_string(s.who.uid) : s.who.user_name;
        d.since = std::chrono::system_clock::now();
        d.state = Driver::State::running;
        d.note.clear();
        log_info("ring3d: {}: driver started as pid {} (user {}, sandbox {}): {}", bdf, d.pid,
                 d.user, to_string(d.spec.sandbox), fmt::join(d.spec.argv_for(d.address), " "));
    } catch (const std::exception& e) {
        log_error("ring3d: {}: driver not started: {}", bdf, e.what());
        d.last_exit = std::string("not started: ") + e.what();
        std::string why;
        d.restart_at = d.restarts.after_exit(d.spec, true, RestartPolicy::Clock::now(), why);
        d.state = d.restart_at ? Driver::State::restarting : Driver::State::failed;
        d.note = why;
    }
}

void Server::driver_exited(int pidfd) {
    const std::string bdf = children_.at(pidfd);
    Driver& d = drivers_.at(bdf);
    siginfo_t info{};
    if (::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG) != 0) {
        info.si_code = CLD_KILLED;
        info.si_status = 0;
    } else if (info.si_pid == 0) {
        return;  // still running (a stale event)
    }
    children_.erase(pidfd);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, pidfd, nullptr);
    d.last_exit = exit_text(info);
    const pid_t pid = d.pid;
    const int connection = d.connection;
    d.pid = 0;
    d.pidfd.reset();
    d.connection = -1;
    std::string why;
    const auto now = RestartPolicy::Clock::now();
    d.restart_at = d.restarts.after_exit(d.spec, failed(info), now, why);
    d.state = d.restart_at   ? Driver::State::restarting
              : failed(info) ? Driver::State::failed
                             : Driver::State::stopped;
    d.note = d.restart_at ? "" : why;
    log_info("ring3d: {}: driver pid {} {}; {}", bdf, pid, d.last_exit,
             d.restart_at ? why : "not restarted: " + why);
    // A restart due now starts before the device is quiesced, so that its exec and start-up
    // overlap the reset: its claim waits in its connection until ring3d has served the end of
    // the old claim below (one thread, in order), so it still gets a device that was reset.
    if (d.restart_at && *d.restart_at <= now) {
        start(d);
    }
    if (clients_.count(connection) != 0) {
        drop(connection);
    }
}

int Server::next_timeout_ms() const {
    std::optional<std::chrono::steady_clock::time_point> first;
    auto consider = [&](const std::optional<std::chrono::steady_clock::time_point>& t) {
        if (t && (!first || *t < *first)) {
            first = t;
        }
    };
    for (const auto& [bdf, d] : drivers_) {
        consider(d.restart_at);
    }
    for (const auto& [bdf, c] : claims_) {
        consider(c.revoke_deadline);
    }
    if (!first) {
        return -1;
    }
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(*first - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<std::int64_t>(left.count(), 0));
}

void Server::deadlines_due() {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [bdf, d] : drivers_) {
        if (d.restart_at && *d.restart_at <= now) {
            start(d);
        }
    }
    for (auto& [bdf, c] : claims_) {
        if (c.revoke_deadline && *c.revoke_deadline <= now) {
            c.revoke_deadline.reset();
            log_warn(
                "ring3d: {}: pid {} still holds it {} s after it was revoked; killing it so that "
                "the kernel's removal can finish",
                bdf, c.pid, std::chrono::duration_cast<std::chrono::seconds>(kRevokeGrace).count());
            ::kill(c.pid, SIGKILL);
        }
    }
}

void Server::watch_requests(Managed& m, int device_fd) {
    unwatch_requests(m);
    UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!event) {
        log_warn("ring3d: {}: eventfd: {}", m.info.address.to_string(), std::strerror(errno));
        return;
    }
    // VFIO_DEVICE_SET_IRQS on the request index (linux/vfio.h): one eventfd, signalled each time
    // the kernel asks the user to release the device.
    alignas(vfio_irq_set) std::byte buffer[sizeof(vfio_irq_set) + sizeof(int)] = {};
    auto* set = reinterpret_cast<vfio_irq_set*>(buffer);
    set->argsz = sizeof buffer;
    set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    set->index = VFIO_PCI_REQ_IRQ_INDEX;
    set->start = 0;
    set->count = 1;
    const int fd = event.get();
    std::memcpy(set->data, &fd, sizeof fd);
    if (::ioctl(device_fd, VFIO_DEVICE_SET_IRQS, set) != 0) {
        log_warn("ring3d: {}: cannot watch for the kernel's requests to release it: {}",
                 m.info.address.to_string(), std::strerror(errno));
        return;
    }
    add_to_epoll(epoll_.get(), fd, 0);
    requests_.emplace(fd, m.info.address.to_string());
    m.request_irq = std::move(event);
}

void Server::unwatch_requests(Managed& m) {
    if (m.request_irq) {
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, m.request_irq.get(), nullptr);
        requests_.erase(m.request_irq.get());
        m.request_irq.reset();
    }
}

// The kernel wants the device back (hot-unplug, unbind): nothing may hold it open. A device
// ring3d holds for the next claim is closed at once; a claimed one is quiesced now (no more
// DMA, no interrupts: the owner's requests fail with its timeouts), its owner told, and killed
// if it has not let go after kRevokeGrace.
void Server::revoke(const std::string& bdf) {
    Managed* m = managed(pci::Address::parse(bdf));
    if (m == nullptr) {
        return;
    }
    if (!m->removed) {
        ++stats_.revocations;
    }
    m->removed = true;
    m->note = "removed: the kernel asked for it back (hot-unplug or unbind)";
    if (auto d = drivers_.find(bdf); d != drivers_.end()) {
        d->second.spec.restart = Restart::no;
        d->second.restart_at.reset();
        d->second.note = "its device was removed";
    }
    if (m->ready) {
        unwatch_requests(*m);
        m->ready.reset();
        log_warn("ring3d: {}: the kernel asks for it back (hot-unplug or unbind); released", bdf);
        return;
    }
    const auto found = claims_.find(bdf);
    if (found == claims_.end()) {
        return;
    }
    Claim& c = found->second;
    if (c.revoke_deadline) {
        return;  // the kernel repeats its request; already under way
    }
    log_warn(
        "ring3d: {}: the kernel asks for it back (hot-unplug or unbind): revoking the claim of {}",
        bdf, owner_text(c.pid, c.uid, c.user, c.since));
    if (c.opened.device_fd) {
        // Through a second descriptor of ring3d's own, keeping the claim's open until the owner
        // lets go.
        UniqueFd again(::fcntl(c.opened.device_fd.get(), F_DUPFD_CLOEXEC, 0));
        if (again) {
            quiesce(c.address, vfio::OpenedDevice{c.opened.container, std::move(again)});
        }
    }
    if (const auto client = clients_.find(c.client); client != clients_.end()) {
        try {
            send_message(c.client, nlohmann::json{{"event", "revoked"},
                                                  {"device", bdf},
                                                  {"reason",
                                                   "the kernel asked for the device back "
                                                   "(hot-unplug or unbind)"}}
                                       .dump());
        } catch (const std::exception&) {
        }
    }
    c.revoke_deadline = std::chrono::steady_clock::now() + kRevokeGrace;
}

// At ring3d's stop: its drivers get SIGTERM, then SIGKILL after 5 s, and their devices back.
void Server::stop_drivers() {
    std::vector<int> running;
    for (auto& [bdf, d] : drivers_) {
        d.spec.restart = Restart::no;
        d.restart_at.reset();
        if (d.pid != 0) {
            log_info("ring3d: {}: stopping driver pid {}", bdf, d.pid);
            ::kill(d.pid, SIGTERM);
            running.push_back(d.pidfd.get());
        }
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (const int pidfd : running) {
        pollfd p{pidfd, POLLIN, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0))) <= 0) {
            ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
            ::poll(&p, 1, 5000);
        }
        driver_exited(pidfd);
    }
}

nlohmann::json Server::driver_json(const std::string& bdf) const {
    const auto found = drivers_.find(bdf);
    if (found == drivers_.end()) {
        return nullptr;
    }
    const Driver& d = found->second;
    static constexpr const char* kStates[] = {"starting", "running", "restarting",
                                              "stopped",  "failed",  "waiting"};
    return {
        {"state", kStates[static_cast<int>(d.state)]},
        {"pid", d.pid != 0 ? nlohmann::json(d.pid) : nlohmann::json(nullptr)},
        {"user", d.user},
        {"command", d.spec.argv_for(d.address)},
        {"sandbox", to_string(d.spec.sandbox)},
        {"restart", to_string(d.spec.restart)},
        {"restarts", d.restarts.restarts()},
        {"since", d.pid != 0 ? nlohmann::json(iso_time(d.since)) : nlohmann::json(nullptr)},
        {"last_exit", d.last_exit.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.last_exit)},
        {"note", d.note}};
}

}  // namespace ring3::broker
