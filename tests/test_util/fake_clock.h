// Test double for embedserve::Clock: time moves only when a test says so, so batching
// tests step through delays and deadlines without sleeping.
// Thread-safe: NowMicros/Advance/Set may be called from any thread.
#ifndef EMBEDSERVE_TESTS_TEST_UTIL_FAKE_CLOCK_H_
#define EMBEDSERVE_TESTS_TEST_UTIL_FAKE_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "embedserve/batching/clock.h"

namespace embedserve {
namespace testing {

class FakeClock : public Clock {
 public:
  // Starts well away from 0 so "deadline 0 = none" is never a real time.
  explicit FakeClock(int64_t start_us = 1'000'000) : now_us_(start_us) {}
  int64_t NowMicros() const override { return now_us_.load(std::memory_order_acquire); }
  void Advance(int64_t us) { now_us_.fetch_add(us, std::memory_order_acq_rel); }
  void Set(int64_t us) { now_us_.store(us, std::memory_order_release); }

 private:
  std::atomic<int64_t> now_us_;
};

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_TEST_UTIL_FAKE_CLOCK_H_
