// The work that callers were refused recently and still want: what tells a sustained
// overload from closed-loop callers that retry (Batcher::Options::overload_queue_wait_us).
//
// A refused request that is sent again is the same demand, not more of it. Requests are
// told apart by a key of their content (the pipeline hashes the texts), so N callers that
// each retry one request count N requests however often they retry, and a request that is
// admitted stops counting. An open-loop overload offers new requests all the time: their
// refused work adds up. Entries older than `hold_us` are dropped (callers that gave up).
//
// Thread-safe. Empty() is lock-free, so admission pays nothing while nothing is refused.
#ifndef EMBEDSERVE_BATCHING_REFUSED_DEMAND_H_
#define EMBEDSERVE_BATCHING_REFUSED_DEMAND_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "embedserve/common/mutex.h"

namespace embedserve {
namespace batching_internal {

class RefusedDemand {
 public:
  // `max_entries` bounds the memory: past it, the demand counts as unbounded (kSaturated)
  // until `hold_us` passes without a new key being turned away.
  RefusedDemand(int64_t hold_us, int32_t max_entries);

  static constexpr int64_t kSaturated = INT64_MAX / 4;

  // A request of `sequences` with content `key` was refused at `now_us`. Key 0 (content
  // unknown) counts as a new request each time.
  void Refused(uint64_t key, int64_t sequences, int64_t now_us);
  // The request with `key` was admitted: its demand is served.
  void Admitted(uint64_t key);
  // Sequences of the distinct requests refused within `hold_us` of `now_us` and not
  // admitted since (entries may outlive hold_us by up to a sixteenth of it before they
  // are swept).
  int64_t Outstanding(int64_t now_us);
  bool Empty() const { return entries_.load(std::memory_order_relaxed) == 0; }

 private:
  struct Entry {
    int64_t sequences;
    int64_t refused_us;
  };
  void SweepLocked(int64_t now_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t hold_us_;
  const int32_t max_entries_;
  Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> refused_ ABSL_GUARDED_BY(mu_);
  int64_t sum_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_sweep_us_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_anonymous_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t saturated_until_us_ ABSL_GUARDED_BY(mu_) = INT64_MIN;
  // entries_ > 0 also while saturated, so that Outstanding is asked.
  std::atomic<int32_t> entries_{0};
};

}  // namespace batching_internal
}  // namespace embedserve

#endif  // EMBEDSERVE_BATCHING_REFUSED_DEMAND_H_
