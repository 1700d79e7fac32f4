// The batcher's queue of work items (one per sequence): a fixed-capacity slab with an
// oldest-first list, per-length-bucket lists and a list of runs (consecutive items of one
// request), so the policy (batch_policy.h) can pick the oldest item, items of similar
// length and items of each request in turn without scanning or allocating.
// Internal to the batching stage. Not thread-safe: the Batcher guards it with its mutex.
#ifndef EMBEDSERVE_BATCHING_BATCH_QUEUE_H_
#define EMBEDSERVE_BATCHING_BATCH_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace embedserve {
namespace batching_internal {

struct RequestState;  // batch_scheduler.h; opaque here

class BatchQueue {
 public:
  using ItemId = int32_t;
  using RunId = int32_t;
  static constexpr ItemId kNone = -1;
  // Length buckets: [1..8], [9..16], ..., the last one holds everything longer.
  static constexpr int32_t kBucketWidth = 8;
  static constexpr int32_t kNumBuckets = 64;

  struct Item {
    RequestState* request = nullptr;  // owner (not owned)
    int32_t row = 0;                  // index of the sequence in its request
    int32_t length = 0;               // tokens
    int64_t enqueue_us = 0;
    uint64_t seq = 0;                 // push order, strictly increasing
    RunId run = kNone;                // the run it belongs to
    // Implementation details below: intrusive links.
    ItemId prev = kNone, next = kNone;                // age list
    ItemId bucket_prev = kNone, bucket_next = kNone;  // its length bucket's list
  };

  // Items pushed one after another for the same request, oldest first: the unit the
  // policy shares batches between. Its queued items are contiguous in the age list
  // (removing items never reorders the rest), `first` is the oldest of them.
  struct Run {
    RequestState* request = nullptr;
    ItemId first = kNone;
    int32_t count = 0;  // items still queued
    // Some of its items have left the queue (taken into a batch) and some remain.
    bool started = false;
    // A batch of requests that had none went ahead of it (MarkPassedOver) since its
    // items were last taken; the policy lets that happen once in a row.
    bool passed_over = false;
    // Implementation details below: intrusive links.
    RunId prev = kNone, next = kNone;
  };

  // Preallocates `capacity` items (and as many runs); Push never allocates.
  explicit BatchQueue(int32_t capacity);
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  int32_t size() const { return size_; }
  int32_t capacity() const { return static_cast<int32_t>(items_.size()); }
  bool empty() const { return size_ == 0; }

  // Appends an item (the newest); it extends the newest run when that run's request is
  // `request`. Requires size() < capacity() and length >= 1.
  ItemId Push(RequestState* request, int32_t row, int32_t length, int64_t enqueue_us);
  // Unlinks a queued item; its id may be reused by a later Push. Its run, if items
  // remain, is then `started` and no longer `passed_over`.
  void Remove(ItemId id);
  // Records that a batch went ahead of run `id` (see Run::passed_over).
  void MarkPassedOver(RunId id) { runs_[static_cast<std::size_t>(id)].passed_over = true; }

  const Item& item(ItemId id) const { return items_[static_cast<std::size_t>(id)]; }
  // Oldest first; kNone at the end.
  ItemId Oldest() const { return oldest_; }
  ItemId Next(ItemId id) const { return item(id).next; }
  // Within one bucket, oldest first.
  ItemId BucketOldest(int32_t bucket) const { return bucket_oldest_[static_cast<std::size_t>(bucket)]; }
  ItemId BucketNext(ItemId id) const { return item(id).bucket_next; }
  // Runs with queued items, oldest first; kNone at the end.
  int32_t num_runs() const { return num_runs_; }
  const Run& run(RunId id) const { return runs_[static_cast<std::size_t>(id)]; }
  RunId OldestRun() const { return oldest_run_; }
  RunId NextRun(RunId id) const { return run(id).next; }

  static int32_t BucketOf(int32_t length) {
    const int32_t b = (length - 1) / kBucketWidth;
    return b < kNumBuckets - 1 ? b : kNumBuckets - 1;
  }

 private:
  std::vector<Item> items_;
  ItemId free_ = kNone;  // free list, linked through Item::next
  ItemId oldest_ = kNone;
  ItemId newest_ = kNone;
  std::vector<ItemId> bucket_oldest_;
  std::vector<ItemId> bucket_newest_;
  int32_t size_ = 0;
  uint64_t next_seq_ = 0;
  std::vector<Run> runs_;
  RunId free_run_ = kNone;  // free list, linked through Run::next
  RunId oldest_run_ = kNone;
  RunId newest_run_ = kNone;
  int32_t num_runs_ = 0;
};

}  // namespace batching_internal
}  // namespace embedserve

#endif  // EMBEDSERVE_BATCHING_BATCH_QUEUE_H_
