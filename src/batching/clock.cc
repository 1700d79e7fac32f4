#include "embedserve/batching/clock.h"

#include <chrono>

namespace embedserve {
namespace {

class SteadyClock final : public Clock {
 public:
  int64_t NowMicros() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace

Clock* RealClock() {
  static SteadyClock* const clock = new SteadyClock();  // never destroyed
  return clock;
}

}  // namespace embedserve
