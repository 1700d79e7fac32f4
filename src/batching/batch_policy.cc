#include "batching/batch_policy.h"

#include <algorithm>
#include <limits>

namespace embedserve {
namespace batching_internal {
namespace {

using ItemId = BatchQueue::ItemId;
constexpr ItemId kNone = BatchQueue::kNone;

// Walks the length buckets from `bucket` in one direction (step -1 or +1), skipping the
// items whose seq is below `taken_below` (already in the batch).
class BucketCursor {
 public:
  BucketCursor(const BatchQueue& queue, int32_t bucket, int32_t step, uint64_t taken_below)
      : queue_(queue), bucket_(bucket), step_(step), taken_below_(taken_below) {
    id_ = InRange() ? queue_.BucketOldest(bucket_) : kNone;
    Settle();
  }
  ItemId id() const { return id_; }
  void Advance() {
    id_ = queue_.BucketNext(id_);
    Settle();
  }
  void Stop() { id_ = kNone; bucket_ = -1; }

 private:
  bool InRange() const { return bucket_ >= 0 && bucket_ < BatchQueue::kNumBuckets; }
  // Moves to the first item not yet taken, crossing into further buckets as needed.
  void Settle() {
    while (true) {
      while (id_ != kNone && queue_.item(id_).seq < taken_below_) id_ = queue_.BucketNext(id_);
      if (id_ != kNone) return;
      bucket_ += step_;
      if (!InRange()) {
        bucket_ = -1;
        return;
      }
      id_ = queue_.BucketOldest(bucket_);
    }
  }

  const BatchQueue& queue_;
  int32_t bucket_;
  const int32_t step_;
  const uint64_t taken_below_;
  ItemId id_ = kNone;
};

// Empties `d` for a new decision (keeping its vectors' capacity).
void ClearDecision(BatchDecision* d) {
  d->items.clear();
  d->tokens = 0;
  d->longest = 0;
  d->full = false;
  d->wait_us = 0;
  d->passed_over = BatchQueue::kNone;
  d->passed_bulk = false;
}

}  // namespace

void DecideBatch(const Batcher::Options& options, const BatchQueue& queue, int64_t now_us,
                 bool flush, BatchDecision* decision) {
  BatchDecision& d = *decision;
  ClearDecision(&d);
  if (queue.empty()) {
    d.action = BatchDecision::Action::kIdle;
    return;
  }
  const ItemId head = queue.Oldest();
  auto take = [&](ItemId id) {
    const BatchQueue::Item& it = queue.item(id);
    d.items.push_back(id);
    d.tokens += it.length;
    d.longest = std::max<int64_t>(d.longest, it.length);
  };

  if (!options.enabled) {
    // The baseline: the oldest item's request alone, whole. A request's items are
    // contiguous in age order (pushed together, never partly taken in this mode).
    const RequestState* request = queue.item(head).request;
    for (ItemId id = head; id != kNone && queue.item(id).request == request; id = queue.Next(id)) {
      take(id);
    }
    d.full = static_cast<int32_t>(d.items.size()) < queue.size();
    d.action = BatchDecision::Action::kSend;
    return;
  }

  const int64_t max_size = options.max_batch_size;
  const int64_t max_tokens = options.max_batch_tokens;
  auto fits = [&](int64_t length) {
    const int64_t n = static_cast<int64_t>(d.items.size());
    if (n >= max_size) return false;
    if (options.count_padding) return std::max(d.longest, length) * (n + 1) <= max_tokens;
    return d.tokens + length <= max_tokens;
  };
  const bool group = options.count_padding && options.length_bucketing_max_age_us > 0;

  auto eligible = [&](ItemId item) {
    return !group || now_us - queue.item(item).enqueue_us >= options.length_bucketing_max_age_us;
  };
  // Fills the batch from `cursors` (each a run's first queued item): the first run, then
  // the others with the fewest items queued first (then the oldest), each giving its
  // items while `more_of(run)` lets it give more than the first. The filling stops at
  // the first item that does not fit, so nothing overtakes it.
  std::vector<ItemId>& cursors = d.cursors;
  cursors.clear();
  bool stopped = false;    // an item did not fit
  bool exhausted = false;  // every item the filling may take is taken
  auto fill = [&](auto more_of) {
    if (cursors.size() > 2) {
      std::stable_sort(cursors.begin() + 1, cursors.end(), [&](ItemId a, ItemId b) {
        return queue.run(queue.item(a).run).count < queue.run(queue.item(b).run).count;
      });
    }
    exhausted = true;
    for (const ItemId first : cursors) {
      const BatchQueue::RunId run = queue.item(first).run;
      for (ItemId id = first; id != kNone && queue.item(id).run == run; id = queue.Next(id)) {
        if (!fits(queue.item(id).length)) {
          stopped = true;
          exhausted = false;
          return;
        }
        take(id);
        if (!more_of(run)) break;
      }
    }
  };

  // 0. Newcomers go ahead of a started request, once. When the oldest item's request
  // has already had items in a batch (it is larger than a batch) and was not passed over
  // since, the requests that have had no batch yet form this one: the oldest of them
  // leads, those past the grouping age bound follow it, and the started request leads
  // the batch after. So a small request behind a large one waits for the batch in
  // flight only, in a batch of its own size rather than one padded to the large one's
  // length, and the large one still gets every other batch.
  const BatchQueue::RunId head_run = queue.item(head).run;
  const BatchQueue::Run& lead = queue.run(head_run);
  if (lead.started && !lead.passed_over) {
    int64_t visited = 0;  // at most max_batch_size runs: O(batch) under the lock
    for (BatchQueue::RunId run = queue.NextRun(head_run);
         run != BatchQueue::kNone && visited < max_size; run = queue.NextRun(run), ++visited) {
      const BatchQueue::Run& r = queue.run(run);
      if (r.started) continue;
      if (!cursors.empty() && !eligible(r.first)) break;  // runs are in age order
      cursors.push_back(r.first);
    }
  }
  if (!cursors.empty()) {
    d.passed_over = head_run;
    fill([](BatchQueue::RunId) { return true; });
  } else {
    // 1. The oldest request first: the oldest item always (it fits alone: Submit
    // checks), and its other items unless it is within the grouping age bound (then step
    // 2 picks among them by length); then the other requests, fewest items first: while
    // grouping only those past the grouping age bound (a run's items share one enqueue
    // time, and runs are in age order, so these are a prefix of the runs), else all.
    // Equal requests so run first come, first served, and a small one passes larger
    // ones queued before it.
    const bool head_run_eligible = eligible(head);
    cursors.push_back(head);
    BatchQueue::RunId run = queue.NextRun(head_run);  // ends at the first run left out
    if (head_run_eligible) {
      for (; run != BatchQueue::kNone && static_cast<int64_t>(cursors.size()) < max_size;
           run = queue.NextRun(run)) {
        if (!eligible(queue.run(run).first)) break;
        cursors.push_back(queue.run(run).first);
      }
    }
    fill([&](BatchQueue::RunId r) { return r != head_run || head_run_eligible; });
    // When exhausted, the filling took a prefix of the age list; `id` is the item after it.
    ItemId id = kNone;
    const ItemId head_next = queue.Next(head);
    if (!head_run_eligible && head_next != kNone && queue.item(head_next).run == head_run) {
      id = head_next;
    } else if (run != BatchQueue::kNone) {
      id = queue.run(run).first;
    }
    // 2. Similar lengths: from the batch's longest item's bucket, greedily add the
    // candidate that adds the least padding: a shorter one wastes (longest - length), a
    // longer one ((length - longest) * count).
    if (group && !stopped && exhausted && id != kNone) {
      const uint64_t taken_below = queue.item(id).seq;  // step 1 took a prefix of the ages
      const int32_t b0 = BatchQueue::BucketOf(static_cast<int32_t>(d.longest));
      BucketCursor lower(queue, b0, -1, taken_below);
      BucketCursor upper(queue, b0 + 1, +1, taken_below);
      constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
      while (static_cast<int64_t>(d.items.size()) < max_size) {
        const int64_t n = static_cast<int64_t>(d.items.size());
        int64_t lower_cost = kInf, upper_cost = kInf;
        int64_t lower_len = 0, upper_len = 0;
        if (lower.id() != kNone) {
          lower_len = queue.item(lower.id()).length;
          lower_cost = lower_len <= d.longest ? d.longest - lower_len : (lower_len - d.longest) * n;
        }
        if (upper.id() != kNone) {
          upper_len = queue.item(upper.id()).length;
          upper_cost = (upper_len - d.longest) * n;
        }
        if (lower_cost == kInf && upper_cost == kInf) break;
        if (lower_cost <= upper_cost) {
          if (!fits(lower_len)) {
            if (lower_len <= d.longest) break;  // nothing at all fits any more
            lower.Advance();                    // a longer one in the same bucket
            continue;
          }
          take(lower.id());
          lower.Advance();
        } else {
          if (!fits(upper_len)) {
            upper.Stop();  // longer ones would not fit either
            continue;
          }
          take(upper.id());
          upper.Advance();
        }
      }
    }
  }

  d.full = static_cast<int32_t>(d.items.size()) < queue.size();
  const int64_t waited = now_us - queue.item(head).enqueue_us;
  if (flush || d.full || waited >= options.max_queue_delay_us) {
    d.action = BatchDecision::Action::kSend;
  } else {
    d.action = BatchDecision::Action::kWait;
    d.wait_us = options.max_queue_delay_us - waited;
  }
}

bool FitsExpressLane(const Batcher::Options& options, int64_t count, int64_t tokens,
                     int64_t longest) {
  const int64_t cost = options.count_padding ? longest * count : tokens;
  return options.express_max_tokens > 0 && count <= options.max_batch_size &&
         cost <= options.express_max_tokens;
}

void DecideExpressBatch(const Batcher::Options& options, const BatchQueue& queue,
                        BatchDecision* decision) {
  BatchDecision& d = *decision;
  ClearDecision(&d);
  const int64_t max_tokens = options.express_max_tokens;
  auto cost = [&](int64_t n, int64_t tokens, int64_t longest) {
    return options.count_padding ? longest * n : tokens;
  };
  int32_t looked = 0;
  for (BatchQueue::RunId run = queue.OldestRun(); run != BatchQueue::kNone && looked < kExpressRunsLooked;
       run = queue.NextRun(run), ++looked) {
    const BatchQueue::Run& r = queue.run(run);
    if (r.started || r.count > max_tokens) {  // each item holds >= 1 token
      d.passed_bulk = true;
      continue;
    }
    // The request's size, alone and added to the batch; items of a run are contiguous.
    int64_t tokens = 0, longest = 0;
    ItemId id = r.first;
    for (int32_t i = 0; i < r.count && tokens <= max_tokens; ++i, id = queue.Next(id)) {
      const int64_t length = queue.item(id).length;
      tokens += length;
      longest = std::max(longest, length);
    }
    if (!FitsExpressLane(options, r.count, tokens, longest)) {  // the workers' work
      d.passed_bulk = true;
      continue;
    }
    const int64_t n = static_cast<int64_t>(d.items.size()) + r.count;
    if (n > options.max_batch_size ||
        cost(n, d.tokens + tokens, std::max(d.longest, longest)) > max_tokens) {
      d.full = true;
      break;
    }
    id = r.first;
    for (int32_t i = 0; i < r.count; ++i, id = queue.Next(id)) d.items.push_back(id);
    d.tokens += tokens;
    d.longest = std::max(d.longest, longest);
  }
  d.action = d.items.empty() ? BatchDecision::Action::kIdle : BatchDecision::Action::kSend;
}

}  // namespace batching_internal
}  // namespace embedserve
