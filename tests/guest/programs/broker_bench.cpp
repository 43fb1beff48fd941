// ring3_guest_broker_bench: for bench/broker. Times, in one process and alternating, the two
// ways a driver gets a device: directly (`vfio:BDF`, the process opens the VFIO group itself) and
// through ring3d (`ring3d:BDF`, a claim). Each sample runs from just before open_block_device()
// to the completion of the first 4 KiB read, and includes the destruction of the previous
// device (for ring3d: the release, answered once the device is reset) only outside the timing.
//
//   ring3_guest_broker_bench DIRECT_BDF BROKER_BDF [--rounds N]
//
// Two devices of the same model: ring3d holds the one it manages open between claims (see
// src/broker/PROTOCOL.md, "Devices opened ahead of their claims"), so the direct opens need
// another one.
//
// Prints per round "round K direct_ms=X broker_ms=Y" (the side going first alternates) and the
// start-up steps of each (ring3 perf blk --verbose's), then the medians:
//   direct_open_ms: X
//   broker_claim_ms: Y
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ring3/block/open.hpp"
#include "ring3/broker/client.hpp"
#include "ring3/core/error.hpp"

namespace {

using namespace ring3;
using Clock = std::chrono::steady_clock;

void on_read(void* context, const block::Status& status) {
    *static_cast<int*>(context) = status.ok() ? 1 : -1;
}

// Milliseconds from open to the first completed read of LBA 0.
double sample(const std::string& spec, std::string& steps) {
    const auto began = Clock::now();
    Timeline timeline;
    block::OpenBlockOptions options;
    options.timeline = &timeline;
    auto dev = block::open_block_device(spec, options);
    block::Queue& q = dev->open_queue(0, 2);
    dma::DmaBuffer buffer = dev->dma_pool().allocate(4096, 4096);
    int done = 0;
    block::Request r;
    r.op = block::Op::read;
    r.lba = 0;
    r.blocks = 4096 / dev->geometry().block_size;
    r.data = buffer.data();
    r.callback = on_read;
    r.context = &done;
    if (q.submit(r) != 0) {
        throw Error::invalid("read", spec, "submission refused", EIO);
    }
    while (done == 0) {
        q.wait(std::chrono::seconds(5));
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - began).count();
    steps.clear();
    for (const Timeline::Step& step : timeline.steps()) {
        char text[96];
        std::snprintf(text, sizeof text, " %s=%.2f", step.name.c_str(),
                      std::chrono::duration<double, std::milli>(step.duration).count());
        steps += text;
    }
    if (done < 0) {
        throw Error::invalid("read", spec, "the first read failed", EIO);
    }
    return ms;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3 || std::strcmp(argv[1], "--help") == 0) {
        std::fprintf(stderr,
                     "usage: ring3_guest_broker_bench DIRECT_BDF BROKER_BDF [--rounds N]\n");
        return 2;
    }
    const std::string direct_bdf = argv[1];
    const std::string broker_bdf = argv[2];
    int rounds = 100;
    if (argc == 5 && std::strcmp(argv[3], "--rounds") == 0) {
        rounds = std::atoi(argv[4]);
    }
    try {
        // What a request to ring3d costs by itself: connect, `status`, reply, close.
        std::vector<double> rtt;
        broker::Request status;
        status.verb = broker::Verb::status;
        const broker::Client client;
        for (int k = 0; k < rounds; ++k) {
            const auto began = Clock::now();
            (void)client.call(status);
            rtt.push_back(std::chrono::duration<double, std::milli>(Clock::now() - began).count());
        }
        std::printf("broker_status_rtt_ms: %.2f\n", median(rtt));
        std::vector<double> direct, broker;
        for (int k = 0; k < rounds; ++k) {
            double d = 0, b = 0;
            std::string d_steps, b_steps;
            if (k % 2 == 0) {
                d = sample("vfio:" + direct_bdf, d_steps);
                b = sample("ring3d:" + broker_bdf, b_steps);
            } else {
                b = sample("ring3d:" + broker_bdf, b_steps);
                d = sample("vfio:" + direct_bdf, d_steps);
            }
            direct.push_back(d);
            broker.push_back(b);
            std::printf("round %d direct_ms=%.2f broker_ms=%.2f\n  direct:%s\n  broker:%s\n", k, d,
                        b, d_steps.c_str(), b_steps.c_str());
            std::fflush(stdout);
        }
        std::printf("direct_open_ms: %.2f\nbroker_claim_ms: %.2f\n", median(direct),
                    median(broker));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ring3_guest_broker_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
