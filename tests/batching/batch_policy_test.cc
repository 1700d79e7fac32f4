// The batching policy as a pure function: a queue built by hand, made-up times, no
// threads and no sleeps.
#include "batching/batch_policy.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "batching/batch_queue.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace batching_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;
using Action = BatchDecision::Action;

constexpr int64_t kT0 = 1'000'000;

// An opaque owner per request; the policy only compares them.
RequestState* Owner(uintptr_t k) { return reinterpret_cast<RequestState*>(k); }

Batcher::Options Fifo() {
  Batcher::Options o;
  o.length_bucketing_max_age_us = 0;
  return o;
}

// Lengths of the decided items, in batch order.
std::vector<int32_t> Lengths(const BatchQueue& q, const BatchDecision& d) {
  std::vector<int32_t> out;
  for (auto id : d.items) out.push_back(q.item(id).length);
  return out;
}

std::vector<int32_t> Rows(const BatchQueue& q, const BatchDecision& d) {
  std::vector<int32_t> out;
  for (auto id : d.items) out.push_back(q.item(id).row);
  return out;
}

void PushAll(BatchQueue* q, const std::vector<int32_t>& lengths, int64_t at_us, uintptr_t owner = 1) {
  for (size_t i = 0; i < lengths.size(); ++i) {
    q->Push(Owner(owner), static_cast<int32_t>(i), lengths[i], at_us);
  }
}

TEST(BatchPolicyTest, IdleWhenQueueIsEmpty) {
  BatchQueue q(16);
  BatchDecision d;
  DecideBatch(Batcher::Options(), q, kT0, false, &d);
  EXPECT_EQ(d.action, Action::kIdle);
  EXPECT_TRUE(d.items.empty());
}

TEST(BatchPolicyTest, DispatchesAtOnceWhenIdleWithZeroDelay) {
  BatchQueue q(16);
  q.Push(Owner(1), 0, 7, kT0);
  BatchDecision d;
  DecideBatch(Batcher::Options(), q, kT0, false, &d);  // same microsecond as the enqueue
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(7));
  EXPECT_FALSE(d.full);
}

TEST(BatchPolicyTest, ObeysMaxBatchSize) {
  for (int32_t max_size : {1, 3, 4, 10}) {
    SCOPED_TRACE(max_size);
    BatchQueue q(16);
    PushAll(&q, std::vector<int32_t>(10, 5), kT0);
    Batcher::Options o;
    o.max_batch_size = max_size;
    BatchDecision d;
    DecideBatch(o, q, kT0, false, &d);
    EXPECT_EQ(d.action, Action::kSend);
    ASSERT_EQ(static_cast<int32_t>(d.items.size()), max_size);
    // Same lengths: the oldest ones, oldest first.
    for (int32_t i = 0; i < max_size; ++i) EXPECT_EQ(q.item(d.items[i]).row, i);
    EXPECT_EQ(d.full, max_size < 10);
  }
}

TEST(BatchPolicyTest, ObeysMaxBatchTokensCountingPadding) {
  BatchQueue q(16);
  PushAll(&q, {30, 10, 10, 10, 50}, kT0);
  Batcher::Options o = Fifo();
  o.max_batch_tokens = 100;
  o.count_padding = true;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  // 30 x 3 = 90 fits; a fourth would cost 30 x 4 = 120.
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(30, 10, 10));
  EXPECT_EQ(d.longest, 30);
  EXPECT_EQ(d.tokens, 50);
  EXPECT_TRUE(d.full);
}

TEST(BatchPolicyTest, ObeysMaxBatchTokensCountingSum) {
  BatchQueue q(16);
  PushAll(&q, {30, 10, 10, 10, 50}, kT0);
  Batcher::Options o = Fifo();
  o.max_batch_tokens = 100;
  o.count_padding = false;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  // 30 + 10 + 10 + 10 = 60 fits; adding 50 would make 110.
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(30, 10, 10, 10));
  EXPECT_TRUE(d.full);
}

TEST(BatchPolicyTest, BatchExactlyAtTokenLimitIsAllowed) {
  BatchQueue q(16);
  PushAll(&q, {25, 25, 25, 25}, kT0);
  Batcher::Options o = Fifo();
  o.max_batch_tokens = 100;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_EQ(d.items.size(), 4u);
  EXPECT_FALSE(d.full);
}

TEST(BatchPolicyTest, ObeysMaxQueueDelay) {
  BatchQueue q(16);
  Batcher::Options o;
  o.max_queue_delay_us = 10;
  q.Push(Owner(1), 0, 5, kT0);
  q.Push(Owner(2), 0, 5, kT0 + 4);
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_EQ(d.action, Action::kWait);
  EXPECT_EQ(d.wait_us, 10);
  DecideBatch(o, q, kT0 + 9, false, &d);  // one microsecond early: nothing
  EXPECT_EQ(d.action, Action::kWait);
  EXPECT_EQ(d.wait_us, 1);
  DecideBatch(o, q, kT0 + 10, false, &d);  // on time: the batch, both items
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_EQ(d.items.size(), 2u);
}

TEST(BatchPolicyTest, FullBatchGoesBeforeTheDelay) {
  BatchQueue q(16);
  Batcher::Options o;
  o.max_queue_delay_us = 1'000'000;
  o.max_batch_size = 4;
  PushAll(&q, {5, 5, 5}, kT0);
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_EQ(d.action, Action::kWait);  // 3 < 4: may still fill
  q.Push(Owner(2), 0, 5, kT0 + 1);
  DecideBatch(o, q, kT0 + 1, false, &d);
  EXPECT_EQ(d.action, Action::kWait);  // exactly 4 and nothing left out: not "full" yet
  q.Push(Owner(3), 0, 5, kT0 + 2);
  DecideBatch(o, q, kT0 + 2, false, &d);
  EXPECT_EQ(d.action, Action::kSend);  // adding the next would pass max_batch_size
  EXPECT_EQ(d.items.size(), 4u);
  EXPECT_TRUE(d.full);
}

TEST(BatchPolicyTest, TokenLimitFillsBatchBeforeTheDelay) {
  BatchQueue q(16);
  Batcher::Options o;
  o.max_queue_delay_us = 1'000'000;
  o.max_batch_tokens = 64;
  PushAll(&q, {32, 32}, kT0);
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_EQ(d.action, Action::kWait);
  q.Push(Owner(2), 0, 1, kT0 + 1);  // 32 x 3 = 96 > 64
  DecideBatch(o, q, kT0 + 1, false, &d);
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(32, 32));
}

TEST(BatchPolicyTest, FlushIgnoresTheDelay) {
  BatchQueue q(16);
  Batcher::Options o;
  o.max_queue_delay_us = 1'000'000;
  q.Push(Owner(1), 0, 5, kT0);
  BatchDecision d;
  DecideBatch(o, q, kT0, /*flush=*/true, &d);
  EXPECT_EQ(d.action, Action::kSend);
}

TEST(BatchPolicyTest, SplitsAnOversizedRequest) {
  BatchQueue q(128);
  PushAll(&q, std::vector<int32_t>(100, 8), kT0);  // one request of 100
  Batcher::Options o;
  o.max_batch_size = 32;
  BatchDecision d;
  std::vector<size_t> sizes;
  while (!q.empty()) {
    DecideBatch(o, q, kT0, false, &d);
    ASSERT_EQ(d.action, Action::kSend);
    sizes.push_back(d.items.size());
    for (auto id : d.items) q.Remove(id);
  }
  EXPECT_THAT(sizes, ElementsAre(32, 32, 32, 4));
}

TEST(BatchPolicyTest, GroupsSimilarLengths) {
  BatchQueue q(16);
  PushAll(&q, {10, 100, 12, 98, 11, 99}, kT0);
  Batcher::Options o;
  o.max_batch_size = 3;
  o.length_bucketing_max_age_us = 1000;
  BatchDecision d;
  DecideBatch(o, q, kT0 + 10, false, &d);
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), UnorderedElementsAre(10, 12, 11));
  EXPECT_EQ(q.item(d.items[0]).length, 10);  // the oldest leads
  EXPECT_EQ(d.longest * 3 - d.tokens, 3);   // padding: 2 + 0 + 1
  for (auto id : d.items) q.Remove(id);
  DecideBatch(o, q, kT0 + 10, false, &d);
  EXPECT_THAT(Lengths(q, d), UnorderedElementsAre(100, 98, 99));

  // The same queue in plain FIFO order pads far more.
  BatchQueue fifo_q(16);
  PushAll(&fifo_q, {10, 100, 12, 98, 11, 99}, kT0);
  Batcher::Options fifo = Fifo();
  fifo.max_batch_size = 3;
  DecideBatch(fifo, fifo_q, kT0 + 10, false, &d);
  EXPECT_THAT(Lengths(fifo_q, d), ElementsAre(10, 100, 12));
  EXPECT_EQ(d.longest * 3 - d.tokens, 178);
}

TEST(BatchPolicyTest, GroupingPrefersTheLeastAddedPadding) {
  BatchQueue q(16);
  // head 40; candidates: 8 (wastes 32), 41 (raises 1 x 1), 44 (raises 4 x 2 after 41).
  PushAll(&q, {40, 8, 41, 44}, kT0);
  Batcher::Options o;
  o.max_batch_size = 3;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(40, 41, 44));
}

TEST(BatchPolicyTest, GroupingStaysWithinTheTokenBudget) {
  BatchQueue q(16);
  PushAll(&q, {10, 48, 50, 9}, kT0);
  Batcher::Options o;
  o.max_batch_tokens = 100;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  // 10 and 9 (10 x 2 = 20); 48 would cost 48 x 3 = 144.
  EXPECT_THAT(Lengths(q, d), ElementsAre(10, 9));
  EXPECT_LE(d.longest * static_cast<int64_t>(d.items.size()), o.max_batch_tokens);
  EXPECT_TRUE(d.full);
}

TEST(BatchPolicyTest, WithoutPaddingGroupingIsPlainFifo) {
  BatchQueue q(16);
  PushAll(&q, {10, 100, 12, 98}, kT0);
  Batcher::Options o;
  o.count_padding = false;
  o.max_batch_size = 2;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(10, 100));
}

TEST(BatchPolicyTest, OverdueItemsGoFirstWhateverTheirLength) {
  BatchQueue q(16);
  Batcher::Options o;
  o.max_batch_size = 2;
  o.length_bucketing_max_age_us = 50;
  q.Push(Owner(1), 0, 10, kT0);
  q.Push(Owner(2), 0, 100, kT0);
  q.Push(Owner(3), 0, 10, kT0 + 20);
  q.Push(Owner(3), 1, 10, kT0 + 20);
  BatchDecision d;
  DecideBatch(o, q, kT0 + 49, false, &d);  // 100 is not overdue yet: a similar one wins
  EXPECT_THAT(Lengths(q, d), ElementsAre(10, 10));
  DecideBatch(o, q, kT0 + 50, false, &d);  // now it is: it goes right after the oldest
  EXPECT_THAT(Lengths(q, d), ElementsAre(10, 100));
}

TEST(BatchPolicyTest, NeverStarvesAnOldItem) {
  // A long item among a steady stream of short ones: the stream alone would always fill
  // the batch with short items; the oldest-first rule must serve the long one.
  BatchQueue q(256);
  Batcher::Options o;
  o.max_batch_size = 4;
  o.length_bucketing_max_age_us = 1'000'000;  // grouping never ages out here
  int64_t now = kT0;
  for (int i = 0; i < 8; ++i) q.Push(Owner(1), i, 5, now);
  const auto long_id = q.Push(Owner(2), 0, 300, now);
  BatchDecision d;
  int batches = 0;
  bool served = false;
  while (!served) {
    ASSERT_LT(batches, 10) << "the long item starved";
    for (int i = 0; i < 4; ++i) q.Push(Owner(3), i, 5, now);  // 4 new short ones per batch
    DecideBatch(o, q, now, false, &d);
    ASSERT_EQ(d.action, Action::kSend);
    served = std::find(d.items.begin(), d.items.end(), long_id) != d.items.end();
    for (auto id : d.items) q.Remove(id);
    ++batches;
    ++now;
  }
  // The first batch takes 4 of the 8 short ones ahead of it; their request has then
  // started, so the second is the newcomers' (batch_policy.h), which it leads as the
  // oldest of them. (Without that rule, the oldest-first rule would serve it third.)
  EXPECT_EQ(batches, 2);
}

TEST(BatchPolicyTest, OldestRequestFirstThenTheFewestItems) {
  // Three requests (3, 2 and 1 items) in plain FIFO mode: the oldest whole, then the one
  // with the fewest items.
  BatchQueue q(16);
  PushAll(&q, {5, 5, 5}, kT0, /*owner=*/1);
  PushAll(&q, {6, 6}, kT0, /*owner=*/2);
  PushAll(&q, {7}, kT0, /*owner=*/3);
  Batcher::Options o = Fifo();
  o.max_batch_size = 4;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(5, 5, 5, 7));
  EXPECT_THAT(Rows(q, d), ElementsAre(0, 1, 2, 0));
  EXPECT_TRUE(d.full);
  for (auto id : d.items) q.Remove(id);
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(6, 6));
  EXPECT_THAT(Rows(q, d), ElementsAre(0, 1));
  EXPECT_FALSE(d.full);
}

// Head of line: a small request queued behind a large one waits for one batch of it
// and then runs on its own, in every counting mode; when grouping, once it has waited
// length_bucketing_max_age_us.
TEST(BatchPolicyTest, SmallRequestBehindALargeOneWaitsForOneBatchOfIt) {
  struct Mode {
    bool count_padding;
    int64_t max_age_us;
    int64_t now_us;
  };
  for (const Mode& m : {Mode{false, 10'000, kT0}, Mode{true, 0, kT0}, Mode{true, 10'000, kT0 + 10'001}}) {
    SCOPED_TRACE(testing::Message() << m.count_padding << " " << m.max_age_us);
    BatchQueue q(512);
    PushAll(&q, std::vector<int32_t>(256, 64), kT0, /*owner=*/1);  // 256 texts x 64 tokens
    q.Push(Owner(2), 0, 8, kT0 + 1);
    q.Push(Owner(2), 1, 9, kT0 + 1);
    Batcher::Options o;
    o.count_padding = m.count_padding;
    o.length_bucketing_max_age_us = m.max_age_us;
    o.max_batch_size = 32;
    o.max_batch_tokens = 32 * 64;
    BatchDecision d;
    DecideBatch(o, q, m.now_us, false, &d);
    ASSERT_EQ(d.action, Action::kSend);
    ASSERT_EQ(static_cast<int>(d.items.size()), 32);
    for (auto id : d.items) EXPECT_EQ(q.item(id).request, Owner(1));
    for (auto id : d.items) q.Remove(id);
    DecideBatch(o, q, m.now_us, false, &d);
    ASSERT_EQ(d.action, Action::kSend);
    EXPECT_THAT(Lengths(q, d), ElementsAre(8, 9));
    EXPECT_EQ(d.passed_over, q.OldestRun());
  }
}

// Item 4 of the hostile-client issue: once a large request has had a batch, a small
// request queued behind it runs in a batch of its own (not padded to the large one's
// length) right after the batch in flight; the large one leads the batch after that, so
// newcomers cannot starve it either.
TEST(BatchPolicyTest, NewcomersGoAheadOfAStartedRequestOnce) {
  BatchQueue q(512);
  PushAll(&q, std::vector<int32_t>(100, 256), kT0, /*owner=*/1);  // 100 texts x 256 tokens
  Batcher::Options o;
  o.count_padding = true;
  o.length_bucketing_max_age_us = 10'000;
  o.max_batch_size = 64;
  o.max_batch_tokens = 8192;
  BatchDecision d;
  DecideBatch(o, q, kT0 + 20'000, false, &d);
  ASSERT_EQ(d.action, Action::kSend);
  EXPECT_EQ(static_cast<int>(d.items.size()), 32);  // 32 x 256 = the token budget
  EXPECT_EQ(d.passed_over, BatchQueue::kNone);
  for (auto id : d.items) q.Remove(id);  // the large request has started
  const BatchQueue::RunId large = q.OldestRun();
  EXPECT_TRUE(q.run(large).started);

  // A one-pair call arrives while that batch runs; the worker frees 30 ms later.
  q.Push(Owner(2), 0, 14, kT0 + 25'000);
  q.Push(Owner(2), 1, 15, kT0 + 25'000);
  DecideBatch(o, q, kT0 + 55'000, false, &d);
  ASSERT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(14, 15));
  EXPECT_EQ(d.longest, 15);
  EXPECT_EQ(d.passed_over, large);
  for (auto id : d.items) q.Remove(id);
  q.MarkPassedOver(large);

  // Another newcomer is queued (not yet past the grouping age, so it does not take
  // turns), but the large request was passed over: it leads now.
  q.Push(Owner(3), 0, 12, kT0 + 70'000);
  DecideBatch(o, q, kT0 + 75'000, false, &d);
  ASSERT_EQ(d.action, Action::kSend);
  EXPECT_EQ(d.passed_over, BatchQueue::kNone);
  EXPECT_EQ(static_cast<int>(d.items.size()), 32);
  for (auto id : d.items) EXPECT_EQ(q.item(id).request, Owner(1));
  for (auto id : d.items) q.Remove(id);
  EXPECT_FALSE(q.run(large).passed_over);  // taken again: newcomers may pass it once more

  DecideBatch(o, q, kT0 + 80'000, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(12));
  EXPECT_EQ(d.passed_over, large);
}

// The batch that goes ahead holds only requests that have had no batch: the oldest of
// them first, then the fewest items first; a request that has started waits even when
// it is not the oldest.
TEST(BatchPolicyTest, NewcomersGoAheadOldestFirstThenFewestItems) {
  BatchQueue q(64);
  PushAll(&q, {8, 8, 8, 8, 8}, kT0, /*owner=*/1);
  PushAll(&q, {9, 9, 9}, kT0, /*owner=*/2);
  Batcher::Options o = Fifo();
  o.max_batch_size = 4;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(8, 8, 8, 8));
  for (auto id : d.items) q.Remove(id);  // request 1 has started, request 2 has not
  PushAll(&q, {5, 5}, kT0 + 1, /*owner=*/3);
  PushAll(&q, {6}, kT0 + 1, /*owner=*/4);
  DecideBatch(o, q, kT0 + 1, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(9, 9, 9, 6));
  EXPECT_EQ(d.passed_over, q.OldestRun());
  EXPECT_TRUE(d.full);  // items were left out: send at once
}

TEST(BatchPolicyTest, FillingStopsAtTheFirstItemThatDoesNotFit) {
  // Request 2's item does not fit after request 1's: the batch is sent as it is
  // (request 3's, as small as request 2 but younger, does not overtake it).
  BatchQueue q(16);
  PushAll(&q, {40}, kT0, /*owner=*/1);
  PushAll(&q, {70}, kT0, /*owner=*/2);
  PushAll(&q, {10}, kT0, /*owner=*/3);
  Batcher::Options o = Fifo();
  o.count_padding = false;
  o.max_batch_tokens = 100;
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(40));
  EXPECT_TRUE(d.full);
}

TEST(BatchPolicyTest, QueueKeepsOneRunPerRequestAcrossRemovals) {
  BatchQueue q(16);
  PushAll(&q, {1, 2, 3}, kT0, /*owner=*/1);
  PushAll(&q, {4}, kT0, /*owner=*/2);
  PushAll(&q, {5, 6}, kT0, /*owner=*/1);  // a later request of the same owner: its own run
  ASSERT_EQ(q.num_runs(), 3);
  const auto r0 = q.OldestRun();
  EXPECT_EQ(q.run(r0).count, 3);
  const auto second = q.Next(q.run(r0).first);
  q.Remove(q.run(r0).first);
  EXPECT_EQ(q.run(r0).first, second);
  EXPECT_EQ(q.run(r0).count, 2);
  const auto r1 = q.NextRun(r0);
  q.Remove(q.run(r1).first);  // request 2 leaves: two runs remain
  EXPECT_EQ(q.num_runs(), 2);
  ASSERT_NE(q.NextRun(r0), BatchQueue::kNone);
  EXPECT_EQ(q.run(q.NextRun(r0)).count, 2);
  while (!q.empty()) q.Remove(q.Oldest());
  EXPECT_EQ(q.num_runs(), 0);
  EXPECT_EQ(q.OldestRun(), BatchQueue::kNone);
}

TEST(BatchPolicyTest, DisabledSendsEachRequestAloneAndWhole) {
  BatchQueue q(16);
  PushAll(&q, {5, 6, 7}, kT0, /*owner=*/1);
  PushAll(&q, {8, 9}, kT0, /*owner=*/2);
  Batcher::Options o;
  o.enabled = false;
  o.max_batch_size = 2;          // ignored: the baseline never splits a request
  o.max_queue_delay_us = 1000;   // ignored: sent at once
  BatchDecision d;
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(5, 6, 7));
  EXPECT_THAT(Rows(q, d), ElementsAre(0, 1, 2));
  for (auto id : d.items) q.Remove(id);
  DecideBatch(o, q, kT0, false, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(8, 9));
}

TEST(BatchPolicyTest, QueueReusesFreedSlotsWithoutGrowing) {
  BatchQueue q(4);
  for (int round = 0; round < 100; ++round) {
    std::vector<BatchQueue::ItemId> ids;
    for (int i = 0; i < 4; ++i) ids.push_back(q.Push(Owner(1), i, 1 + (round * 7 + i) % 600, kT0));
    EXPECT_EQ(q.size(), 4);
    for (auto id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 4);
    }
    for (auto id : ids) q.Remove(id);
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.Oldest(), BatchQueue::kNone);
  }
}

// The express lane's batch: whole requests of at most express_max_tokens that have had
// no batch, oldest first, within its token budget (padding counted) and max_batch_size;
// larger and started requests are left to the workers.
TEST(BatchPolicyTest, ExpressBatchHoldsSmallUnstartedRequestsOldestFirst) {
  BatchQueue q(64);
  Batcher::Options o;
  o.count_padding = true;
  o.max_batch_size = 3;
  o.express_max_tokens = 40;
  BatchDecision d;
  DecideExpressBatch(o, q, &d);
  EXPECT_EQ(d.action, Action::kIdle);
  EXPECT_FALSE(d.passed_bulk);

  PushAll(&q, {30, 30, 30}, kT0, /*owner=*/1);   // 90 tokens: not small
  PushAll(&q, {5, 5, 5, 5}, kT0, /*owner=*/2);   // 4 x 5 = 20 tokens, but 4 > 3 per batch
  DecideExpressBatch(o, q, &d);
  EXPECT_EQ(d.action, Action::kIdle);  // a request that cannot fit alone is not taken
  EXPECT_TRUE(d.passed_bulk);  // what it passed is the workers' work

  PushAll(&q, {12, 14}, kT0 + 1, /*owner=*/3);  // 2 x 14 = 28
  PushAll(&q, {6}, kT0 + 2, /*owner=*/4);       // with 3: 3 x 14 = 42 > 40: ends the filling
  PushAll(&q, {3}, kT0 + 3, /*owner=*/5);
  DecideExpressBatch(o, q, &d);
  ASSERT_EQ(d.action, Action::kSend);
  EXPECT_THAT(Lengths(q, d), ElementsAre(12, 14));
  EXPECT_EQ(d.tokens, 26);
  EXPECT_EQ(d.longest, 14);
  EXPECT_TRUE(d.full);
  EXPECT_EQ(d.passed_over, BatchQueue::kNone);

  // Counting the sum instead: 12 + 14 + 6 + 3 = 35 fits 40, but max_batch_size is 3.
  o.count_padding = false;
  DecideExpressBatch(o, q, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(12, 14, 6));
  EXPECT_TRUE(d.full);

  // A started request is the workers' even when small.
  for (auto id : d.items) {
    if (q.item(id).request == Owner(3) && q.item(id).length == 12) q.Remove(id);
  }
  DecideExpressBatch(o, q, &d);
  EXPECT_THAT(Lengths(q, d), ElementsAre(6, 3));
  EXPECT_FALSE(d.full);

  // Only small requests queued: nothing passed.
  BatchQueue small(64);
  PushAll(&small, {4}, kT0, /*owner=*/1);
  PushAll(&small, {5}, kT0, /*owner=*/2);
  DecideExpressBatch(o, small, &d);
  EXPECT_THAT(Lengths(small, d), ElementsAre(4, 5));
  EXPECT_FALSE(d.passed_bulk);
}

}  // namespace
}  // namespace batching_internal
}  // namespace embedserve
