#include "batching/batch_queue.h"

#include <cassert>

namespace embedserve {
namespace batching_internal {

BatchQueue::BatchQueue(int32_t capacity)
    : items_(static_cast<std::size_t>(capacity)),
      bucket_oldest_(kNumBuckets, kNone),
      bucket_newest_(kNumBuckets, kNone),
      runs_(static_cast<std::size_t>(capacity)) {
  for (int32_t i = 0; i < capacity; ++i) {
    items_[static_cast<std::size_t>(i)].next = i + 1 < capacity ? i + 1 : kNone;
    runs_[static_cast<std::size_t>(i)].next = i + 1 < capacity ? i + 1 : kNone;
  }
  free_ = capacity > 0 ? 0 : kNone;
  free_run_ = free_;
}

BatchQueue::ItemId BatchQueue::Push(RequestState* request, int32_t row, int32_t length,
                                    int64_t enqueue_us) {
  assert(free_ != kNone && length >= 1);
  const ItemId id = free_;
  Item& it = items_[static_cast<std::size_t>(id)];
  free_ = it.next;
  it.request = request;
  it.row = row;
  it.length = length;
  it.enqueue_us = enqueue_us;
  it.seq = next_seq_++;
  // Age list: append.
  it.prev = newest_;
  it.next = kNone;
  if (newest_ != kNone) {
    items_[static_cast<std::size_t>(newest_)].next = id;
  } else {
    oldest_ = id;
  }
  newest_ = id;
  // Bucket list: append.
  const std::size_t b = static_cast<std::size_t>(BucketOf(length));
  it.bucket_prev = bucket_newest_[b];
  it.bucket_next = kNone;
  if (bucket_newest_[b] != kNone) {
    items_[static_cast<std::size_t>(bucket_newest_[b])].bucket_next = id;
  } else {
    bucket_oldest_[b] = id;
  }
  bucket_newest_[b] = id;
  // Run: extend the newest one if it is this request's, else start one.
  if (newest_run_ != kNone && runs_[static_cast<std::size_t>(newest_run_)].request == request &&
      it.prev != kNone && items_[static_cast<std::size_t>(it.prev)].run == newest_run_) {
    it.run = newest_run_;
    ++runs_[static_cast<std::size_t>(newest_run_)].count;
  } else {
    assert(free_run_ != kNone);
    const RunId r = free_run_;
    Run& run = runs_[static_cast<std::size_t>(r)];
    free_run_ = run.next;
    run.request = request;
    run.first = id;
    run.count = 1;
    run.started = false;
    run.passed_over = false;
    run.prev = newest_run_;
    run.next = kNone;
    if (newest_run_ != kNone) {
      runs_[static_cast<std::size_t>(newest_run_)].next = r;
    } else {
      oldest_run_ = r;
    }
    newest_run_ = r;
    ++num_runs_;
    it.run = r;
  }
  ++size_;
  return id;
}

void BatchQueue::Remove(ItemId id) {
  Item& it = items_[static_cast<std::size_t>(id)];
  assert(it.request != nullptr || size_ > 0);
  // Run: its items are contiguous in the age list, so a removed first is followed by
  // the run's next item (read before the age list is relinked below).
  Run& run = runs_[static_cast<std::size_t>(it.run)];
  if (--run.count > 0) {
    if (run.first == id) run.first = it.next;
    run.started = true;
    run.passed_over = false;
  } else {
    if (run.prev != kNone) {
      runs_[static_cast<std::size_t>(run.prev)].next = run.next;
    } else {
      oldest_run_ = run.next;
    }
    if (run.next != kNone) {
      runs_[static_cast<std::size_t>(run.next)].prev = run.prev;
    } else {
      newest_run_ = run.prev;
    }
    run.request = nullptr;
    run.first = kNone;
    run.prev = kNone;
    run.next = free_run_;
    free_run_ = it.run;
    --num_runs_;
  }
  it.run = kNone;
  if (it.prev != kNone) {
    items_[static_cast<std::size_t>(it.prev)].next = it.next;
  } else {
    oldest_ = it.next;
  }
  if (it.next != kNone) {
    items_[static_cast<std::size_t>(it.next)].prev = it.prev;
  } else {
    newest_ = it.prev;
  }
  const std::size_t b = static_cast<std::size_t>(BucketOf(it.length));
  if (it.bucket_prev != kNone) {
    items_[static_cast<std::size_t>(it.bucket_prev)].bucket_next = it.bucket_next;
  } else {
    bucket_oldest_[b] = it.bucket_next;
  }
  if (it.bucket_next != kNone) {
    items_[static_cast<std::size_t>(it.bucket_next)].bucket_prev = it.bucket_prev;
  } else {
    bucket_newest_[b] = it.bucket_prev;
  }
  it.request = nullptr;
  it.prev = it.bucket_prev = it.bucket_next = kNone;
  it.next = free_;
  free_ = id;
  --size_;
}

}  // namespace batching_internal
}  // namespace embedserve
