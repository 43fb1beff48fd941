// The virtio PCI transport, split virtqueue and virtio-blk driver over testing::FakeDevice and a
// virtio-blk model (fake_virtio_device.hpp): no device, no sleeping.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "fake_device.hpp"
#include "fake_virtio_device.hpp"
#include "ring3/block/pattern.hpp"
#include "ring3/device/register_window.hpp"
#include "ring3/virtio/blk.hpp"
#include "ring3/virtio/initializer.hpp"
#include "ring3/virtio/transport.hpp"
#include "ring3/virtio/virtqueue.hpp"
#include "test_support.hpp"

extern std::atomic<std::uint64_t> g_allocations;  // counting_new.cpp

namespace ring3::virtio {
namespace {

using namespace std::chrono_literals;
using ring3::testing::error_of;
using ring3::testing::FakeDevice;
using testing::FakeVirtioBlk;
using State = Initializer::State;

std::string hex(std::uint64_t v) {
    char text[32];
    std::snprintf(text, sizeof text, "%#llx", static_cast<unsigned long long>(v));
    return text;
}

// The region accesses as "w14=0x1" / "r14=0x0" (offsets in the common configuration).
std::vector<std::string> log_of(const FakeDevice& device, std::size_t from = 0) {
    std::vector<std::string> out;
    for (std::size_t i = from; i < device.accesses.size(); ++i) {
        const auto& a = device.accesses[i];
        char offset[16];
        std::snprintf(offset, sizeof offset, "%llx", static_cast<unsigned long long>(a.offset));
        out.push_back(std::string(a.write ? "w" : "r") + offset + "=" + hex(a.value));
    }
    return out;
}

BlkOptions small_options() {
    BlkOptions o;
    o.arena.chunk_size = 2 << 20;
    o.arena.max_size = 16 << 20;
    o.arena.huge_pages = dma::HugePages::never;
    return o;
}

// ---- discovery --------------------------------------------------------------------------------

TEST(VirtioTransport, FindsTheStructuresAndMapsTheBarWhenItCan) {
    FakeVirtioBlk::Options options;
    options.mappable = true;
    FakeVirtioBlk model(options);
    PciTransport transport(model.device);
    const auto& layout = transport.layout();
    EXPECT_TRUE(layout.common.present);
    EXPECT_EQ(layout.common.bar, 4);
    EXPECT_EQ(layout.isr.offset, FakeVirtioBlk::kIsr);
    EXPECT_EQ(layout.device.offset, FakeVirtioBlk::kDeviceCfg);
    EXPECT_EQ(layout.notify.offset, FakeVirtioBlk::kNotify);
    EXPECT_EQ(layout.notify_off_multiplier, FakeVirtioBlk::kNotifyMultiplier);
    // Mapped: the capacity is read from the mapping, and no access goes through region_read.
    EXPECT_EQ(transport.device_config().read<reg::blk::CapacityLow>().raw(), 2048u);
    EXPECT_EQ(transport.common().read<reg::NumQueues>().raw(), 1u);
    EXPECT_EQ(model.device.maps, 1u);  // one mapping shared by the four windows
    EXPECT_TRUE(model.device.accesses.empty());
    transport.notify().write16(8, 2);  // lands in the BAR's memory
    EXPECT_EQ(model.device.peek<std::uint16_t>(4, FakeVirtioBlk::kNotify + 8), 2u);
}

TEST(VirtioTransport, ALegacyOnlyDeviceIsNamed) {
    FakeVirtioBlk::Options options;
    options.legacy_only = true;
    FakeVirtioBlk model(options);
    const auto message = error_of([&] { PciTransport transport(model.device); }, ENOTSUP);
    EXPECT_NE(message.find("[1af4:1001] is a legacy-only virtio device"), std::string::npos)
        << message;
    EXPECT_NE(message.find("disable-modern=on"), std::string::npos) << message;
    EXPECT_NE(message.find("ring3 drives modern (VIRTIO 1.0+) devices only"), std::string::npos);
}

TEST(VirtioTransport, CapabilitiesWithAReservedBarAreIgnored) {
    FakeVirtioBlk model;
    // Point the first capability (common cfg, after MSI-X at 0x40) at BAR 7: reserved (§4.1.4.1).
    auto& config = model.device.config();
    const std::uint8_t common_cap = config[0x41];
    ASSERT_EQ(config[common_cap + 3], pci_cap_type::common_cfg);
    config[common_cap + 4] = 7;
    const auto message = error_of([&] { PciTransport transport(model.device); }, ENODEV);
    EXPECT_EQ(message,
              "open virtio device fake:virtio-blk: no usable common configuration "
              "capability (VIRTIO 1.2 §4.1.4)");
}

// ---- bring-up, register by register
// --------------------------------------------------------------

struct Stepper {
    FakeVirtioBlk model;
    RegionIo common{model.device, FakeVirtioBlk::kBar, FakeVirtioBlk::kCommon, 0x1000};
    Initializer::TimePoint now{};
    explicit Stepper(const FakeVirtioBlk::Options& o = FakeVirtioBlk::Options()) : model(o) {}
    State run(Initializer& init) {
        for (int i = 0; i < 100000; ++i) {
            const State s = init.step(now);
            now += 1ms;
            if (s == State::done || s == State::failed)
                return s;
        }
        return init.state();
    }
};

const Initializer::Features kBlkFeatures{bit(feature::version_1),
                                         bit(feature::access_platform) | bit(feature::event_idx) |
                                             bit(blk_feature::blk_size) | bit(blk_feature::flush) |
                                             bit(feature::ring_packed),
                                         &blk_feature_name};

TEST(VirtioInitializer, StepsThroughTheSpecRegisterByRegister) {
    FakeVirtioBlk::Options o;
    o.reset_reads = 2;  // device_status reads 1 twice after the reset
    Stepper s(o);
    Initializer init(s.common, kBlkFeatures);
    EXPECT_EQ(init.step(s.now), State::wait_reset);
    EXPECT_EQ(log_of(s.model.device), (std::vector<std::string>{"w14=0"}));
    EXPECT_EQ(init.step(s.now), State::wait_reset);
    EXPECT_EQ(init.step(s.now), State::wait_reset);
    EXPECT_EQ(init.step(s.now), State::acknowledge);
    std::size_t mark = s.model.device.accesses.size();
    EXPECT_EQ(init.step(s.now), State::driver);
    EXPECT_EQ(init.step(s.now), State::read_features);
    EXPECT_EQ(log_of(s.model.device, mark), (std::vector<std::string>{"w14=0x1", "w14=0x3"}));
    mark = s.model.device.accesses.size();
    EXPECT_EQ(init.step(s.now), State::write_features);
    // Offered: VERSION_1, ACCESS_PLATFORM, EVENT_IDX, RING_PACKED (high: bits 0, 1, 2);
    // SEG_MAX, BLK_SIZE, FLUSH (low).
    EXPECT_EQ(log_of(s.model.device, mark),
              (std::vector<std::string>{"w0=0", "r4=0x20000244", "w0=0x1", "r4=0x7"}));
    mark = s.model.device.accesses.size();
    EXPECT_EQ(init.step(s.now), State::features_ok);
    // RING_PACKED is offered and even asked for, yet never negotiated; SEG_MAX was not asked for.
    EXPECT_EQ(log_of(s.model.device, mark),
              (std::vector<std::string>{"w8=0", "wc=0x20000240", "w8=0x1", "wc=0x3"}));
    EXPECT_EQ(init.negotiated(), bit(feature::version_1) | bit(feature::access_platform) |
                                     bit(feature::event_idx) | bit(blk_feature::blk_size) |
                                     bit(blk_feature::flush));
    mark = s.model.device.accesses.size();
    EXPECT_EQ(init.step(s.now), State::check_features);
    EXPECT_EQ(init.step(s.now), State::done);
    EXPECT_EQ(log_of(s.model.device, mark), (std::vector<std::string>{"w14=0xb", "r14=0xb"}));
    EXPECT_EQ(s.model.driver_features, init.negotiated());
}

TEST(VirtioInitializer, WithoutVersion1TheDeviceIsRefusedAndTold) {
    FakeVirtioBlk::Options o;
    o.features = bit(blk_feature::flush) | bit(feature::event_idx);
    Stepper s(o);
    Initializer init(s.common, kBlkFeatures);
    EXPECT_EQ(s.run(init), State::failed);
    EXPECT_EQ(init.error_code(), ENOTSUP);
    EXPECT_EQ(init.error(),
              "the device does not offer VIRTIO_F_VERSION_1: it is a legacy (pre-1.0) device; "
              "ring3 drives modern (VIRTIO 1.0+) devices only");
    EXPECT_EQ(s.model.status() & status::failed, status::failed);  // §3.1.1: FAILED set
    EXPECT_EQ(s.model.driver_features, 0u);                        // nothing was written
}

TEST(VirtioInitializer, ADeviceThatRejectsTheFeaturesFails) {
    FakeVirtioBlk::Options o;
    o.reject_features = true;
    Stepper s(o);
    Initializer init(s.common, kBlkFeatures);
    EXPECT_EQ(s.run(init), State::failed);
    EXPECT_EQ(init.error(),
              "the device did not accept the features BLK_BLK_SIZE BLK_FLUSH EVENT_IDX "
              "VERSION_1 ACCESS_PLATFORM (FEATURES_OK did not stay set)");
}

TEST(VirtioInitializer, TheResetWaitIsBounded) {
    FakeVirtioBlk::Options o;
    o.reset_reads = 1u << 30;  // never leaves reset
    Stepper s(o);
    Initializer init(s.common, kBlkFeatures);
    EXPECT_EQ(s.run(init), State::failed);
    EXPECT_EQ(init.error_code(), ETIMEDOUT);
    EXPECT_EQ(init.error(), "device_status still reads 0x01 1000 ms after the reset");
    EXPECT_GE(s.now - Initializer::TimePoint{}, Initializer::kResetTimeout);
    EXPECT_LT(s.now - Initializer::TimePoint{}, Initializer::kResetTimeout + 10ms);
}

TEST(VirtioTransport, QueueSetupAndDriverOkRegisterByRegister) {
    FakeVirtioBlk model;  // unmapped: every access is logged
    PciTransport transport(model.device);
    transport.negotiate(kBlkFeatures);
    const std::size_t mark = model.device.accesses.size();
    EXPECT_EQ(transport.max_queue_size(0), 256u);
    PciTransport::QueueSetup setup;
    setup.index = 0;
    setup.size = 128;
    setup.desc = 0x1'2345'6000;
    setup.driver = 0x1'2345'7000;
    setup.device = 0x1'2345'8000;
    setup.msix_vector = 1;
    EXPECT_EQ(transport.setup_queue(setup), 0u);  // queue_notify_off 0 x multiplier 4
    transport.driver_ok();
    // §4.1.5.1.3: select, size, vector (read back), the three addresses low half first,
    // queue_notify_off, enable; then §3.1.1 step 8.
    EXPECT_EQ(log_of(model.device, mark),
              (std::vector<std::string>{"w16=0", "r18=0x100", "w16=0", "w18=0x80", "w1a=0x1",
                                        "r1a=0x1", "w20=0x23456000", "w24=0x1", "w28=0x23457000",
                                        "w2c=0x1", "w30=0x23458000", "w34=0x1", "r1e=0", "w1c=0x1",
                                        "w14=0xf", "r14=0xf"}));
    EXPECT_EQ(model.queues()[0].desc, 0x1'2345'6000u);
    EXPECT_EQ(model.queues()[0].size, 128u);
    // A vector the device cannot map reads back NO_VECTOR: refused with the reason.
    setup.msix_vector = 7;
    const auto message = error_of([&] { transport.setup_queue(setup); }, EIO);
    EXPECT_EQ(message,
              "set up virtqueue 0 fake:virtio-blk: the device refused MSI-X vector 7 "
              "(reads back 0xffff)");
}

// ---- the split virtqueue ------------------------------------------------------------------------

struct Ring {
    ring3::testing::FakeDmaSpace dma;
    std::unique_ptr<dma::DmaArena> arena;
    std::unique_ptr<dma::DmaPool> pool;
    FakeDevice notifier;  // its BAR0 takes the notifications (unmapped: every write is seen)
    RegionIo notify{notifier, 0, 0, 0x100};
    std::unique_ptr<SplitQueue> queue;
    std::vector<std::pair<void*, std::uint32_t>> done;

    explicit Ring(bool event_idx, std::uint16_t size = 8) {
        dma::ArenaOptions o;
        o.max_size = 8 << 20;
        o.huge_pages = dma::HugePages::never;
        arena = dma::DmaArena::create(o);
        arena->attach(dma);
        pool = std::make_unique<dma::DmaPool>(*arena);
        notifier.add_bar(0, 0x100, false);
        queue = std::make_unique<SplitQueue>(*pool, 3, size, event_idx, notify, 0x10);
    }
    unsigned notifications() const {
        unsigned n = 0;
        for (const auto& a : notifier.accesses) {
            n += a.write && a.offset == 0x10 && a.width == 2 && a.value == 3 ? 1 : 0;
        }
        return n;
    }
    std::uint16_t* avail() {
        return reinterpret_cast<std::uint16_t*>(dma.dma(queue->avail_iova(), 8));
    }
    std::byte* used() { return dma.dma(queue->used_iova(), used_ring_bytes(queue->size())); }
    Descriptor* table() {
        return reinterpret_cast<Descriptor*>(dma.dma(queue->desc_iova(), 16 * queue->size()));
    }
    void put_used(std::uint16_t slot, std::uint32_t id, std::uint32_t len) {
        auto* e = reinterpret_cast<UsedElement*>(used() + 4) + slot;
        e->id = id;
        e->len = len;
    }
    void set_used_idx(std::uint16_t idx) { reinterpret_cast<std::uint16_t*>(used())[1] = idx; }
    unsigned poll() {
        return queue->poll(
            [](void* owner, void* context, std::uint16_t, std::uint32_t written) noexcept {
                static_cast<Ring*>(owner)->done.emplace_back(context, written);
            },
            this);
    }
    // fail_all(): the contexts of the chains it gave back, in its order.
    std::vector<void*> fail_all() {
        std::vector<void*> failed;
        queue->fail_all(
            [](void* owner, void* context, std::uint16_t, std::uint32_t) noexcept {
                static_cast<std::vector<void*>*>(owner)->push_back(context);
            },
            &failed);
        return failed;
    }
};

TEST(Virtqueue, NoUsedElementStraddlesAPage) {
    // A 1024-entry used ring spans three pages; each 8-byte element must lie in one of them
    // (see the SplitQueue constructor: QEMU loses the second half of a straddling write).
    Ring r(true, 1024);
    const std::uint64_t used = r.queue->used_iova();
    EXPECT_EQ(used % 4, 0u);  // §2.7: 4-byte alignment
    for (std::uint64_t i = 0; i < 1024; ++i) {
        const std::uint64_t element = used + 4 + 8 * i;
        EXPECT_EQ(element / 4096, (element + 7) / 4096) << "element " << i;
    }
    EXPECT_EQ((used + 2) / 4096, (used + 3) / 4096);  // idx
}

TEST(Virtqueue, ABatchIsPublishedWithOneIndexUpdateAndOneNotification) {
    Ring r(false);
    int a = 0, b = 0, c = 0;
    const Segment one[] = {{0x1000, 16, false}, {0x2000, 512, true}, {0x3000, 1, true}};
    const Segment two[] = {{0x4000, 16, false}, {0x5000, 1, true}};
    EXPECT_EQ(r.queue->add(one, &a), 0);
    EXPECT_EQ(r.queue->add(two, &b), 3);
    EXPECT_EQ(r.queue->add(two, &c), 5);
    EXPECT_EQ(r.queue->free_descriptors(), 1u);
    EXPECT_EQ(r.queue->add(two, &c), -EAGAIN);
    EXPECT_EQ(r.avail()[1], 0u);  // nothing visible before publish
    EXPECT_EQ(r.notifications(), 0u);
    EXPECT_TRUE(r.queue->publish());
    EXPECT_FALSE(r.queue->publish());  // nothing new: no second notification
    EXPECT_EQ(r.notifications(), 1u);
    EXPECT_EQ(r.avail()[1], 3u);
    EXPECT_EQ(r.avail()[2], 0u);
    EXPECT_EQ(r.avail()[3], 3u);
    EXPECT_EQ(r.avail()[4], 5u);
    // The first chain as §2.7.5 lays it out.
    Descriptor* t = r.table();
    EXPECT_EQ(t[0].addr, 0x1000u);
    EXPECT_EQ(t[0].flags, desc_flag::next);
    EXPECT_EQ(t[0].next, 1u);
    EXPECT_EQ(t[1].flags, desc_flag::next | desc_flag::write);
    EXPECT_EQ(t[1].next, 2u);
    EXPECT_EQ(t[2].flags, desc_flag::write);
    // The device uses them out of order.
    r.put_used(0, 3, 1);
    r.put_used(1, 0, 513);
    r.put_used(2, 5, 1);
    r.set_used_idx(3);
    EXPECT_EQ(r.poll(), 3u);
    ASSERT_EQ(r.done.size(), 3u);
    EXPECT_EQ(r.done[0].first, &b);
    EXPECT_EQ(r.done[1].first, &a);
    EXPECT_EQ(r.done[1].second, 513u);
    EXPECT_EQ(r.queue->free_descriptors(), 8u);
    EXPECT_EQ(r.queue->in_flight(), 0u);
    const auto& counters = r.queue->counters();
    EXPECT_EQ(counters.bad_ids + counters.stale_ids + counters.bad_lengths, 0u);
}

// §2.7.8: a used length beyond the chain's writable bytes is clamped and counted; the chain
// still completes.
TEST(Virtqueue, AUsedLengthBeyondTheChainIsClamped) {
    Ring r(false);
    int a = 0;
    const Segment chain[] = {{0x1000, 16, false}, {0x2000, 512, true}, {0x3000, 1, true}};
    ASSERT_EQ(r.queue->add(chain, &a), 0);
    r.queue->publish();
    r.put_used(0, 0, 99999);
    r.set_used_idx(1);
    EXPECT_EQ(r.poll(), 1u);
    ASSERT_EQ(r.done.size(), 1u);
    EXPECT_EQ(r.done[0].first, &a);
    EXPECT_EQ(r.done[0].second, 513u);
    EXPECT_EQ(r.queue->counters().bad_lengths, 1u);
    EXPECT_FALSE(r.queue->broken());
}

// A used id that is not the head of a chain in flight (outside the queue, inside a chain, or a
// chain already completed) means the device lost track of the ring: the queue is broken at
// that entry (entries before it complete, none after), and fail_all gives back the rest.
TEST(Virtqueue, AUsedIdThatIsNotAChainInFlightBreaksTheQueue) {
    struct Case {
        const char* what;
        std::uint32_t id;
        std::uint64_t VirtqueueCounters::*counter;
    };
    for (const Case& c : {Case{"outside the queue", 4000, &VirtqueueCounters::bad_ids},
                          Case{"inside a chain", 1, &VirtqueueCounters::stale_ids},
                          Case{"already completed", 3, &VirtqueueCounters::stale_ids}}) {
        SCOPED_TRACE(c.what);
        Ring r(false);
        int a = 0, b = 0;
        const Segment chain[] = {{0x1000, 16, false}, {0x2000, 512, true}, {0x3000, 1, true}};
        ASSERT_EQ(r.queue->add(chain, &a), 0);
        ASSERT_EQ(r.queue->add(chain, &b), 3);
        r.queue->publish();
        r.put_used(0, 3, 1);     // b completes
        r.put_used(1, c.id, 0);  // garbage
        r.put_used(2, 0, 1);     // a: never reaped, the queue is broken by then
        r.set_used_idx(3);
        EXPECT_EQ(r.poll(), 1u);
        ASSERT_EQ(r.done.size(), 1u);
        EXPECT_EQ(r.done[0].first, &b);
        EXPECT_TRUE(r.queue->broken());
        EXPECT_EQ(r.queue->counters().*c.counter, 1u);
        EXPECT_EQ(r.queue->in_flight(), 1u);
        EXPECT_FALSE(r.queue->has_used());
        EXPECT_EQ(r.poll(), 0u);  // nothing more from a broken queue
        EXPECT_EQ(r.fail_all(), (std::vector<void*>{&a}));
        EXPECT_EQ(r.queue->free_descriptors(), 8u);
    }
}

// §2.7.8: the used ring holds at most `size` entries the driver has not consumed.
TEST(Virtqueue, AUsedIndexBeyondTheRingBreaksTheQueue) {
    Ring r(false);
    int a = 0;
    const Segment chain[] = {{0x1000, 16, false}, {0x3000, 1, true}};
    ASSERT_EQ(r.queue->add(chain, &a), 0);
    r.queue->publish();
    r.set_used_idx(200);
    EXPECT_EQ(r.poll(), 0u);
    EXPECT_TRUE(r.queue->broken());
    EXPECT_EQ(r.queue->counters().index_jumps, 1u);
    EXPECT_EQ(r.fail_all(), (std::vector<void*>{&a}));
    EXPECT_EQ(r.queue->free_descriptors(), 8u);
}

TEST(Virtqueue, NotificationsTheDeviceDoesNotWantAreNotSent) {
    // EVENT_IDX (§2.7.10): the device asks to hear when avail idx passes avail_event.
    Ring r(true);
    int a = 0;
    const Segment chain[] = {{0x1000, 16, false}, {0x3000, 1, true}};
    auto* avail_event = reinterpret_cast<std::uint16_t*>(r.used() + 4 + 8 * 8);
    *avail_event = 5;  // not before the 6th chain
    r.queue->add(chain, &a);
    EXPECT_FALSE(r.queue->publish());
    EXPECT_EQ(r.notifications(), 0u);
    EXPECT_EQ(r.queue->counters().suppressed, 1u);
    *avail_event = 1;  // the 2nd chain is index 1: published idx goes 1 -> 2
    r.queue->add(chain, &a);
    EXPECT_TRUE(r.queue->publish());
    EXPECT_EQ(r.notifications(), 1u);
    // Without EVENT_IDX: VIRTQ_USED_F_NO_NOTIFY.
    Ring plain(false);
    reinterpret_cast<std::uint16_t*>(plain.used())[0] = kUsedNoNotify;
    plain.queue->add(chain, &a);
    EXPECT_FALSE(plain.queue->publish());
    EXPECT_EQ(plain.notifications(), 0u);
}

TEST(Virtqueue, InterruptsAreRequestedOnlyWhileWaiting) {
    Ring r(true);
    auto* used_event = &r.avail()[2 + 8];
    EXPECT_EQ(*used_event, 0x8000u);  // disabled from the start: half the index space away
    EXPECT_FALSE(r.queue->enable_interrupts());
    EXPECT_EQ(*used_event, 0u);  // the next used entry interrupts
    r.queue->disable_interrupts();
    Ring plain(false);
    EXPECT_EQ(plain.avail()[0], kAvailNoInterrupt);
    EXPECT_FALSE(plain.queue->enable_interrupts());
    EXPECT_EQ(plain.avail()[0], 0u);
    // Entries that arrived before the request: enable says so, rather than letting us sleep.
    int a = 0;
    const Segment chain[] = {{0x1000, 16, false}, {0x3000, 1, true}};
    plain.queue->disable_interrupts();
    plain.queue->add(chain, &a);
    plain.queue->publish();
    plain.put_used(0, 0, 1);
    plain.set_used_idx(1);
    EXPECT_TRUE(plain.queue->enable_interrupts());
}

// ---- virtio-blk over the model ------------------------------------------------------------------

struct Completion {
    int calls = 0;
    block::Status status;
    static void done(void* context, const block::Status& status) {
        auto* c = static_cast<Completion*>(context);
        ++c->calls;
        c->status = status;
    }
};

void run_to_completion(block::Queue& queue, const block::Request& request, Completion& c) {
    ASSERT_EQ(queue.submit(request), 0);
    for (int i = 0; i < 1000 && c.calls == 0; ++i) {
        queue.wait(1ms);
    }
    ASSERT_EQ(c.calls, 1);
}

struct BlkRig {
    FakeVirtioBlk model;
    std::unique_ptr<BlkDevice> blk;
    explicit BlkRig(const FakeVirtioBlk::Options& o = FakeVirtioBlk::Options(),
                    BlkOptions options = small_options())
        : model(o) {
        blk = std::make_unique<BlkDevice>(model.take(), options);
    }
    ~BlkRig() { blk.reset(); }
};

TEST(VirtioBlk, ReadsWhatItWroteWithEveryRegisterAccessThroughRegionReadWrite) {
    BlkRig rig;  // BAR4 does not map: the transport falls back to region_read/region_write
    auto& model = rig.model;
    EXPECT_EQ(model.device.maps, 0u);
    EXPECT_FALSE(model.device.accesses.empty());
    EXPECT_EQ(model.status(),
              status::acknowledge | status::driver | status::features_ok | status::driver_ok);
    EXPECT_EQ(model.driver_features & bit(feature::ring_packed), 0u);  // offered, not taken
    EXPECT_NE(model.driver_features & bit(feature::access_platform), 0u);
    const auto g = rig.blk->geometry();
    EXPECT_EQ(g.block_size, 512u);
    EXPECT_EQ(g.block_count, 2048u);
    EXPECT_EQ(g.queue_count, 1u);
    EXPECT_EQ(g.max_queue_depth, 85u);  // 256 descriptors, 3 per request
    EXPECT_TRUE(g.volatile_write_cache);
    EXPECT_FALSE(g.write_zeroes);
    auto& q = rig.blk->open_queue(0);
    auto& pool = rig.blk->dma_pool();
    auto out = pool.allocate(8 * 512, 4096);
    auto in = pool.allocate(8 * 512, 4096);
    for (std::size_t i = 0; i < out.size(); ++i) {
        out.data()[i] = static_cast<std::byte>(i * 7 + 1);
    }
    Completion w;
    run_to_completion(q, {block::Op::write, 100, 8, out.data(), &Completion::done, &w}, w);
    EXPECT_TRUE(w.status.ok());
    EXPECT_EQ(std::memcmp(model.disk_.data() + 100 * 512, out.data(), out.size()), 0);
    Completion r;
    run_to_completion(q, {block::Op::read, 100, 8, in.data(), &Completion::done, &r}, r);
    EXPECT_TRUE(r.status.ok());
    EXPECT_EQ(std::memcmp(in.data(), out.data(), out.size()), 0);
    Completion f;
    run_to_completion(q, {block::Op::flush, 0, 0, nullptr, &Completion::done, &f}, f);
    EXPECT_TRUE(f.status.ok());
    EXPECT_EQ(model.queues()[0].notifies, 3u);
    EXPECT_TRUE(model.device.dma().faults.empty());
    // Every access the driver made went through the fake's region calls (BAR4), none mapped.
    for (const auto& a : model.device.accesses) {
        EXPECT_EQ(a.region, FakeVirtioBlk::kBar);
    }
}

TEST(VirtioBlk, ABurstIsOneNotification) {
    BlkRig rig;
    auto& q = rig.blk->open_queue(0);
    auto buffer = rig.blk->dma_pool().allocate(16 * 512, 4096);
    Completion c[16];
    for (unsigned i = 0; i < 16; ++i) {
        ASSERT_EQ(
            q.enqueue({block::Op::write, i, 1, buffer.data() + i * 512, &Completion::done, &c[i]}),
            0);
    }
    EXPECT_EQ(rig.model.queues()[0].notifies, 0u);
    q.flush();
    EXPECT_EQ(rig.model.queues()[0].notifies, 1u);
    EXPECT_EQ(q.poll(), 16u);
    EXPECT_EQ(q.outstanding(), 0u);
    const block::QueueStats stats = q.stats();
    EXPECT_EQ(stats.requests, 16u);
    EXPECT_EQ(stats.notifications, 1u);
    EXPECT_EQ(stats.acknowledgements, 0u);
    EXPECT_EQ(stats.reaps, 1u);
    EXPECT_EQ(stats.completions, 16u);
    EXPECT_EQ(stats.garbage, 0u);
}

TEST(VirtioBlk, LargeRequestsAreSplitAndRangesChecked) {
    BlkOptions options = small_options();
    options.max_transfer = 4096;
    BlkRig rig(FakeVirtioBlk::Options(), options);
    EXPECT_EQ(rig.blk->geometry().max_transfer, 4096u);
    auto& q = rig.blk->open_queue(0);
    auto buffer = rig.blk->dma_pool().allocate(64 * 512, 4096);
    std::memset(buffer.data(), 0x5a, buffer.size());
    Completion c;
    run_to_completion(q, {block::Op::write, 0, 64, buffer.data(), &Completion::done, &c}, c);
    EXPECT_TRUE(c.status.ok());
    EXPECT_EQ(rig.model.disk_[64 * 512 - 1], std::byte{0x5a});
    EXPECT_EQ(q.enqueue({block::Op::read, 2047, 2, buffer.data(), &Completion::done, &c}), -EINVAL);
    int not_dma = 0;
    EXPECT_EQ(q.enqueue({block::Op::read, 0, 1, reinterpret_cast<std::byte*>(&not_dma),
                         &Completion::done, &c}),
              -EINVAL);
    EXPECT_EQ(q.enqueue({block::Op::write_zeroes, 0, 1, nullptr, &Completion::done, &c}),
              -EOPNOTSUPP);  // not offered by this model
}

TEST(VirtioBlk, GarbageFromTheDeviceFailsTheRequestNotTheProcess) {
    BlkRig rig;
    auto& q = rig.blk->open_queue(0);
    auto buffer = rig.blk->dma_pool().allocate(512, 512);
    // A used length beyond the chain: counted, the request still completes by its status byte.
    rig.model.next_used_len = 1u << 30;
    Completion a;
    run_to_completion(q, {block::Op::read, 0, 1, buffer.data(), &Completion::done, &a}, a);
    EXPECT_TRUE(a.status.ok());
    auto& vq = static_cast<BlkQueue&>(q).virtqueue();
    EXPECT_EQ(vq.counters().bad_lengths, 1u);
    // A used id out of range: the device lost track of its ring. It is reset (it may still
    // write into the requests' memory), then the requests in flight fail with EIO at once:
    // virtio-blk has no timeout that would end them otherwise.
    rig.model.next_used_id = 9999;  // b's used entry; c's comes after it
    Completion b, c;
    ASSERT_EQ(q.enqueue({block::Op::read, 0, 1, buffer.data(), &Completion::done, &b}), 0);
    ASSERT_EQ(q.enqueue({block::Op::read, 1, 1, buffer.data(), &Completion::done, &c}), 0);
    const std::size_t status_writes = rig.model.status_writes.size();
    EXPECT_EQ(q.wait(1ms), 2u);
    EXPECT_EQ(vq.counters().bad_ids, 1u);
    EXPECT_EQ(q.stats().garbage, 2u);  // a length, an id
    EXPECT_EQ(b.calls, 1);
    EXPECT_EQ(c.calls, 1);
    EXPECT_EQ(b.status.error, EIO);
    EXPECT_EQ(c.status.error, EIO);
    EXPECT_EQ(q.outstanding(), 0u);
    EXPECT_EQ(rig.blk->failure(), EIO);
    ASSERT_GT(rig.model.status_writes.size(), status_writes);
    EXPECT_EQ(rig.model.status_writes.back(), 0u);  // the reset
    Completion d;
    EXPECT_EQ(q.enqueue({block::Op::read, 0, 1, buffer.data(), &Completion::done, &d}), -ENODEV);
}

TEST(VirtioBlk, AUsedIndexBeyondTheRingFailsTheRequests) {
    BlkRig rig;
    auto& q = rig.blk->open_queue(0);
    auto buffer = rig.blk->dma_pool().allocate(512, 512);
    rig.model.used_idx_jump = 1000;
    Completion a;
    ASSERT_EQ(q.submit({block::Op::read, 0, 1, buffer.data(), &Completion::done, &a}), 0);
    q.wait(1ms);
    auto& vq = static_cast<BlkQueue&>(q).virtqueue();
    EXPECT_EQ(vq.counters().index_jumps, 1u);
    EXPECT_EQ(a.calls, 1);
    EXPECT_EQ(a.status.error, EIO);
    EXPECT_EQ(q.outstanding(), 0u);
    EXPECT_EQ(rig.blk->failure(), EIO);
    Completion b;
    EXPECT_EQ(q.enqueue({block::Op::read, 0, 1, buffer.data(), &Completion::done, &b}), -ENODEV);
}

// §2.1.2: a device that sets DEVICE_NEEDS_RESET completes nothing more. A wait that finds
// nothing looks at device_status; the device is reset (so it no longer touches the requests'
// memory) and the requests in flight fail with EIO instead of waiting forever.
TEST(VirtioBlk, ADeviceThatNeedsAResetIsResetAndItsRequestsFail) {
    BlkRig rig;
    auto& q = rig.blk->open_queue(0);
    auto buffer = rig.blk->dma_pool().allocate(1024, 512);
    Completion a;
    run_to_completion(q, {block::Op::read, 0, 1, buffer.data(), &Completion::done, &a}, a);
    EXPECT_TRUE(a.status.ok());

    rig.model.serve = false;  // healthy but slow: an empty wait changes nothing
    Completion b;
    ASSERT_EQ(q.submit({block::Op::read, 0, 1, buffer.data(), &Completion::done, &b}), 0);
    EXPECT_EQ(q.wait(1ms), 0u);
    EXPECT_EQ(b.calls, 0);
    EXPECT_EQ(rig.blk->failure(), 0);

    rig.model.set_needs_reset();
    Completion c;
    ASSERT_EQ(q.submit({block::Op::read, 1, 1, buffer.data() + 512, &Completion::done, &c}), 0);
    const std::size_t status_writes = rig.model.status_writes.size();
    for (int i = 0; i < 1000 && (b.calls == 0 || c.calls == 0); ++i) {  // checks 100 ms apart
        q.wait(1ms);
    }
    EXPECT_EQ(rig.blk->failure(), EIO);
    ASSERT_EQ(b.calls, 1);
    ASSERT_EQ(c.calls, 1);
    EXPECT_EQ(b.status.error, EIO);
    EXPECT_EQ(c.status.error, EIO);
    EXPECT_EQ(q.outstanding(), 0u);
    ASSERT_GT(rig.model.status_writes.size(), status_writes);
    EXPECT_EQ(rig.model.status_writes.back(), 0u);          // reset before the requests were failed
    EXPECT_EQ(static_cast<BlkQueue&>(q).bad_status(), 0u);  // failed, not garbage
    Completion d;
    EXPECT_EQ(q.enqueue({block::Op::read, 0, 1, buffer.data(), &Completion::done, &d}), -ENODEV);
}

TEST(VirtioBlk, InterruptModeSleepsOnTheQueueVector) {
    FakeVirtioBlk::Options o;
    o.queues = 2;
    o.msix_vectors = 3;
    o.features |= bit(blk_feature::mq);
    BlkOptions options = small_options();
    options.queues = 2;
    options.mode = irq::WaitMode::interrupt;
    BlkRig rig(o, options);
    EXPECT_EQ(rig.blk->geometry().queue_count, 2u);
    EXPECT_EQ(rig.model.device.enabled_vectors(IrqKind::msix), 3u);
    EXPECT_EQ(rig.model.queues()[0].vector, 1u);
    EXPECT_EQ(rig.model.queues()[1].vector, 2u);
    auto& q = rig.blk->open_queue(1, 0, irq::WaitMode::interrupt);
    auto buffer = rig.blk->dma_pool().allocate(512, 512);
    // The model serves only when told to: the wait must sleep until the vector fires.
    rig.model.serve = false;
    Completion c;
    ASSERT_EQ(q.submit({block::Op::write, 1, 1, buffer.data(), &Completion::done, &c}), 0);
    EXPECT_EQ(q.wait(1ms), 0u);  // nothing yet: times out
    rig.model.serve_queue(1);    // interrupts are enabled only while a wait sleeps...
    EXPECT_EQ(rig.model.interrupts_raised, 0u);
    EXPECT_EQ(q.wait(1ms), 1u);  // ...but the entry is found all the same
    EXPECT_EQ(c.calls, 1);
}

TEST(VirtioBlk, IndirectDescriptorsTakeOneRingEntryPerRequest) {
    FakeVirtioBlk::Options o;
    o.features |= bit(feature::indirect_desc);
    BlkRig rig(o);
    EXPECT_NE(rig.model.driver_features & bit(feature::indirect_desc), 0u);
    EXPECT_EQ(rig.blk->geometry().max_queue_depth, 256u);  // one descriptor per request
    auto& q = rig.blk->open_queue(0);
    auto& vq = static_cast<BlkQueue&>(q).virtqueue();
    auto buffer = rig.blk->dma_pool().allocate(100 * 512, 4096);
    for (std::size_t i = 0; i < buffer.size(); ++i) {
        buffer.data()[i] = static_cast<std::byte>(i * 13 + 5);
    }
    std::vector<Completion> c(100);
    for (unsigned i = 0; i < 100; ++i) {  // more than 256 / 3 in flight
        ASSERT_EQ(
            q.enqueue({block::Op::write, i, 1, buffer.data() + i * 512, &Completion::done, &c[i]}),
            0);
    }
    EXPECT_EQ(vq.free_descriptors(), 256u - 100u);
    q.flush();
    EXPECT_EQ(q.poll(), 100u);
    EXPECT_EQ(rig.model.indirect_chains, 100u);
    EXPECT_EQ(std::memcmp(rig.model.disk_.data(), buffer.data(), buffer.size()), 0);
    auto in = rig.blk->dma_pool().allocate(100 * 512, 4096);
    Completion r;
    run_to_completion(q, {block::Op::read, 0, 100, in.data(), &Completion::done, &r}, r);
    EXPECT_TRUE(r.status.ok());
    EXPECT_EQ(std::memcmp(in.data(), buffer.data(), buffer.size()), 0);
    EXPECT_TRUE(rig.model.device.dma().faults.empty());
}

TEST(VirtioBlk, WriteZeroesAndDiscardWhenOffered) {
    FakeVirtioBlk::Options o;
    o.features |= bit(blk_feature::write_zeroes) | bit(blk_feature::discard);
    BlkRig rig(o);
    const auto g = rig.blk->geometry();
    EXPECT_TRUE(g.write_zeroes);
    EXPECT_TRUE(g.deallocate);
    std::memset(rig.model.disk_.data(), 0xee, rig.model.disk_.size());
    auto& q = rig.blk->open_queue(0);
    Completion z;
    run_to_completion(q, {block::Op::write_zeroes, 10, 4, nullptr, &Completion::done, &z}, z);
    EXPECT_TRUE(z.status.ok());
    EXPECT_EQ(rig.model.disk_[10 * 512 - 1], std::byte{0xee});
    EXPECT_EQ(rig.model.disk_[10 * 512], std::byte{0});
    EXPECT_EQ(rig.model.disk_[14 * 512 - 1], std::byte{0});
    EXPECT_EQ(rig.model.disk_[14 * 512], std::byte{0xee});
    Completion d;
    run_to_completion(q, {block::Op::deallocate, 0, 8, nullptr, &Completion::done, &d}, d);
    EXPECT_TRUE(d.status.ok());
}

TEST(VirtioBlk, SubmittingAndReapingAllocateNothing) {
    BlkRig rig;
    auto& q = rig.blk->open_queue(0);
    auto buffer = rig.blk->dma_pool().allocate(32 * 512, 4096);
    std::vector<Completion> c(32);
    const auto round = [&] {
        for (unsigned i = 0; i < 32; ++i) {
            ASSERT_EQ(q.enqueue({i % 2 == 0 ? block::Op::write : block::Op::read, i, 1,
                                 buffer.data() + i * 512, &Completion::done, &c[i]}),
                      0);
        }
        q.flush();
        unsigned done = 0;
        for (int i = 0; i < 100 && done < 32; ++i) {
            done += q.wait(1ms);
        }
        ASSERT_EQ(done, 32u);
    };
    round();  // the fakes' own logs grow here once
    rig.model.device.accesses.reserve(rig.model.device.accesses.size() + 1000);
    rig.model.device.dma().accessed.reserve(rig.model.device.dma().accessed.size() + 10000);
    const std::uint64_t before = g_allocations.load();
    for (int r = 0; r < 5; ++r) {
        round();
    }
    EXPECT_EQ(g_allocations.load() - before, 0u);
    EXPECT_EQ(c[31].calls, 6);
}

TEST(VirtioBlk, QueueSizeZeroIsRefused) {
    FakeVirtioBlk::Options o;
    o.queue_size = 0;
    FakeVirtioBlk model(o);
    const auto message = error_of([&] { BlkDevice blk(model.take(), small_options()); }, ENODEV);
    EXPECT_EQ(message,
              "set up virtqueue 0 fake:virtio-blk: the device reports queue_size 0: the "
              "queue is unavailable (VIRTIO 1.2 §4.1.4.3)");
    // The half-started device was reset on the way out (§4.1.4.3.2), not left in FEATURES_OK.
    ASSERT_GE(model.status_writes.size(), 2u);
    EXPECT_EQ(model.status_writes.back(), 0u);
    EXPECT_EQ(model.status_writes[model.status_writes.size() - 2],
              status::acknowledge | status::driver | status::features_ok);
}

TEST(VirtioBlk, MoreQueuesThanTheDeviceHasAreNotGranted) {
    BlkOptions options = small_options();
    options.queues = 4;
    BlkRig rig(FakeVirtioBlk::Options(), options);  // no VIRTIO_BLK_F_MQ: one queue
    EXPECT_EQ(rig.blk->geometry().queue_count, 1u);
    const auto message = error_of([&] { rig.blk->open_queue(1); }, EINVAL);
    EXPECT_NE(message.find("the device has 1 request queue(s) (no VIRTIO_BLK_F_MQ)"),
              std::string::npos)
        << message;
}

TEST(VirtioBlk, NoVersion1NoDriver) {
    FakeVirtioBlk::Options o;
    o.features = bit(blk_feature::flush);
    FakeVirtioBlk model(o);
    const auto message = error_of([&] { BlkDevice blk(model.take(), small_options()); }, ENOTSUP);
    EXPECT_NE(message.find("does not offer VIRTIO_F_VERSION_1"), std::string::npos) << message;
}

TEST(VirtioBlk, BlockSizeFromTheConfiguration) {
    FakeVirtioBlk::Options o;
    o.block_size = 4096;
    o.capacity = 8192;
    BlkRig rig(o);
    EXPECT_EQ(rig.blk->geometry().block_size, 4096u);
    EXPECT_EQ(rig.blk->geometry().block_count, 1024u);
    auto& q = rig.blk->open_queue(0);
    auto buffer = rig.blk->dma_pool().allocate(4096, 4096);
    std::memset(buffer.data(), 0x11, 4096);
    Completion c;
    run_to_completion(q, {block::Op::write, 3, 1, buffer.data(), &Completion::done, &c}, c);
    EXPECT_EQ(rig.model.disk_[3 * 4096], std::byte{0x11});  // sector 24
    EXPECT_EQ(rig.model.disk_[3 * 4096 - 1], std::byte{0});
}

}  // namespace
}  // namespace ring3::virtio
