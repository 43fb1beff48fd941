// ring3d's server: the managed devices, the claims, and the protocol loop (protocol.hpp).
// Single-threaded: one epoll loop over the listening socket, the clients and a signal fd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ring3/broker/policy.hpp"
#include "ring3/broker/protocol.hpp"
#include "ring3/core/unique_fd.hpp"
#include "ring3/device/vfio.hpp"
#include "ring3/pci/sysfs.hpp"
#include "supervisor.hpp"

namespace ring3::broker {

struct ServerOptions {
    std::string policy_file;
    std::string socket;  // path of the listening socket
    std::string sysfs_root = "/sys";
    std::string dev_root = "/dev";
    bool bind = true;            // bind managed devices to vfio-pci at start
    unsigned max_clients = 256;  // connections beyond are closed at once
    // Where the claims are recorded, so a restarted ring3d knows who holds what (main sets it to
    // the socket's path + ".claims").
    std::string state_file;
};

class Server {
  public:
    Server(Policy policy, ServerOptions options);
    ~Server();

    // Finds the devices the policy names and (options.bind) binds them to vfio-pci; logs what it
    // manages and what it cannot. Throws ring3::Error when the socket cannot be set up.
    void prepare();
    // Serves until SIGTERM or SIGINT (SIGHUP reloads the policy). Returns the exit status.
    int run();

    struct Stats {
        std::uint64_t requests = 0;
        std::uint64_t bad_requests = 0;
        std::uint64_t claims = 0;
        std::uint64_t releases = 0;
        std::uint64_t clients = 0;  // connections accepted
        std::uint64_t driver_starts = 0;
        std::uint64_t revocations = 0;
    };
    const Stats& stats() const noexcept { return stats_; }

  private:
    struct Managed {
        pci::DeviceInfo info;
        std::string note;  // why it cannot be handed out ("" when it can)
        // Opened ahead of the next claim, in a container of its own with no mappings: a claim
        // then costs a round trip instead of the kernel's VFIO open (a function reset).
        std::optional<vfio::OpenedDevice> ready;
        bool warm_failed = false;  // the last attempt failed; retried after the next claim
        // VFIO's request interrupt on ring3d's open instance (ready or claimed): signalled when
        // the kernel wants the device back (hot-unplug, unbind).
        UniqueFd request_irq;
        bool removed = false;  // the kernel asked for it: never handed out again
    };
    struct Claim {
        pci::Address address;
        int client = -1;
        pid_t pid = 0;
        uid_t uid = 0;
        std::string user;
        std::chrono::system_clock::time_point since;
        vfio::OpenedDevice opened;  // ring3d's own references, to quiesce the device
        // A claim recovered after a restart of ring3d: no connection and no references; ring3d
        // watches the owner's process (a pidfd) and quiesces the device when it ends.
        UniqueFd pidfd;
        // Set when the kernel asked for the device back: the owner is killed if it still holds
        // the device then, so that the removal can finish.
        std::optional<std::chrono::steady_clock::time_point> revoke_deadline;
    };
    struct Client {
        UniqueFd fd;
        pid_t pid = 0;
        Identity who;
        std::optional<pci::Address> claim;
        std::optional<pci::Address> supervised;  // the connection of this device's driver
    };
    // A supervised driver ([device.driver]) and its history.
    struct Driver {
        enum class State { starting, running, restarting, stopped, failed, waiting };
        pci::Address address;
        DriverSpec spec;
        State state = State::starting;
        pid_t pid = 0;
        UniqueFd pidfd;
        int connection = -1;  // its Client's key while it runs
        std::string user;
        std::chrono::system_clock::time_point since;
        RestartPolicy restarts;
        std::optional<RestartPolicy::Clock::time_point> restart_at;
        std::string last_exit;  // "" before the first exit
        std::string note;       // why it is stopped, failed or waiting
    };

    void accept_clients();
    void serve(Client& client);
    std::string handle(Client& client, const Request& request, std::vector<int>& fds,
                       bool& granted);
    std::string claim(Client& client, const pci::Address& address, std::vector<int>& fds,
                      bool& granted);
    std::string list(const Client& client) const;
    std::string status() const;
    void end_claim(const pci::Address& address, const char* why);
    void closed(int fd);
    void drop(int fd);
    void save_claims() const;
    void recover_claims();
    void reload();
    Managed* managed(const pci::Address& address);
    // Opens one idle managed device ahead of its claim; false when none needs it.
    bool warm_one();
    // Supervised drivers.
    void start_drivers();
    void start(Driver& driver);
    void driver_exited(int pidfd);
    void stop_drivers();
    int next_timeout_ms() const;
    void deadlines_due();
    // Surprise removal (VFIO's request interrupt).
    void watch_requests(Managed& m, int device_fd);
    void unwatch_requests(Managed& m);
    void revoke(const std::string& bdf);
    nlohmann::json driver_json(const std::string& bdf) const;

    Policy policy_;
    ServerOptions options_;
    UniqueFd listener_;
    UniqueFd epoll_;
    UniqueFd signals_;
    std::vector<Managed> devices_;
    std::map<int, Client> clients_;
    std::map<std::string, Claim> claims_;    // by address
    std::map<int, std::string> watched_;     // pidfd of a recovered claim's owner -> its address
    std::map<std::string, Driver> drivers_;  // supervised drivers, by address
    std::map<int, std::string> children_;    // a running driver's pidfd -> its address
    std::map<int, std::string> requests_;    // a request interrupt's eventfd -> its address
    Stats stats_;
};

// A reply: {"ok":false,"error":...,"errno":N}.
std::string error_reply(const std::string& message, int code);

}  // namespace ring3::broker
