// The time source of the batching stage: the batcher reads "now" only through Clock, so
// tests drive it with a fake clock (tests/test_util/fake_clock.h) and no sleeps.
// Thread-safety: implementations are safe to call from any thread.
#ifndef EMBEDSERVE_BATCHING_CLOCK_H_
#define EMBEDSERVE_BATCHING_CLOCK_H_

#include <cstdint>

namespace embedserve {

class Clock {
 public:
  virtual ~Clock() = default;

  // Microseconds on a monotonic time line (never goes back); the epoch is arbitrary.
  virtual int64_t NowMicros() const = 0;
};

// std::chrono::steady_clock in microseconds. A process-wide singleton, never destroyed;
// safe from any thread.
Clock* RealClock();

}  // namespace embedserve

#endif  // EMBEDSERVE_BATCHING_CLOCK_H_
