// The threaded Batcher: many producers, several workers, shutdown under load. A fake
// backend encodes each input into its output, so every sequence's row proves where it
// came from. Also run under ThreadSanitizer (label tsan). No sleeps: tests synchronise
// on the fake backend's gate and on the answers themselves. std::mutex, not absl::Mutex:
// Debian's Abseil is not built for ThreadSanitizer, which cannot see its ordering.
#include "embedserve/batching/batcher.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util/fake_backend.h"
#include "test_util/fake_clock.h"

namespace embedserve {
namespace {

using ::embedserve::testing::FakeBackend;
using ::embedserve::testing::FakeClock;
using ::testing::HasSubstr;

TEST(BatcherOptionsTest, ValidateNamesFieldRuleAndValue) {
  Batcher::Options o;
  EXPECT_TRUE(o.Validate().ok());
  o.max_batch_size = 0;
  EXPECT_EQ(o.Validate().message(), "batching.max_batch_size must be >= 1; was 0");
  o = Batcher::Options();
  o.max_batch_tokens = -5;
  EXPECT_EQ(o.Validate().message(), "batching.max_batch_tokens must be >= 1; was -5");
  o = Batcher::Options();
  o.max_queue_delay_us = -1;
  EXPECT_EQ(o.Validate().message(), "batching.max_queue_delay_us must be >= 0; was -1");
  o = Batcher::Options();
  o.max_queue_sequences = 0;
  EXPECT_EQ(o.Validate().message(), "batching.max_queue_sequences must be >= 1; was 0");
  o = Batcher::Options();
  o.num_workers = -1;
  EXPECT_EQ(o.Validate().message(), "batching.workers must be >= 0; was -1");
  o.num_workers = 0;  // no threads: stepped with Batcher::Step
  EXPECT_TRUE(o.Validate().ok());
  o = Batcher::Options();
  o.length_bucketing_max_age_us = -2;
  EXPECT_EQ(o.Validate().message(), "batching.length_bucketing_max_age_us must be >= 0; was -2");
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = Batcher::Options();
  o.completion_threads = -1;
  EXPECT_EQ(o.Validate().message(), "batching.completion_threads must be in [0, 64]; was -1");
  o.completion_threads = Batcher::Options::kMaxCompletionThreads + 1;
  EXPECT_EQ(o.Validate().message(), "batching.completion_threads must be in [0, 64]; was 65");
  o.completion_threads = 4;
  EXPECT_TRUE(o.Validate().ok());
  o = Batcher::Options();
  o.idle_spin_us = -1;
  EXPECT_EQ(o.Validate().message(), "batching.idle_spin_us must be >= 0; was -1");
  o.idle_spin_us = Batcher::Options::kMaxIdleSpinUs + 1;
  EXPECT_EQ(o.Validate().message(), "batching.idle_spin_us must be <= 10000; was 10001");
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o.idle_spin_us = 0;
  EXPECT_TRUE(o.Validate().ok());
  o.idle_spin_us = Batcher::Options::kMaxIdleSpinUs;
  EXPECT_TRUE(o.Validate().ok());
  o = Batcher::Options();
  o.express_max_tokens = o.max_batch_tokens + 1;
  EXPECT_EQ(o.Validate().message(),
            "batching.express_max_tokens must be <= batching.max_batch_tokens (8192); was 8193");
  o.express_max_tokens = 256;
  EXPECT_TRUE(o.Validate().ok());
  o.num_workers = 0;  // nothing for the lane to run beside
  EXPECT_EQ(o.Validate().message(),
            "batching.express_max_tokens needs batching on and worker threads; was 256 with 0 "
            "workers");
  o.num_workers = 1;
  o.express_cpu_threads = -1;
  EXPECT_EQ(o.Validate().message(), "batching.express_cpu_threads must be in [0, 256]; was -1");
}

TEST(BatcherTest, CreateRejectsBadArguments) {
  FakeBackend backend;
  Batcher::Options bad;
  bad.max_batch_size = 0;
  EXPECT_EQ(Batcher::Create(bad, &backend, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Batcher::Create(Batcher::Options(), nullptr, nullptr).status().message(),
              HasSubstr("backend is null"));
  FakeBackend::Options zero_dim;
  zero_dim.dimension = 0;
  FakeBackend no_dims(zero_dim);
  EXPECT_THAT(Batcher::Create(Batcher::Options(), &no_dims, nullptr).status().message(),
              HasSubstr("dimension 0"));
}

// Checks each answer against the fake backend's encoding of the request's sequences.
struct Ledger {
  explicit Ledger(size_t n) : calls(n), ok(n) {}
  std::vector<std::atomic<int>> calls;  // per request: times `done` ran
  std::vector<std::atomic<int>> ok;     // per request: rows all correct
};

BatchRequest MakeRequest(std::vector<TokenIds> seqs, Ledger* ledger, size_t index) {
  BatchRequest r;
  auto expected = std::make_shared<std::vector<TokenIds>>(seqs);
  r.sequences = std::move(seqs);
  r.done = [ledger, index, expected](absl::StatusOr<EmbeddingMatrix> m, const RequestTimings& t) {
    bool good = m.ok() && m->rows == static_cast<int64_t>(expected->size()) && t.num_batches >= 1;
    for (size_t i = 0; good && i < expected->size(); ++i) {
      const std::vector<float> want = FakeBackend::Encode((*expected)[i], m->dim);
      good = std::equal(want.begin(), want.end(), m->Row(static_cast<int64_t>(i)));
    }
    if (good) ledger->ok[index].fetch_add(1);
    ledger->calls[index].fetch_add(1);
  };
  return r;
}

// Request `r` of producer `p`: 1..5 sequences of 1..40 tokens with ids unique to (p, r, i).
std::vector<TokenIds> ProducerSequences(int p, int r) {
  const int n = 1 + (p * 7 + r) % 5;
  std::vector<TokenIds> seqs;
  for (int i = 0; i < n; ++i) {
    const int len = 1 + (p * 13 + r * 5 + i * 3) % 40;
    TokenIds ids(static_cast<size_t>(len));
    for (int k = 0; k < len; ++k) ids[static_cast<size_t>(k)] = (p * 4096 + r) * 8 + i + k;
    ids.front() = (p * 4096 + r) * 8 + i;
    seqs.push_back(std::move(ids));
  }
  return seqs;
}

class CountingObserver : public BatchObserver {
 public:
  void OnBatch(const BatchStats& stats) override {
    sequences.fetch_add(stats.sequences);
    batches.fetch_add(1);
    if (static_cast<int32_t>(stats.queue_us.size()) != stats.sequences ||
        stats.padded_tokens < stats.tokens || stats.longest * stats.sequences != stats.padded_tokens) {
      bad.fetch_add(1);
    }
  }
  void OnQueueDepth(int64_t depth) override {
    if (depth < 0) bad.fetch_add(1);
  }
  std::atomic<int64_t> sequences{0};
  std::atomic<int64_t> batches{0};
  std::atomic<int64_t> bad{0};
};

TEST(BatcherTest, EverySequenceGetsItsOwnResultExactlyOnce) {
  struct Sweep {
    int producers, workers, max_batch_size;
    int64_t delay_us, idle_spin_us;
  };
  constexpr int64_t kMaxSpin = Batcher::Options::kMaxIdleSpinUs;
  for (const Sweep s : {Sweep{1, 1, 64, 0, 0}, Sweep{1, 1, 64, 0, kMaxSpin}, Sweep{4, 2, 8, 0, 50},
                        Sweep{6, 3, 16, 50, 50}, Sweep{6, 3, 16, 50, 0}, Sweep{8, 4, 3, 0, kMaxSpin}}) {
    SCOPED_TRACE(::testing::Message() << s.producers << " producers, " << s.workers
                                      << " workers, batch " << s.max_batch_size << ", delay "
                                      << s.delay_us << ", idle spin " << s.idle_spin_us);
    constexpr int kRequestsPerProducer = 1000;
    FakeBackend::Options bo;
    bo.record_calls = false;
    FakeBackend backend(bo);
    CountingObserver observer;
    Batcher::Options o;
    o.num_workers = s.workers;
    o.max_batch_size = s.max_batch_size;
    o.max_queue_delay_us = s.delay_us;
    o.idle_spin_us = s.idle_spin_us;
    o.max_queue_sequences = 64;  // small: producers meet RESOURCE_EXHAUSTED and retry
    auto batcher = Batcher::Create(o, &backend, &observer);
    ASSERT_TRUE(batcher.ok()) << batcher.status();
    Ledger ledger(static_cast<size_t>(s.producers * kRequestsPerProducer));
    std::atomic<int64_t> total_sequences{0};
    std::atomic<int64_t> rejected{0};
    std::vector<std::thread> producers;
    for (int p = 0; p < s.producers; ++p) {
      producers.emplace_back([&, p] {
        for (int r = 0; r < kRequestsPerProducer; ++r) {
          const size_t index = static_cast<size_t>(p * kRequestsPerProducer + r);
          const std::vector<TokenIds> seqs = ProducerSequences(p, r);
          while (true) {
            absl::Status st = (*batcher)->Submit(MakeRequest(seqs, &ledger, index));
            if (st.ok()) break;
            ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
            rejected.fetch_add(1);
            std::this_thread::yield();
          }
          total_sequences.fetch_add(static_cast<int64_t>(seqs.size()));
        }
      });
    }
    for (auto& t : producers) t.join();
    (*batcher)->Shutdown();
    for (size_t i = 0; i < ledger.calls.size(); ++i) {
      ASSERT_EQ(ledger.calls[i].load(), 1) << "request " << i;
      ASSERT_EQ(ledger.ok[i].load(), 1) << "request " << i << " got wrong rows";
    }
    EXPECT_EQ(observer.sequences.load(), total_sequences.load());
    EXPECT_EQ(observer.bad.load(), 0);
    EXPECT_EQ((*batcher)->QueueDepth(), 0);
  }
}

TEST(BatcherTest, ShutdownUnderLoadAnswersEveryone) {
  for (const auto& [workers, idle_spin_us] : std::vector<std::pair<int, int64_t>>{
           {1, 0}, {1, Batcher::Options::kMaxIdleSpinUs}, {3, 50}}) {
    SCOPED_TRACE(::testing::Message() << workers << " workers, idle spin " << idle_spin_us);
    FakeBackend::Options bo;
    bo.record_calls = false;
    FakeBackend backend(bo);
    Batcher::Options o;
    o.num_workers = workers;
    o.idle_spin_us = idle_spin_us;
    o.max_batch_size = 4;
    o.max_queue_sequences = 256;
    auto batcher = Batcher::Create(o, &backend, nullptr);
    ASSERT_TRUE(batcher.ok());
    constexpr int kProducers = 4, kPerProducer = 400;
    Ledger ledger(kProducers * kPerProducer);
    std::vector<std::atomic<int>> accepted(kProducers * kPerProducer);
    std::atomic<int> started{0};
    std::atomic<bool> go_shutdown{false};
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        for (int r = 0; r < kPerProducer; ++r) {
          const size_t index = static_cast<size_t>(p * kPerProducer + r);
          absl::Status st = (*batcher)->Submit(MakeRequest(ProducerSequences(p, r), &ledger, index));
          if (st.ok()) accepted[index].store(1);
          if (r == 20 && started.fetch_add(1) + 1 == kProducers) go_shutdown.store(true);
          if (!st.ok() && st.code() != absl::StatusCode::kResourceExhausted) {
            ASSERT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
          }
        }
      });
    }
    while (!go_shutdown.load()) std::this_thread::yield();
    (*batcher)->Shutdown(/*grace_us=*/0);  // stop now: queued work fails with UNAVAILABLE
    for (auto& t : producers) t.join();
    int answered = 0;
    for (size_t i = 0; i < ledger.calls.size(); ++i) {
      ASSERT_EQ(ledger.calls[i].load(), accepted[i].load()) << "request " << i;
      answered += ledger.calls[i].load();
    }
    EXPECT_GT(answered, 0);
    EXPECT_EQ((*batcher)->Submit(MakeRequest(ProducerSequences(0, 0), &ledger, 0)).code(),
              absl::StatusCode::kUnavailable);
    (*batcher)->Shutdown();  // idempotent
  }
}

// Records each request's final status.
struct StatusBox {
  std::mutex mu;
  std::vector<absl::StatusCode> codes;  // guarded by mu
  int count() {
    std::lock_guard<std::mutex> l(mu);
    return static_cast<int>(codes.size());
  }
};

BatchRequest BoxedRequest(std::vector<TokenIds> seqs, StatusBox* box, int64_t deadline_us = 0) {
  BatchRequest r;
  r.sequences = std::move(seqs);
  r.deadline_us = deadline_us;
  r.done = [box](absl::StatusOr<EmbeddingMatrix> m, const RequestTimings&) {
    std::lock_guard<std::mutex> l(box->mu);
    box->codes.push_back(m.status().code());
  };
  return r;
}

TEST(BatcherTest, ShutdownPastGraceFailsQueuedWithUnavailableAndFinishesInFlight) {
  FakeBackend backend;
  Batcher::Options o;
  o.max_batch_size = 1;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox in_flight, queued;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1, 2, 3}}, &in_flight)).ok());
  backend.WaitForWaitingCalls(1);  // the worker is inside Embed
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{4, 5}}, &queued)).ok());
  EXPECT_EQ((*batcher)->QueueDepth(), 3);
  std::thread stopper([&] { (*batcher)->Shutdown(/*grace_us=*/1000); });
  // Shutdown answers the queued ones (UNAVAILABLE) while the batch in flight still runs.
  while (queued.count() < 3) std::this_thread::yield();
  {
    std::lock_guard<std::mutex> l(queued.mu);
    for (auto c : queued.codes) EXPECT_EQ(c, absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(in_flight.count(), 0);
  backend.OpenGate();
  stopper.join();
  std::lock_guard<std::mutex> l(in_flight.mu);
  ASSERT_EQ(in_flight.codes.size(), 1u);
  EXPECT_EQ(in_flight.codes[0], absl::StatusCode::kOk);
}

// completion_threads: the answers of a batch of kMinHandOff requests run on the pool, so
// while one of them is still running (held here) the worker answers the next request;
// a lone request's answer runs on the worker. Shutdown waits for the held answer.
TEST(BatcherTest, CompletionThreadsAnswerALargeBatchWhileTheWorkerGoesOn) {
  FakeBackend backend;
  Batcher::Options o;
  o.completion_threads = 1;
  o.max_batch_size = 64;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;  // guarded by mu: the held answers may return
  int held = 0;          // guarded by mu: answers of the large batch begun
  StatusBox first, large, next;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1, 2}}, &first)).ok());
  backend.WaitForWaitingCalls(1);  // the worker runs `first` alone
  constexpr int kLarge = Batcher::Options::kMinHandOff;
  for (int i = 0; i < kLarge; ++i) {
    BatchRequest r = BoxedRequest({{3, 4, i}}, &large);
    r.done = [&, box = std::move(r.done)](absl::StatusOr<EmbeddingMatrix> m,
                                          const RequestTimings& t) {
      {
        std::unique_lock<std::mutex> l(mu);
        ++held;
        cv.notify_all();
        cv.wait(l, [&] { return release; });
      }
      box(std::move(m), t);
    };
    ASSERT_TRUE((*batcher)->Submit(std::move(r)).ok());
  }
  backend.OpenGate();  // `first`, then the 16 queued requests as one batch
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(30), [&] { return held > 0; }))
        << "the large batch was never answered";
  }
  // One pool thread holds the large batch's answers; the worker must still be free.
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{5, 6}}, &next)).ok());
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (next.count() == 0 && std::chrono::steady_clock::now() < limit) std::this_thread::yield();
  EXPECT_EQ(next.count(), 1) << "the worker did not answer while the pool held a batch";
  EXPECT_EQ(large.count(), 0);
  {
    std::lock_guard<std::mutex> l(mu);
    release = true;
  }
  cv.notify_all();
  (*batcher)->Shutdown();
  EXPECT_EQ(first.count(), 1);
  EXPECT_EQ(large.count(), kLarge);  // every held answer ran before Shutdown returned
  EXPECT_EQ(next.count(), 1);
}

TEST(BatcherTest, ShutdownWithinGraceFinishesQueuedWork) {
  FakeBackend backend;
  Batcher::Options o;
  o.max_batch_size = 2;
  o.max_queue_delay_us = 60'000'000;  // would wait a minute; shutdown flushes at once
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1, 2}}, &box)).ok());
  (*batcher)->Shutdown();
  std::lock_guard<std::mutex> l(box.mu);
  ASSERT_EQ(box.codes.size(), 1u);
  EXPECT_EQ(box.codes[0], absl::StatusCode::kOk);
}

// Records OnDropped calls.
class DropObserver : public BatchObserver {
 public:
  void OnBatch(const BatchStats&) override {}
  void OnQueueDepth(int64_t) override {}
  void OnDropped(absl::StatusCode code, int32_t sequences) override {
    std::lock_guard<std::mutex> l(mu);
    drops.emplace_back(code, sequences);
  }
  std::mutex mu;
  std::vector<std::pair<absl::StatusCode, int32_t>> drops;  // guarded by mu
};

TEST(BatcherTest, DeadlinePassingWhileQueuedEndsTheRequest) {
  FakeClock clock;
  FakeBackend backend;
  DropObserver observer;
  Batcher::Options o;
  o.max_batch_size = 1;
  auto batcher = Batcher::Create(o, &backend, &observer, &clock);
  ASSERT_TRUE(batcher.ok());
  StatusBox first, late;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1}}, &first)).ok());
  backend.WaitForWaitingCalls(1);
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{2}}, &late, clock.NowMicros() + 10)).ok());
  clock.Advance(10);
  backend.OpenGate();
  while (late.count() < 1) std::this_thread::yield();
  {
    std::lock_guard<std::mutex> l(late.mu);
    EXPECT_EQ(late.codes[0], absl::StatusCode::kDeadlineExceeded);
  }
  // Again with a split request, while the worker is busy with another one.
  StatusBox blocker, last;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{6}}, &blocker)).ok());
  backend.WaitForWaitingCalls(1);
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{3}, {4}}, &late, clock.NowMicros() + 10)).ok());
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{5}}, &last)).ok());
  clock.Advance(10);
  backend.OpenGate();
  (*batcher)->Shutdown();
  EXPECT_EQ(backend.num_calls(), 3);  // first, blocker, last: the late ones never ran
  EXPECT_EQ(first.count(), 1);
  EXPECT_EQ(last.count(), 1);
  std::lock_guard<std::mutex> l(observer.mu);
  EXPECT_EQ(observer.drops,
            (std::vector<std::pair<absl::StatusCode, int32_t>>{
                {absl::StatusCode::kDeadlineExceeded, 1}, {absl::StatusCode::kDeadlineExceeded, 2}}));
}

TEST(BatcherTest, WorkersRunBatchesConcurrently) {
  FakeBackend backend;
  Batcher::Options o;
  o.max_batch_size = 1;
  o.num_workers = 3;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  backend.CloseGate();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{i + 1}}, &box)).ok());
  backend.WaitForWaitingCalls(3);  // returns only if three Embed calls are in at once
  backend.OpenGate();
  (*batcher)->Shutdown();
  EXPECT_EQ(box.count(), 3);
}

// The express lane: while the one worker is held in a batch that holds a large request,
// a small request runs at once beside it, on the lane's thread count; a large one waits
// for the worker. The gate holds every call, so each step is seen as calls waiting at
// once (a lane that did not run beside the worker hangs here).
TEST(BatcherTest, ExpressLaneRunsSmallRequestsBesideABulkBatch) {
  FakeBackend backend;
  Batcher::Options o;
  o.num_workers = 1;
  o.express_max_tokens = 4;
  o.express_cpu_threads = 1;
  o.idle_spin_us = 0;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  backend.CloseGate();
  // The worker is free: it takes a large request (5 tokens).
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1, 1, 1, 1, 1}}, &box)).ok());
  backend.WaitForWaitingCalls(1);
  // It is busy now: another large request waits, a small one (2 x 2 tokens) runs on the
  // express lane at once.
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{3, 3, 3, 3, 3}}, &box)).ok());
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{4, 4}, {5, 5}}, &box)).ok());
  backend.WaitForWaitingCalls(2);
  EXPECT_EQ((*batcher)->QueueDepth(), 1);  // the large one
  backend.OpenGate();
  (*batcher)->Shutdown();
  EXPECT_EQ(box.count(), 3);
  const std::vector<std::vector<TokenIds>> calls = backend.calls();
  // (cpu_threads, cpu_nice): the workers' calls leave both to the backend (0, -1); the
  // lane's run on express_cpu_threads at the process's own priority (1, 0).
  const std::vector<std::pair<int32_t, int32_t>> call = backend.call_options();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0], (std::vector<TokenIds>{{1, 1, 1, 1, 1}}));
  EXPECT_EQ(call[0], std::make_pair(0, -1));
  EXPECT_EQ(calls[1], (std::vector<TokenIds>{{4, 4}, {5, 5}}));
  EXPECT_EQ(call[1], std::make_pair(1, 0));
  EXPECT_EQ(calls[2], (std::vector<TokenIds>{{3, 3, 3, 3, 3}}));
  EXPECT_EQ(call[2], std::make_pair(0, -1));
}

// Beside a batch of small requests only, the lane stays idle, and a worker hands it
// nothing while no larger request is queued: small requests wait for the worker, which
// runs them together on all its threads (two small batches splitting the cores would win
// nothing; docs/batching.md). Here three small requests arrive while the worker is held
// in a one-text batch; more than the lane's batch takes (2 tokens) is then queued.
TEST(BatcherTest, ExpressLaneStaysIdleBesideABatchOfSmallRequests) {
  FakeBackend backend;
  Batcher::Options o;
  o.num_workers = 1;
  o.express_max_tokens = 2;
  o.idle_spin_us = 0;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{5}}, &box)).ok());
  backend.WaitForWaitingCalls(1);
  for (int32_t id : {1, 2, 3}) ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{id}}, &box)).ok());
  backend.OpenGate();
  while (box.count() < 4) std::this_thread::yield();  // answered before any Shutdown flush
  (*batcher)->Shutdown();
  EXPECT_EQ(backend.calls(), (std::vector<std::vector<TokenIds>>{{{5}}, {{1}, {2}, {3}}}));
  EXPECT_EQ(backend.call_options(),
            (std::vector<std::pair<int32_t, int32_t>>{{0, -1}, {0, -1}}));  // both the worker's
}

// A worker about to form a batch that holds a small request and other work hands the
// small one to the idle lane instead, so that it does not ride in (and wait for) the
// larger batch. The worker here waits for a full batch (a long max_queue_delay) that
// never comes, so only the lane can have run the small request; Shutdown flushes the
// large one.
TEST(BatcherTest, WorkerHandsSmallRequestsQueuedWithLargerOnesToTheLane) {
  FakeBackend backend;
  Batcher::Options o;
  o.num_workers = 1;
  o.express_max_tokens = 2;
  o.idle_spin_us = 0;
  o.max_queue_delay_us = 1'000'000'000;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{7, 7, 7}}, &box)).ok());  // large: 3 tokens
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{9}}, &box)).ok());        // small
  backend.WaitForWaitingCalls(1);
  EXPECT_EQ(backend.calls(), (std::vector<std::vector<TokenIds>>{{{9}}}));
  EXPECT_EQ(backend.call_options(), (std::vector<std::pair<int32_t, int32_t>>{{1, 0}}));
  EXPECT_EQ((*batcher)->QueueDepth(), 1);
  backend.OpenGate();
  (*batcher)->Shutdown();
  EXPECT_EQ(box.count(), 2);
  EXPECT_EQ(backend.calls(), (std::vector<std::vector<TokenIds>>{{{9}}, {{7, 7, 7}}}));
}

// With only small requests queued a free worker runs them itself, on all its threads.
TEST(BatcherTest, WorkerRunsSmallRequestsItselfWhenNothingElseIsQueued) {
  FakeBackend backend;
  Batcher::Options o;
  o.num_workers = 1;
  o.express_max_tokens = 2;
  o.idle_spin_us = 0;
  o.max_queue_delay_us = 1'000'000'000;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1}}, &box)).ok());
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{2}}, &box)).ok());
  (*batcher)->Shutdown();  // flushes the worker's waiting batch
  EXPECT_EQ(box.count(), 2);
  EXPECT_EQ(backend.calls(), (std::vector<std::vector<TokenIds>>{{{1}, {2}}}));
  EXPECT_EQ(backend.call_options(), (std::vector<std::pair<int32_t, int32_t>>{{0, -1}}));
}

// A worker that has just finished polls (idle_spin_us) instead of blocking; a Submit that
// finds it polling skips the notify. One request at a time, each answered before the
// next: every Submit lands while the worker polls (10 ms of it) or after it blocked, and
// must be picked up either way (a lost wake-up hangs here).
TEST(BatcherTest, PollingWorkerPicksUpEachSubmit) {
  for (int workers : {1, 2}) {
    SCOPED_TRACE(workers);
    FakeBackend::Options bo;
    bo.record_calls = false;
    FakeBackend backend(bo);
    Batcher::Options o;
    o.num_workers = workers;
    o.idle_spin_us = Batcher::Options::kMaxIdleSpinUs;
    auto batcher = Batcher::Create(o, &backend, nullptr);
    ASSERT_TRUE(batcher.ok());
    constexpr int kRequests = 300;
    Ledger ledger(kRequests);
    for (int r = 0; r < kRequests; ++r) {
      ASSERT_TRUE((*batcher)->Submit(MakeRequest(ProducerSequences(1, r), &ledger, static_cast<size_t>(r))).ok());
      while (ledger.calls[static_cast<size_t>(r)].load() == 0) std::this_thread::yield();
      ASSERT_EQ(ledger.ok[static_cast<size_t>(r)].load(), 1) << "request " << r;
    }
    (*batcher)->Shutdown();  // also ends a worker that is polling
    for (int r = 0; r < kRequests; ++r) EXPECT_EQ(ledger.calls[static_cast<size_t>(r)].load(), 1);
  }
}

// With batches of one sequence, a worker that takes a batch and leaves work queued must
// get the polling worker (or a blocked one) to take the rest while its own batch runs.
TEST(BatcherTest, WorkLeftQueuedReachesThePollingWorker) {
  FakeBackend backend;
  Batcher::Options o;
  o.max_batch_size = 1;
  o.num_workers = 2;
  o.idle_spin_us = Batcher::Options::kMaxIdleSpinUs;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1}, {2}}, &box)).ok());
  backend.WaitForWaitingCalls(2);  // both halves in Embed at once: the second worker got one
  backend.OpenGate();
  (*batcher)->Shutdown();
  EXPECT_EQ(box.count(), 1);
}

TEST(BatcherTest, QueueFullFailsFastWhileWorkersAreBusy) {
  FakeBackend backend;
  Batcher::Options o;
  o.max_batch_size = 1;
  o.max_queue_sequences = 2;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1}}, &box)).ok());
  backend.WaitForWaitingCalls(1);
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{2}, {3}}, &box)).ok());
  const absl::Status full = (*batcher)->Submit(BoxedRequest({{4}}, &box));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  // The lock-free check agrees, in the same words; it leaves a request the queue could
  // never hold to Submit's INVALID_ARGUMENT.
  const absl::Status checked = (*batcher)->CheckRoom(1);
  EXPECT_EQ(checked.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(checked.message(), full.message());
  EXPECT_TRUE((*batcher)->CheckRoom(3).ok());
  EXPECT_EQ((*batcher)->Submit(BoxedRequest({{4}, {5}, {6}}, &box)).code(),
            absl::StatusCode::kInvalidArgument);
  backend.OpenGate();
  (*batcher)->Shutdown();
  EXPECT_EQ(box.count(), 2);
  EXPECT_TRUE((*batcher)->CheckRoom(2).ok());  // the queue is empty again
}

}  // namespace
}  // namespace embedserve

namespace embedserve {
namespace {

// The TF Serving / Triton contract: a refused request stays with the caller, whole.
TEST(BatcherTest, RefusedSubmitLeavesTheRequestWithTheCaller) {
  FakeBackend backend;
  Batcher::Options o;
  o.max_batch_size = 1;
  o.max_queue_sequences = 1;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  backend.CloseGate();
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{1}}, &box)).ok());
  backend.WaitForWaitingCalls(1);
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest({{2}}, &box)).ok());  // fills the queue
  bool called = false;
  BatchRequest refused;
  refused.sequences = {{7, 8, 9}};
  refused.deadline_us = 123;
  refused.is_cancelled = [] { return false; };
  refused.done = [&called](absl::StatusOr<EmbeddingMatrix>, const RequestTimings&) {
    called = true;
  };
  EXPECT_EQ((*batcher)->Submit(std::move(refused)).code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_EQ(refused.sequences.size(), 1u);  // NOLINT(bugprone-use-after-move): the contract
  EXPECT_EQ(refused.sequences[0], (TokenIds{7, 8, 9}));
  EXPECT_EQ(refused.deadline_us, 123);
  EXPECT_TRUE(refused.is_cancelled);
  ASSERT_TRUE(refused.done);
  backend.OpenGate();
  (*batcher)->Shutdown();
  EXPECT_EQ((*batcher)->Submit(std::move(refused)).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(refused.done);  // NOLINT(bugprone-use-after-move)
  EXPECT_FALSE(called);
  EXPECT_EQ(box.count(), 2);
}

}  // namespace
}  // namespace embedserve

namespace embedserve {
namespace {

// A backend whose every call takes `us_per_sequence` per sequence on a fake clock.
class TimedBackend : public Backend {
 public:
  TimedBackend(FakeClock* clock, int64_t us_per_sequence)
      : clock_(clock), us_per_sequence_(us_per_sequence) {}
  const BackendInfo& Info() const override { return inner_.Info(); }
  absl::StatusOr<EmbeddingMatrix> Embed(absl::Span<const TokenIds* const> sequences) override {
    clock_->Advance(us_per_sequence_ * static_cast<int64_t>(sequences.size()));
    return inner_.Embed(sequences);
  }

 private:
  FakeClock* const clock_;
  const int64_t us_per_sequence_;
  FakeBackend inner_;
};

std::vector<TokenIds> Sequences(int n) { return std::vector<TokenIds>(static_cast<size_t>(n), TokenIds{1, 2}); }

TEST(BatcherTest, QueueWaitBoundAdmitsWhatTheRecentRateRunsInThatTime) {
  FakeClock clock;
  TimedBackend backend(&clock, /*us_per_sequence=*/1000);  // 1,000 sequences/s
  Batcher::Options o;
  o.max_batch_size = 4;
  o.max_queue_sequences = 1000;
  o.max_queue_wait_us = 100'000;  // 100 ms: 100 sequences at that rate
  o.num_workers = 0;
  auto batcher = Batcher::Create(o, &backend, nullptr, &clock);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  // No batch has run yet: only the count bounds the queue.
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(300), &box)).ok());
  while ((*batcher)->QueueDepth() > 0) ASSERT_TRUE((*batcher)->Step().ok());
  ASSERT_EQ(box.count(), 1);
  // Now 100 sequences fit, in any split, and the 101st does not.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(10), &box)).ok()) << i;
  }
  EXPECT_TRUE((*batcher)->CheckRoom(0).ok());
  const absl::Status refused = (*batcher)->Submit(BoxedRequest(Sequences(1), &box));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("batch queue is full"));
  EXPECT_THAT(refused.message(), HasSubstr("batching.max_queue_wait_ms"));
  // The lock-free check refuses in the same words, before a caller tokenizes.
  const absl::Status checked = (*batcher)->CheckRoom(1);
  EXPECT_EQ(checked.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(checked.message(), refused.message());
  // Room again once a batch has left the queue.
  ASSERT_TRUE((*batcher)->Step().ok());
  EXPECT_TRUE((*batcher)->CheckRoom(4).ok());
  EXPECT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(4), &box)).ok());
  while ((*batcher)->QueueDepth() > 0) ASSERT_TRUE((*batcher)->Step().ok());
  // An empty queue takes a request larger than the time bound (never refused forever).
  EXPECT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(500), &box)).ok());
  (*batcher)->Shutdown();
  EXPECT_EQ(box.count(), 13);
}

TEST(BatcherTest, QueueWaitBoundFollowsTheRateAndKeepsOneBatch) {
  FakeClock clock;
  TimedBackend slow(&clock, /*us_per_sequence=*/100'000);  // 10 sequences/s
  Batcher::Options o;
  o.max_batch_size = 4;
  o.max_queue_sequences = 1000;
  o.max_queue_wait_us = 100'000;  // 1 sequence at that rate: the floor, one batch, binds
  o.num_workers = 0;
  auto batcher = Batcher::Create(o, &slow, nullptr, &clock);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(4), &box)).ok());
  ASSERT_TRUE((*batcher)->Step().ok());
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(4), &box)).ok());
  EXPECT_EQ((*batcher)->Submit(BoxedRequest(Sequences(1), &box)).code(),
            absl::StatusCode::kResourceExhausted);
  // Off: only the count.
  o.max_queue_wait_us = 0;
  auto unbounded = Batcher::Create(o, &slow, nullptr, &clock);
  ASSERT_TRUE(unbounded.ok());
  ASSERT_TRUE((*unbounded)->Submit(BoxedRequest(Sequences(4), &box)).ok());
  ASSERT_TRUE((*unbounded)->Step().ok());
  EXPECT_TRUE((*unbounded)->Submit(BoxedRequest(Sequences(900), &box)).ok());
  (*unbounded)->Shutdown();
  (*batcher)->Shutdown();
}

BatchRequest KeyedRequest(int32_t sequences, uint64_t demand_key, StatusBox* box) {
  BatchRequest r = BoxedRequest(Sequences(sequences), box);
  r.demand_key = demand_key;
  return r;
}

// The overload tests' batcher: 1,000 sequences/s (known after one batch of 4), a long
// bound of 100 ms (100 sequences) and an overload bound of 40 ms (40), no workers; then
// 100 sequences queued in requests of one batch each (none a started request, which
// counts less). Not overloaded: the burst of more than 40 was taken.
class BatcherOverloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Batcher::Options o;
    o.max_batch_size = 4;
    o.max_queue_sequences = 1000;
    o.max_queue_wait_us = 100'000;
    o.overload_queue_wait_us = 40'000;
    o.num_workers = 0;
    auto created = Batcher::Create(o, &backend, nullptr, &clock);
    ASSERT_TRUE(created.ok());
    batcher = *std::move(created);
    ASSERT_TRUE(batcher->Submit(BoxedRequest(Sequences(4), &box)).ok());
    ASSERT_TRUE(batcher->Step().ok());
    for (int i = 0; i < 25; ++i) {
      ASSERT_TRUE(batcher->Submit(BoxedRequest(Sequences(4), &box)).ok()) << i;
    }
  }

  FakeClock clock;
  TimedBackend backend{&clock, /*us_per_sequence=*/1000};
  StatusBox box;
  std::unique_ptr<Batcher> batcher;
};

// The overload bound applies while the queue and the distinct requests refused within
// kOverloadHoldUs want more than max_queue_wait_us admits: an open-loop overload, whose
// refused requests are all new, keeps it on until its refusals are a second old.
TEST_F(BatcherOverloadTest, OverloadBoundHoldsWhileRefusedDemandPassesTheLongBound) {
  const absl::Status first = batcher->Submit(KeyedRequest(4, 1, &box));
  EXPECT_EQ(first.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(first.message(), HasSubstr("batching.max_queue_wait_ms bounds it to 100"));
  // Drain to 36 queued (one batch of 4 at a time on the fake clock). 36 + the 4 refused
  // fit 100: still the long bound, a burst of 60 is taken.
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(batcher->Step().ok());
  ASSERT_EQ(batcher->QueueDepth(), 36);
  EXPECT_TRUE(batcher->CheckRoom(60, 100, 2).ok());
  // Three new requests of 70 refused: 36 + 214 wanted is more than 100, so the overload
  // bound holds: 4 more fit, 5 do not.
  for (uint64_t key = 10; key < 13; ++key) {
    ASSERT_EQ(batcher->CheckRoom(70, 100, key).code(), absl::StatusCode::kResourceExhausted);
  }
  EXPECT_TRUE(batcher->CheckRoom(4, 100, 21).ok());
  const absl::Status overloaded = batcher->Submit(KeyedRequest(5, 22, &box));
  EXPECT_EQ(overloaded.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(overloaded.message(),
              HasSubstr("batching.overload_queue_wait_ms bounds it to 40 sequences"));
  // Just under a second after those refusals they still count; a second later nothing
  // is wanted but what is queued: the long bound.
  clock.Advance(Batcher::Options::kOverloadHoldUs - 100);
  EXPECT_EQ(batcher->CheckRoom(5, 100, 23).code(), absl::StatusCode::kResourceExhausted);
  clock.Advance(Batcher::Options::kOverloadHoldUs);
  EXPECT_TRUE(batcher->CheckRoom(64).ok());
  EXPECT_TRUE(batcher->Submit(BoxedRequest(Sequences(64), &box)).ok());
  batcher->Shutdown();
  EXPECT_EQ(box.count(), 1 + 25 + 1);
}

// Closed-loop callers that retry a refused request count once each, however often they
// retry: once the queue has room for them under max_queue_wait_us they get in, where the
// overload bound would keep refusing them (a request seen before counts no more; an
// admitted one no longer counts).
TEST_F(BatcherOverloadTest, ARetriedRequestCountsOnceAsDemand) {
  // Two callers of 30 sequences, each retrying every millisecond while the queue drains
  // from 100 to 44: 100 + 60 wanted, then the overload bound refuses them.
  for (int retry = 0; retry < 15; ++retry) {
    for (uint64_t caller : {7, 8}) {
      EXPECT_EQ(batcher->Submit(KeyedRequest(30, caller, &box)).code(),
                absl::StatusCode::kResourceExhausted)
          << retry << " " << caller;
    }
    ASSERT_TRUE(batcher->Step().ok());
    clock.Advance(1000);
  }
  // At 40 queued the 60 they want fit 100: the long bound, and both get in (under the
  // overload bound 40 + 30 > 40 would keep refusing them).
  ASSERT_EQ(batcher->QueueDepth(), 40);
  EXPECT_TRUE(batcher->Submit(KeyedRequest(30, 7, &box)).ok());
  EXPECT_TRUE(batcher->Submit(KeyedRequest(30, 8, &box)).ok());
  // Had the retries been new requests, their demand would have kept the overload bound:
  // as three new requests of 70 do now, once the queue is back at 40.
  for (int i = 0; i < 15; ++i) ASSERT_TRUE(batcher->Step().ok());
  ASSERT_EQ(batcher->QueueDepth(), 40);
  for (uint64_t key = 100; key < 103; ++key) {
    EXPECT_EQ(batcher->CheckRoom(70, 100, key).code(), absl::StatusCode::kResourceExhausted);
  }
  const absl::Status overloaded = batcher->CheckRoom(30, 100, 9);
  EXPECT_EQ(overloaded.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(overloaded.message(), HasSubstr("batching.overload_queue_wait_ms"));
  batcher->Shutdown();
}

// A request larger than a batch, once started, is work that newcomers pass every other
// batch, so the time bound does not count its next batch's worth: a one-text call is not
// refused behind it. What it has beyond that batch still counts.
TEST(BatcherTest, QueueWaitBoundLeavesOutOneBatchOfAStartedRequest) {
  FakeClock clock;
  TimedBackend slow(&clock, /*us_per_sequence=*/100'000);
  Batcher::Options o;
  o.max_batch_size = 4;
  o.max_queue_sequences = 1000;
  o.max_queue_wait_us = 100'000;  // the floor binds: 4 sequences
  o.num_workers = 0;
  auto batcher = Batcher::Create(o, &slow, nullptr, &clock);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(4), &box)).ok());
  ASSERT_TRUE((*batcher)->Step().ok());  // a full batch: the rate, and the bound, are known
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(12), &box)).ok());  // queue empty
  EXPECT_EQ((*batcher)->CheckRoom(1).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE((*batcher)->Step().ok());  // it has started: 8 of its sequences remain
  EXPECT_EQ((*batcher)->QueueDepth(), 8);
  // One batch (4) of them is left out; the other 4 fill the bound.
  EXPECT_EQ((*batcher)->CheckRoom(1).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE((*batcher)->Step().ok());
  EXPECT_EQ((*batcher)->QueueDepth(), 4);
  EXPECT_TRUE((*batcher)->CheckRoom(1).ok());
  ASSERT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(1), &box)).ok());
  EXPECT_TRUE((*batcher)->CheckRoom(3).ok());
  absl::Status refused = (*batcher)->Submit(BoxedRequest(Sequences(4), &box));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("1 sequences queued ahead"));
  EXPECT_EQ((*batcher)->CheckRoom(4).code(), absl::StatusCode::kResourceExhausted);
  (*batcher)->Shutdown();
}

}  // namespace
}  // namespace embedserve

namespace embedserve {
namespace {

TEST(BatcherTest, BulkRequestsFillOnlyTheirShareOfTheQueue) {
  FakeBackend backend;
  Batcher::Options o;
  o.max_batch_size = 2;
  o.max_queue_sequences = 10;
  o.num_workers = 0;
  auto batcher = Batcher::Create(o, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  StatusBox box;
  auto bulk = [&](int n) {
    BatchRequest r = BoxedRequest(Sequences(n), &box);
    r.queue_percent = 50;
    return r;
  };
  ASSERT_TRUE((*batcher)->Submit(bulk(5)).ok());  // half of 10
  const absl::Status refused = (*batcher)->Submit(bulk(1));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("batch queue is full for bulk requests"));
  EXPECT_EQ((*batcher)->CheckRoom(1, 50).code(), absl::StatusCode::kResourceExhausted);
  // The other half is there for everyone else.
  EXPECT_TRUE((*batcher)->CheckRoom(5).ok());
  EXPECT_TRUE((*batcher)->Submit(BoxedRequest(Sequences(5), &box)).ok());
  EXPECT_EQ((*batcher)->Submit(BoxedRequest(Sequences(1), &box)).code(),
            absl::StatusCode::kResourceExhausted);
  while ((*batcher)->QueueDepth() > 0) ASSERT_TRUE((*batcher)->Step().ok());
  // An empty queue takes a bulk request over its share; out-of-range shares are refused.
  EXPECT_TRUE((*batcher)->Submit(bulk(8)).ok());
  BatchRequest bad = BoxedRequest(Sequences(1), &box);
  bad.queue_percent = 0;
  EXPECT_EQ((*batcher)->Submit(std::move(bad)).code(), absl::StatusCode::kInvalidArgument);
  (*batcher)->Shutdown();
  EXPECT_EQ(box.count(), 3);
}

}  // namespace
}  // namespace embedserve
