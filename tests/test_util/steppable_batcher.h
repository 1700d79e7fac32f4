// A thread-free batcher for tests: the same scheduler and policy the Batcher runs, but a
// test calls Step() to run one worker turn inline (drop expired/cancelled, decide, and on
// "send" run the batch through the backend and answer what it completes), with time
// taken from a FakeClock. Every `done` runs inside Submit/Step/Shutdown on the caller's
// thread. Not thread-safe: use from one thread.
#ifndef EMBEDSERVE_TESTS_TEST_UTIL_STEPPABLE_BATCHER_H_
#define EMBEDSERVE_TESTS_TEST_UTIL_STEPPABLE_BATCHER_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "batching/batch_scheduler.h"
#include "embedserve/batching/batcher.h"
#include "embedserve/model/backend.h"
#include "test_util/fake_clock.h"

namespace embedserve {
namespace testing {

class SteppableBatcher {
 public:
  struct StepResult {
    batching_internal::BatchDecision::Action action;
    int64_t wait_us = 0;     // kWait: what the policy asked for
    int32_t sequences = 0;   // kSend: the batch's size
    int32_t answered = 0;    // `done`s run during this step
  };

  // Validates `options`; `backend` and `clock` are not owned and must outlive it.
  static absl::StatusOr<std::unique_ptr<SteppableBatcher>> Create(
      const Batcher::Options& options, Backend* backend, FakeClock* clock);

  // As Batcher::Submit (UNAVAILABLE after Shutdown).
  absl::Status Submit(BatchRequest request);
  // One worker turn at the clock's current time.
  StepResult Step();
  // Steps until a step sends nothing; returns the number of batches sent.
  int RunUntilIdle();
  // Fails everything queued with UNAVAILABLE and stops accepting.
  void Shutdown();

  int32_t QueueDepth() const { return scheduler_->queued_sequences(); }
  int64_t live_requests() const { return scheduler_->live_requests(); }
  // The stats of the last batch sent (queue_us span valid until the next Step).
  const BatchStats& last_batch() const { return last_batch_; }

 private:
  SteppableBatcher(const Batcher::Options& options, Backend* backend, FakeClock* clock);

  const Batcher::Options options_;
  Backend* const backend_;
  FakeClock* const clock_;
  const int64_t dimension_;
  std::unique_ptr<batching_internal::BatchScheduler> scheduler_;
  batching_internal::BatchDecision decision_;
  batching_internal::Batch batch_;
  BatchStats last_batch_;
  bool stopped_ = false;
};

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_TEST_UTIL_STEPPABLE_BATCHER_H_
