#include "refused_demand.h"

#include <algorithm>

namespace embedserve {
namespace batching_internal {

namespace {
// Keys of requests whose content is unknown: the top bit set, a counter below, so they
// never meet each other (or, but for a 2^-63 chance, a content key).
constexpr uint64_t kAnonymousBit = uint64_t{1} << 63;
}  // namespace

RefusedDemand::RefusedDemand(int64_t hold_us, int32_t max_entries)
    : hold_us_(std::max<int64_t>(1, hold_us)), max_entries_(std::max(1, max_entries)) {}

void RefusedDemand::Refused(uint64_t key, int64_t sequences, int64_t now_us) {
  MutexLock lock(&mu_);
  if (key == 0) key = kAnonymousBit | next_anonymous_++;
  SweepLocked(now_us);
  auto it = refused_.find(key);
  if (it != refused_.end()) {
    sum_ += sequences - it->second.sequences;
    it->second = {sequences, now_us};
  } else if (static_cast<int32_t>(refused_.size()) < max_entries_) {
    refused_.emplace(key, Entry{sequences, now_us});
    sum_ += sequences;
  } else {
    saturated_until_us_ = now_us + hold_us_;
  }
  PublishLocked();
}

void RefusedDemand::Admitted(uint64_t key) {
  if (key == 0 || Empty()) return;
  MutexLock lock(&mu_);
  auto it = refused_.find(key);
  if (it == refused_.end()) return;
  sum_ -= it->second.sequences;
  refused_.erase(it);
  PublishLocked();
}

int64_t RefusedDemand::Outstanding(int64_t now_us) {
  if (Empty()) return 0;
  MutexLock lock(&mu_);
  SweepLocked(now_us);
  PublishLocked();
  return now_us < saturated_until_us_ ? kSaturated : sum_;
}

void RefusedDemand::SweepLocked(int64_t now_us) {
  if (now_us >= saturated_until_us_) saturated_until_us_ = INT64_MIN;
  if (now_us < next_sweep_us_) return;
  next_sweep_us_ = now_us + hold_us_ / 16;
  for (auto it = refused_.begin(); it != refused_.end();) {
    if (now_us - it->second.refused_us >= hold_us_) {
      sum_ -= it->second.sequences;
      refused_.erase(it++);
    } else {
      ++it;
    }
  }
}

void RefusedDemand::PublishLocked() {
  const bool saturated = saturated_until_us_ != INT64_MIN;
  entries_.store(static_cast<int32_t>(refused_.size()) + (saturated ? 1 : 0),
                 std::memory_order_relaxed);
}

}  // namespace batching_internal
}  // namespace embedserve
