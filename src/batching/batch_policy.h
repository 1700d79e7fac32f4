// The batching policy: a pure function from the queue's state and the time to "send this
// batch now", "wait N us more" or "idle". The Batcher's workers only wait on a condition
// variable for as long as it says; tests call it directly with made-up times.
// Internal to the batching stage. Pure: reads its arguments only; safe from any thread
// as long as nobody mutates `queue` meanwhile.
#ifndef EMBEDSERVE_BATCHING_BATCH_POLICY_H_
#define EMBEDSERVE_BATCHING_BATCH_POLICY_H_

#include <cstdint>
#include <vector>

#include "batching/batch_queue.h"
#include "embedserve/batching/batcher.h"

namespace embedserve {
namespace batching_internal {

struct BatchDecision {
  using Action = BatchAction;  // batcher.h; kSend: take `items` now
  Action action = Action::kIdle;
  int64_t wait_us = 0;  // kWait only; >= 1
  // The batch the policy would send now (also filled for kWait), in the order given to
  // the backend: the oldest item first.
  std::vector<BatchQueue::ItemId> items;
  int64_t tokens = 0;   // sum of the items' lengths
  int64_t longest = 0;  // longest item
  // A limit (max_batch_size or max_batch_tokens) left queued items out.
  bool full = false;
  // A newcomers' batch (below) goes ahead of this run; whoever takes the batch marks it
  // (BatchQueue::MarkPassedOver). kNone otherwise.
  BatchQueue::RunId passed_over = BatchQueue::kNone;
  // DecideExpressBatch only: it passed a request the lane does not take (started, or
  // too large), i.e. the queue holds work for the workers beside the lane's batch.
  bool passed_bulk = false;

  // Implementation details below: scratch reused from decision to decision.
  std::vector<BatchQueue::ItemId> cursors;  // per request in the batch: its first item
};

// Decides what a free worker does now. With options.enabled:
//  - newcomers first, once: when the oldest item's request has had items in a batch
//    already and was not passed over since, the requests that have had none (up to
//    max_batch_size runs looked at) form this batch instead, the oldest of them
//    leading, the others (fewest items first) once past length_bucketing_max_age_us
//    while grouping; the started request is `passed_over` and leads the next batch.
//    Else:
//  - the batch always holds the oldest item, and the rest of its request (unless that is
//    within length_bucketing_max_age_us while grouping); then the requests whose items
//    are older than length_bucketing_max_age_us (every request without count_padding,
//    or with a max age of 0), those with the fewest items queued first (ties: oldest
//    first), each whole as far as it fits; then items picked by similarity of length
//    (least added padding first). Items are added while the batch stays within
//    max_batch_size and max_batch_tokens (longest*count if count_padding, else the
//    sum); the filling stops at the first item that does not fit.
//  - send when the batch is full (queued items were left out by a limit), when the
//    oldest item has waited >= max_queue_delay_us, or when `flush` (shutting down);
//    else wait until the oldest item's delay is up.
// With !options.enabled: send the oldest item's whole request, alone.
// Does not allocate once decision->items and ->cursors have grown to max_batch_size.
void DecideBatch(const Batcher::Options& options, const BatchQueue& queue, int64_t now_us,
                 bool flush, BatchDecision* decision);

// The express lane's batch (Options::express_max_tokens): the requests that have had no
// batch and hold at most express_max_tokens tokens and max_batch_size sequences, whole,
// oldest first, while the batch
// stays within max_batch_size and express_max_tokens (longest*count if count_padding,
// else the sum); a request that does not fit ends the filling. Looks at the
// kExpressRunsLooked oldest requests at most (O(that) under the lock). kSend when the
// batch holds any, else kIdle; never marks anything passed over.
constexpr int32_t kExpressRunsLooked = 256;
// Whether a request of `count` sequences, `tokens` in all and the longest `longest`, is
// one the express lane takes: express_max_tokens > 0, count <= max_batch_size and its
// tokens (longest*count if count_padding, else the sum) <= express_max_tokens.
bool FitsExpressLane(const Batcher::Options& options, int64_t count, int64_t tokens,
                     int64_t longest);
void DecideExpressBatch(const Batcher::Options& options, const BatchQueue& queue,
                        BatchDecision* decision);

}  // namespace batching_internal
}  // namespace embedserve

#endif  // EMBEDSERVE_BATCHING_BATCH_POLICY_H_
