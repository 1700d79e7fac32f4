// The batcher's behaviour without threads: a Batcher with num_workers = 0, driven one
// worker turn at a time with Batcher::Step (the turn its worker threads run), on a
// FakeClock, against a FakeBackend that encodes each input into its output row.
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "batching/batch_scheduler.h"
#include "embedserve/batching/batcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util/fake_backend.h"
#include "test_util/fake_clock.h"

namespace embedserve {
namespace {

using ::embedserve::testing::FakeBackend;
using ::embedserve::testing::FakeClock;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Action = BatchAction;

// What a request's `done` received; counts calls to catch a second answer.
struct Answer {
  int calls = 0;
  std::optional<absl::StatusOr<EmbeddingMatrix>> result;
  RequestTimings timings;
};

// Sequence `i` of request `tag`: unique ids, length `len`.
TokenIds Seq(int32_t tag, int32_t i, int32_t len) {
  TokenIds ids(static_cast<size_t>(len), 7);
  ids.front() = tag * 1000 + i;
  ids.back() = tag * 1000 + i + 1;
  return ids;
}

BatchRequest Request(std::vector<TokenIds> seqs, Answer* answer) {
  BatchRequest r;
  r.sequences = std::move(seqs);
  r.done = [answer](absl::StatusOr<EmbeddingMatrix> m, const RequestTimings& t) {
    ++answer->calls;
    answer->result = std::move(m);
    answer->timings = t;
  };
  return r;
}

// Expects `answer` to hold exactly Encode(seqs[i]) as row i.
void ExpectRows(const Answer& answer, const std::vector<TokenIds>& seqs, int64_t dim) {
  ASSERT_EQ(answer.calls, 1);
  ASSERT_TRUE(answer.result.has_value());
  ASSERT_TRUE(answer.result->ok()) << answer.result->status();
  const EmbeddingMatrix& m = **answer.result;
  ASSERT_EQ(m.rows, static_cast<int64_t>(seqs.size()));
  ASSERT_EQ(m.dim, dim);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const std::vector<float> want = FakeBackend::Encode(seqs[i], dim);
    EXPECT_EQ(std::vector<float>(m.Row(static_cast<int64_t>(i)), m.Row(static_cast<int64_t>(i)) + dim), want)
        << "row " << i;
  }
}

// Keeps the stats of the last batch (BatchStats::queue_us copied out of the batcher).
class LastBatch : public BatchObserver {
 public:
  void OnBatch(const BatchStats& stats) override {
    queue_us_.assign(stats.queue_us.begin(), stats.queue_us.end());
    stats_ = stats;
    stats_.queue_us = absl::MakeConstSpan(queue_us_);
  }
  void OnQueueDepth(int64_t) override {}
  const BatchStats& stats() const { return stats_; }

 private:
  BatchStats stats_;
  std::vector<int64_t> queue_us_;
};

class BatchSchedulerTest : public ::testing::Test {
 protected:
  void Make(Batcher::Options options, FakeBackend::Options backend_options = {}) {
    batcher_.reset();  // answers what a previous Make left queued, with its backend alive
    backend_options.clock = &clock_;
    if (backend_options.call_us == 0) backend_options.call_us = 7;
    backend_ = std::make_unique<FakeBackend>(backend_options);
    options.num_workers = 0;  // the test runs each worker turn with Step()
    auto b = Batcher::Create(options, backend_.get(), &last_batch_, &clock_);
    ASSERT_TRUE(b.ok()) << b.status();
    batcher_ = std::move(*b);
  }

  // Where a request's `done` writes. Owned by the fixture and declared before batcher_:
  // the Batcher's destructor answers whatever a test left queued, after the test body's
  // locals are gone.
  Answer& NewAnswer() { return answers_.emplace_back(); }
  std::vector<Answer*> NewAnswers(size_t n) {
    std::vector<Answer*> out;
    for (size_t i = 0; i < n; ++i) out.push_back(&NewAnswer());
    return out;
  }

  // One worker turn at the clock's current time.
  Batcher::StepResult Step() {
    auto step = batcher_->Step();
    EXPECT_TRUE(step.ok()) << step.status();
    return step.ok() ? *step : Batcher::StepResult();
  }
  // Turns until one sends nothing; returns the number of batches sent.
  int RunUntilIdle() {
    int sent = 0;
    while (Step().action == Action::kSend) ++sent;
    return sent;
  }
  const BatchStats& last_batch() const { return last_batch_.stats(); }

  FakeClock clock_;
  LastBatch last_batch_;
  std::deque<Answer> answers_;
  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<Batcher> batcher_;
};

TEST_F(BatchSchedulerTest, SplitsAnOversizedRequestAndKeepsRowOrder) {
  Batcher::Options o;
  o.max_batch_size = 32;
  Make(o);
  std::vector<TokenIds> seqs;
  for (int i = 0; i < 100; ++i) seqs.push_back(Seq(1, i, 3 + i % 5));
  Answer &a = NewAnswer();
  const int64_t enqueue = clock_.NowMicros();
  ASSERT_TRUE(batcher_->Submit(Request(seqs, &a)).ok());
  clock_.Advance(5);
  EXPECT_EQ(RunUntilIdle(), 4);
  EXPECT_THAT(backend_->batch_sizes(), ElementsAre(32, 32, 32, 4));
  ExpectRows(a, seqs, 4);
  EXPECT_EQ(a.timings.num_batches, 4);
  EXPECT_EQ(a.timings.inference_us, 4 * 7);  // each fake call advances the clock 7 us
  // Enqueue -> start of the last batch: 5 us of waiting plus three 7 us calls before it.
  EXPECT_EQ(a.timings.queue_us, clock_.NowMicros() - 7 - enqueue);
  EXPECT_EQ(a.timings.queue_us, 5 + 3 * 7);
  EXPECT_EQ(batcher_->LiveRequests(), 0);
}

TEST_F(BatchSchedulerTest, BatchesSeveralRequestsTogetherAndAnswersEachWithItsRows) {
  Make(Batcher::Options());
  std::vector<std::vector<TokenIds>> seqs(5);
  std::vector<Answer*> answers = NewAnswers(5);
  for (int r = 0; r < 5; ++r) {
    for (int i = 0; i <= r; ++i) seqs[r].push_back(Seq(r + 1, i, 2 + (r * 3 + i) % 9));
    ASSERT_TRUE(batcher_->Submit(Request(seqs[r], answers[r])).ok());
  }
  EXPECT_EQ(batcher_->QueueDepth(), 15);
  auto step = Step();
  EXPECT_EQ(step.action, Action::kSend);
  EXPECT_EQ(step.sequences, 15);
  EXPECT_EQ(step.answered, 5);
  for (int r = 0; r < 5; ++r) ExpectRows(*answers[r], seqs[r], 4);
  EXPECT_EQ(last_batch().requests, 5);
}

TEST_F(BatchSchedulerTest, ObeysMaxQueueDelayOnTheFakeClock) {
  Batcher::Options o;
  o.max_queue_delay_us = 10;
  Make(o);
  Answer &a = NewAnswer();
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 4)}, &a)).ok());
  clock_.Advance(9);
  auto step = Step();
  EXPECT_EQ(step.action, Action::kWait);
  EXPECT_EQ(step.wait_us, 1);
  EXPECT_EQ(backend_->num_calls(), 0);
  clock_.Advance(1);
  step = Step();
  EXPECT_EQ(step.action, Action::kSend);
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(a.timings.queue_us, 10);
}

TEST_F(BatchSchedulerTest, RejectsWhenFullWithoutCallingDone) {
  Batcher::Options o;
  o.max_queue_sequences = 8;
  Make(o);
  Answer &a = NewAnswer(), &b = NewAnswer(), &c = NewAnswer();
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 3), Seq(1, 1, 3), Seq(1, 2, 3), Seq(1, 3, 3),
                                        Seq(1, 4, 3), Seq(1, 5, 3)}, &a)).ok());
  const absl::Status full =
      batcher_->Submit(Request({Seq(2, 0, 3), Seq(2, 1, 3), Seq(2, 2, 3)}, &b));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(full.message(), HasSubstr("max_queue_sequences"));
  ASSERT_TRUE(batcher_->Submit(Request({Seq(3, 0, 3), Seq(3, 1, 3)}, &c)).ok());  // exactly fits
  EXPECT_EQ(batcher_->QueueDepth(), 8);
  RunUntilIdle();
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(b.calls, 0);
  EXPECT_EQ(c.calls, 1);
  // Room again.
  Answer &d = NewAnswer();
  EXPECT_TRUE(batcher_->Submit(Request({Seq(2, 0, 3), Seq(2, 1, 3), Seq(2, 2, 3)}, &d)).ok());
}

TEST_F(BatchSchedulerTest, RejectsBadRequestsWithPreciseMessages) {
  Batcher::Options o;
  o.max_batch_tokens = 16;
  o.max_queue_sequences = 4;
  Make(o);
  Answer &a = NewAnswer();
  struct Case {
    std::vector<TokenIds> seqs;
    const char* message;
  };
  std::vector<Case> cases = {
      {{}, "no sequences"},
      {{Seq(1, 0, 3), TokenIds{}}, "sequence 1 is empty"},
      {{Seq(1, 0, 17)}, "sequence 0 has 17 tokens; batching.max_batch_tokens is 16"},
      {{Seq(1, 0, 1), Seq(1, 1, 1), Seq(1, 2, 1), Seq(1, 3, 1), Seq(1, 4, 1)},
       "request has 5 sequences"},
  };
  for (auto& c : cases) {
    const absl::Status s = batcher_->Submit(Request(c.seqs, &a));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
  }
  BatchRequest no_done;
  no_done.sequences = {Seq(1, 0, 3)};
  EXPECT_EQ(batcher_->Submit(std::move(no_done)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(batcher_->Submit(Request({Seq(1, 0, 16)}, &a)).ok());  // exactly the limit
  RunUntilIdle();
  EXPECT_EQ(a.calls, 1);
}

TEST_F(BatchSchedulerTest, RejectsARequestOverItsTokenBudget) {
  Batcher::Options o;
  o.max_request_tokens = 100;
  Make(o);
  Answer &a = NewAnswer(), &b = NewAnswer();
  const absl::Status s =
      batcher_->Submit(Request({Seq(1, 0, 40), Seq(1, 1, 40), Seq(1, 2, 21)}, &a));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("request has 101 tokens, more than "
                                     "batching.max_request_tokens (100)"));
  EXPECT_TRUE(batcher_->Submit(Request({Seq(2, 0, 50), Seq(2, 1, 50)}, &b)).ok());  // at it
  RunUntilIdle();
  EXPECT_EQ(a.calls, 0);
  EXPECT_EQ(b.calls, 1);
}

// Head of line: a one-text request that arrives while a large request
// runs is answered by the next batch, not after the large request's every batch.
TEST_F(BatchSchedulerTest, SmallRequestWaitsAtMostOneBatchOfALargeOne) {
  for (const bool count_padding : {false, true}) {
    SCOPED_TRACE(count_padding);
    Batcher::Options o;
    o.max_batch_size = 8;
    o.count_padding = count_padding;
    Make(o);
    std::vector<TokenIds> large;
    for (int i = 0; i < 64; ++i) large.push_back(Seq(1, i, 32));
    Answer &big = NewAnswer(), &small = NewAnswer();
    ASSERT_TRUE(batcher_->Submit(Request(large, &big)).ok());
    EXPECT_EQ(Step().sequences, 8);  // the large request's first batch
    // The small one arrives as that batch ends; the grouping age passes while it waits
    // for the next (the batch the large request has in flight on a real worker).
    ASSERT_TRUE(batcher_->Submit(Request({Seq(2, 0, 5)}, &small)).ok());
    clock_.Advance(o.length_bucketing_max_age_us);
    // It goes ahead of the started large request, in a batch of its own.
    EXPECT_EQ(Step().sequences, 1);
    ExpectRows(small, {Seq(2, 0, 5)}, 4);
    EXPECT_EQ(big.calls, 0);
    EXPECT_EQ(Step().sequences, 8);  // then the large request leads again
    RunUntilIdle();
    ExpectRows(big, large, 4);
    EXPECT_EQ(batcher_->LiveRequests(), 0);
  }
}

TEST_F(BatchSchedulerTest, DropsExpiredItemsBeforeBatching) {
  Make(Batcher::Options());
  Answer &late = NewAnswer(), &on_time = NewAnswer(), &no_deadline = NewAnswer();
  BatchRequest r1 = Request({Seq(1, 0, 3), Seq(1, 1, 3)}, &late);
  r1.deadline_us = clock_.NowMicros() + 10;
  BatchRequest r2 = Request({Seq(2, 0, 3)}, &on_time);
  r2.deadline_us = clock_.NowMicros() + 11;
  ASSERT_TRUE(batcher_->Submit(std::move(r1)).ok());
  ASSERT_TRUE(batcher_->Submit(std::move(r2)).ok());
  ASSERT_TRUE(batcher_->Submit(Request({Seq(3, 0, 3)}, &no_deadline)).ok());
  clock_.Advance(10);  // r1's deadline is now: passed
  RunUntilIdle();
  ASSERT_EQ(late.calls, 1);
  EXPECT_EQ(late.result->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(late.timings.num_batches, 0);
  ExpectRows(on_time, {Seq(2, 0, 3)}, 4);
  ExpectRows(no_deadline, {Seq(3, 0, 3)}, 4);
  EXPECT_THAT(backend_->batch_sizes(), ElementsAre(2));  // r1 never reached the backend
  EXPECT_EQ(batcher_->LiveRequests(), 0);
}

TEST_F(BatchSchedulerTest, ExpiredRequestDeepInTheQueueEndsWithinTheFullCheckInterval) {
  // Per batch only the requests it would hold are polled; the whole queue is checked every
  // kFullCheckIntervalUs.
  Batcher::Options o;
  o.max_batch_size = 1;
  Make(o);
  std::vector<Answer*> ahead = NewAnswers(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(batcher_->Submit(Request({Seq(i + 1, 0, 3)}, ahead[i])).ok());
  Answer &deep = NewAnswer();
  BatchRequest r = Request({Seq(9, 0, 3)}, &deep);
  r.deadline_us = clock_.NowMicros() + 100;
  ASSERT_TRUE(batcher_->Submit(std::move(r)).ok());
  EXPECT_EQ(Step().sequences, 1);  // full check at the first step; call: +7 us
  clock_.Advance(200);                       // past the deadline, within the interval
  EXPECT_EQ(Step().sequences, 1);
  EXPECT_EQ(deep.calls, 0);  // not polled yet: not in this batch
  clock_.Advance(batching_internal::BatchScheduler::kFullCheckIntervalUs);
  auto step = Step();
  EXPECT_EQ(step.sequences, 1);  // the last short one
  ASSERT_EQ(deep.calls, 1);
  EXPECT_EQ(deep.result->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(batcher_->QueueDepth(), 0);
  for (const Answer* a : ahead) EXPECT_EQ(a->calls, 1);
}

TEST_F(BatchSchedulerTest, DropsCancelledItemsBeforeBatching) {
  Make(Batcher::Options());
  Answer &cancelled = NewAnswer(), &kept = NewAnswer();
  bool cancel = false;
  BatchRequest r1 = Request({Seq(1, 0, 3)}, &cancelled);
  r1.is_cancelled = [&cancel] { return cancel; };
  ASSERT_TRUE(batcher_->Submit(std::move(r1)).ok());
  ASSERT_TRUE(batcher_->Submit(Request({Seq(2, 0, 3)}, &kept)).ok());
  cancel = true;
  RunUntilIdle();
  ASSERT_EQ(cancelled.calls, 1);
  EXPECT_EQ(cancelled.result->status().code(), absl::StatusCode::kCancelled);
  ExpectRows(kept, {Seq(2, 0, 3)}, 4);
  EXPECT_THAT(backend_->batch_sizes(), ElementsAre(1));
}

TEST_F(BatchSchedulerTest, SplitRequestWhoseDeadlinePassesBetweenBatchesEndsOnce) {
  Batcher::Options o;
  o.max_batch_size = 4;
  Make(o);
  Answer &a = NewAnswer();
  std::vector<TokenIds> seqs;
  for (int i = 0; i < 10; ++i) seqs.push_back(Seq(1, i, 3));
  BatchRequest r = Request(seqs, &a);
  r.deadline_us = clock_.NowMicros() + 10;  // the first call takes 7 us
  ASSERT_TRUE(batcher_->Submit(std::move(r)).ok());
  EXPECT_EQ(Step().sequences, 4);
  EXPECT_EQ(a.calls, 0);
  clock_.Advance(3);
  auto step = Step();
  EXPECT_NE(step.action, Action::kSend);
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(a.result->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(a.result->status().message(), HasSubstr("6 of the request's 10 sequences"));
  EXPECT_EQ(batcher_->QueueDepth(), 0);
  EXPECT_EQ(RunUntilIdle(), 0);
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(batcher_->LiveRequests(), 0);
}

TEST_F(BatchSchedulerTest, BackendFailureFailsOnlyTheRequestsInThatBatch) {
  Batcher::Options o;
  o.max_batch_size = 3;
  FakeBackend::Options bo;
  bo.fail_token = 666;
  Make(o, bo);
  Answer &bad = NewAnswer(), &same_batch = NewAnswer(), &next_batch = NewAnswer();
  TokenIds poison = {101, 666, 102};
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 3), poison}, &bad)).ok());
  ASSERT_TRUE(batcher_->Submit(Request({Seq(2, 0, 3)}, &same_batch)).ok());
  ASSERT_TRUE(batcher_->Submit(Request({Seq(3, 0, 3), Seq(3, 1, 3)}, &next_batch)).ok());
  EXPECT_EQ(RunUntilIdle(), 2);
  ASSERT_EQ(bad.calls, 1);
  EXPECT_EQ(bad.result->status().code(), absl::StatusCode::kInternal);
  ASSERT_EQ(same_batch.calls, 1);
  EXPECT_EQ(same_batch.result->status().code(), absl::StatusCode::kInternal);
  ExpectRows(next_batch, {Seq(3, 0, 3), Seq(3, 1, 3)}, 4);
}

TEST_F(BatchSchedulerTest, SplitRequestFailsOnceWhenOneOfItsBatchesFails) {
  Batcher::Options o;
  o.max_batch_size = 4;
  o.length_bucketing_max_age_us = 0;
  FakeBackend::Options bo;
  bo.fail_token = 666;
  Make(o, bo);
  Answer &a = NewAnswer(), &after = NewAnswer();
  std::vector<TokenIds> seqs;
  for (int i = 0; i < 12; ++i) seqs.push_back(Seq(1, i, 3));
  seqs[5] = {1, 666, 2};  // in the second batch
  ASSERT_TRUE(batcher_->Submit(Request(seqs, &a)).ok());
  ASSERT_TRUE(batcher_->Submit(Request({Seq(2, 0, 3)}, &after)).ok());
  EXPECT_EQ(Step().sequences, 4);  // a0..a3: the oldest request first
  EXPECT_EQ(a.calls, 0);
  EXPECT_EQ(Step().sequences, 1);  // `after` goes ahead of the started request
  ExpectRows(after, {Seq(2, 0, 3)}, 4);
  EXPECT_EQ(Step().sequences, 4);  // a4..a7: a5 fails
  ASSERT_EQ(a.calls, 1);
  EXPECT_EQ(a.result->status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(batcher_->QueueDepth(), 0);  // its last 4 dropped
  RunUntilIdle();
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(after.calls, 1);
  EXPECT_EQ(batcher_->LiveRequests(), 0);
}

TEST_F(BatchSchedulerTest, WrongShapedBackendResultIsInternal) {
  FakeBackend::Options bo;
  bo.wrong_rows = 1;
  Make(Batcher::Options(), bo);
  Answer &a = NewAnswer();
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 3)}, &a)).ok());
  RunUntilIdle();
  ASSERT_EQ(a.calls, 1);
  EXPECT_EQ(a.result->status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(a.result->status().message(), HasSubstr("expected 1 x 4"));
}

TEST_F(BatchSchedulerTest, LongRequestIsServedAmidAStreamOfShortOnes) {
  Batcher::Options o;
  o.max_batch_size = 4;
  o.length_bucketing_max_age_us = 1'000'000;
  Make(o);
  std::vector<Answer*> shorts = NewAnswers(64);
  Answer &long_answer = NewAnswer();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(batcher_->Submit(Request({Seq(10 + i, 0, 4)}, shorts[i])).ok());
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 200)}, &long_answer)).ok());
  int next = 6, steps = 0;
  while (long_answer.calls == 0) {
    ASSERT_LT(steps, 5) << "the long request starved";
    for (int k = 0; k < 4; ++k, ++next) {
      ASSERT_TRUE(batcher_->Submit(Request({Seq(10 + next, 0, 4)}, shorts[next])).ok());
    }
    Step();
    ++steps;
  }
  EXPECT_EQ(steps, 3);  // 6 short ones were ahead: 2 batches, then it leads the third
  ExpectRows(long_answer, {Seq(1, 0, 200)}, 4);
}

TEST_F(BatchSchedulerTest, GroupingCutsPaddingOnAMixedQueue) {
  // The same mixed-length queue, grouped vs FIFO: padded tokens summed over batches.
  auto padded_tokens = [this](int64_t max_age) {
    Batcher::Options o;
    o.max_batch_size = 4;
    o.length_bucketing_max_age_us = max_age;
    Make(o);
    std::vector<Answer*> answers = NewAnswers(32);
    for (int i = 0; i < 32; ++i) {
      const int32_t len = (i % 2 == 0) ? 4 + i % 3 : 100 + i % 5;
      EXPECT_TRUE(batcher_->Submit(Request({Seq(i + 1, 0, len)}, answers[i])).ok());
    }
    int64_t padded = 0, real = 0;
    while (Step().action == Action::kSend) {
      padded += last_batch().padded_tokens;
      real += last_batch().tokens;
    }
    for (const Answer* a : answers) EXPECT_EQ(a->calls, 1);
    return padded - real;
  };
  const int64_t fifo_padding = padded_tokens(0);
  const int64_t grouped_padding = padded_tokens(1'000'000);
  EXPECT_LT(grouped_padding * 10, fifo_padding) << grouped_padding << " vs " << fifo_padding;
}

TEST_F(BatchSchedulerTest, DisabledRunsEachRequestAsItsOwnBatch) {
  Batcher::Options o;
  o.enabled = false;
  o.max_batch_size = 2;
  Make(o);
  Answer &a = NewAnswer(), &b = NewAnswer();
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 3), Seq(1, 1, 3), Seq(1, 2, 3)}, &a)).ok());
  ASSERT_TRUE(batcher_->Submit(Request({Seq(2, 0, 3)}, &b)).ok());
  EXPECT_EQ(RunUntilIdle(), 2);
  EXPECT_THAT(backend_->batch_sizes(), ElementsAre(3, 1));
  ExpectRows(a, {Seq(1, 0, 3), Seq(1, 1, 3), Seq(1, 2, 3)}, 4);
}

TEST_F(BatchSchedulerTest, ShutdownFailsQueuedWithUnavailableThenRefuses) {
  Make(Batcher::Options());
  Answer &a = NewAnswer(), &b = NewAnswer();
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 3)}, &a)).ok());
  batcher_->Shutdown();
  ASSERT_EQ(a.calls, 1);
  EXPECT_EQ(a.result->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(batcher_->Submit(Request({Seq(2, 0, 3)}, &b)).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b.calls, 0);
  EXPECT_EQ(batcher_->LiveRequests(), 0);
}

TEST_F(BatchSchedulerTest, DestroyingTheBatcherAnswersWhatIsStillQueued) {
  Make(Batcher::Options());
  Answer& a = NewAnswer();
  ASSERT_TRUE(batcher_->Submit(Request({Seq(1, 0, 3), Seq(1, 1, 3)}, &a)).ok());
  EXPECT_EQ(a.calls, 0);
  batcher_.reset();
  ASSERT_EQ(a.calls, 1);
  EXPECT_EQ(a.result->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(backend_->num_calls(), 0);
}

TEST_F(BatchSchedulerTest, StepIsOnlyForABatcherWithoutWorkerThreads) {
  FakeBackend backend;
  Batcher::Options o;
  o.num_workers = 1;
  auto threaded = Batcher::Create(o, &backend, nullptr, &clock_);
  ASSERT_TRUE(threaded.ok()) << threaded.status();
  const auto step = (*threaded)->Step();
  EXPECT_EQ(step.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(step.status().message(), HasSubstr("num_workers = 0"));
}

TEST_F(BatchSchedulerTest, BatchOfNGivesTheSameRowsAsNSingleCalls) {
  Make(Batcher::Options());
  std::vector<TokenIds> seqs;
  for (int i = 0; i < 20; ++i) seqs.push_back(Seq(1, i, 1 + (i * 7) % 13));
  Answer &together = NewAnswer();
  ASSERT_TRUE(batcher_->Submit(Request(seqs, &together)).ok());
  RunUntilIdle();
  std::vector<Answer*> singles = NewAnswers(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_TRUE(batcher_->Submit(Request({seqs[i]}, singles[i])).ok());
    RunUntilIdle();
  }
  const EmbeddingMatrix& m = **together.result;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const EmbeddingMatrix& s = **singles[i]->result;
    EXPECT_EQ(std::vector<float>(m.Row(i), m.Row(i) + m.dim), std::vector<float>(s.Row(0), s.Row(0) + s.dim));
  }
}

}  // namespace
}  // namespace embedserve

namespace embedserve {
namespace {

// Random operations against the stepped batcher (fixed seeds): every accepted request
// is answered exactly once, OK answers carry exactly their own rows, every batch obeys
// max_batch_size and max_batch_tokens, nothing leaks.
TEST_F(BatchSchedulerTest, RandomOperationsKeepEveryInvariant) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    auto uniform = [&rng](int lo, int hi) {
      return std::uniform_int_distribution<int>(lo, hi)(rng);
    };
    Batcher::Options o;
    o.max_batch_size = uniform(1, 16);
    o.max_batch_tokens = uniform(64, 512);
    o.count_padding = uniform(0, 1) == 1;
    o.max_queue_delay_us = uniform(0, 1) == 1 ? uniform(1, 50) : 0;
    o.max_queue_sequences = uniform(8, 64);
    o.length_bucketing_max_age_us = uniform(0, 2) * 40;
    o.enabled = uniform(0, 5) != 0;
    FakeBackend::Options bo;
    bo.fail_token = 999'999;
    bo.call_us = uniform(1, 20);
    Make(o, bo);
    const int n = 300;
    std::vector<Answer*> answers = NewAnswers(n);
    std::vector<std::vector<TokenIds>> sent(n);
    std::vector<bool> accepted(n, false);
    std::vector<std::unique_ptr<bool>> cancel(n);
    int next = 0;
    while (next < n || batcher_->QueueDepth() > 0) {
      const int op = uniform(0, 9);
      if (op < 5 && next < n) {
        const int k = next++;
        const int seqs = uniform(1, 6);
        for (int i = 0; i < seqs; ++i) {
          TokenIds ids = Seq(k + 1, i, uniform(1, 64));
          if (uniform(0, 60) == 0) ids[ids.size() / 2] = 999'999;  // this batch will fail
          sent[k].push_back(std::move(ids));
        }
        BatchRequest r = Request(sent[k], answers[k]);
        if (uniform(0, 4) == 0) r.deadline_us = clock_.NowMicros() + uniform(0, 100);
        cancel[k] = std::make_unique<bool>(false);
        if (uniform(0, 4) == 0) r.is_cancelled = [flag = cancel[k].get()] { return *flag; };
        const absl::Status st = batcher_->Submit(std::move(r));
        accepted[k] = st.ok();
        if (!st.ok()) {
          ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
        }
      } else if (op < 6 && next > 0) {
        *cancel[uniform(0, next - 1)] = true;
      } else if (op < 7) {
        clock_.Advance(uniform(0, 30));
      } else {
        const auto step = Step();
        if (step.action == Action::kSend) {
          const BatchStats& b = last_batch();
          if (o.enabled) {
            EXPECT_LE(b.sequences, o.max_batch_size);
            EXPECT_LE(o.count_padding ? b.padded_tokens : b.tokens, o.max_batch_tokens);
          } else {
            EXPECT_EQ(b.requests, 1);
          }
        } else if (step.action == Action::kWait) {
          clock_.Advance(step.wait_us);
        }
      }
    }
    RunUntilIdle();
    for (int k = 0; k < n; ++k) {
      if (!accepted[k]) {
        EXPECT_EQ(answers[k]->calls, 0);
        continue;
      }
      ASSERT_EQ(answers[k]->calls, 1) << "request " << k;
      if (answers[k]->result->ok()) {
        ExpectRows(*answers[k], sent[k], 4);
      } else {
        const absl::StatusCode c = answers[k]->result->status().code();
        EXPECT_TRUE(c == absl::StatusCode::kDeadlineExceeded || c == absl::StatusCode::kCancelled ||
                    c == absl::StatusCode::kInternal)
            << answers[k]->result->status();
      }
    }
    EXPECT_EQ(batcher_->QueueDepth(), 0);
    EXPECT_EQ(batcher_->LiveRequests(), 0);
  }
}

}  // namespace
}  // namespace embedserve
