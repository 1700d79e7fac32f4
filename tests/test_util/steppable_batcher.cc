#include "test_util/steppable_batcher.h"

#include <utility>
#include <vector>

#include "embedserve/common/status_macros.h"

namespace embedserve {
namespace testing {

using batching_internal::BatchDecision;
using batching_internal::BatchScheduler;
using batching_internal::Completion;

namespace {
int32_t RunAll(std::vector<Completion>* ready) {
  const int32_t n = static_cast<int32_t>(ready->size());
  for (Completion& c : *ready) c.done(std::move(c.result), c.timings);
  ready->clear();
  return n;
}
}  // namespace

absl::StatusOr<std::unique_ptr<SteppableBatcher>> SteppableBatcher::Create(
    const Batcher::Options& options, Backend* backend, FakeClock* clock) {
  ES_RETURN_IF_ERROR(options.Validate());
  if (backend == nullptr || clock == nullptr || backend->Info().dimension < 1) {
    return absl::InvalidArgumentError("SteppableBatcher: needs a backend (dimension >= 1) and a clock");
  }
  return std::unique_ptr<SteppableBatcher>(new SteppableBatcher(options, backend, clock));
}

SteppableBatcher::SteppableBatcher(const Batcher::Options& options, Backend* backend,
                                   FakeClock* clock)
    : options_(options),
      backend_(backend),
      clock_(clock),
      dimension_(backend->Info().dimension),
      scheduler_(std::make_unique<BatchScheduler>(options)) {}

absl::Status SteppableBatcher::Submit(BatchRequest request) {
  ES_ASSIGN_OR_RETURN(auto state, BatchScheduler::Prepare(options_, dimension_, request));
  if (stopped_) return absl::UnavailableError("batcher is shutting down; request not accepted");
  return scheduler_->Enqueue(state, clock_->NowMicros());
}

SteppableBatcher::StepResult SteppableBatcher::Step() {
  std::vector<Completion> ready;
  const int64_t now = clock_->NowMicros();
  scheduler_->DecideDroppingEnded(now, stopped_, &decision_, &ready, nullptr);
  StepResult result;
  result.action = decision_.action;
  result.wait_us = decision_.wait_us;
  if (decision_.action == BatchDecision::Action::kSend) {
    scheduler_->TakeBatch(decision_, now, &batch_);
    result.sequences = static_cast<int32_t>(batch_.size());
    last_batch_ = BatchStats();
    const absl::Status status =
        BatchScheduler::RunBackend(backend_, *clock_, dimension_, &batch_, &last_batch_);
    scheduler_->CompleteBatch(&batch_, status, last_batch_.backend_us, &ready);
  }
  result.answered = RunAll(&ready);
  std::vector<std::unique_ptr<batching_internal::RequestState>> freed;
  scheduler_->TakeFreed(&freed);
  return result;
}

int SteppableBatcher::RunUntilIdle() {
  int sent = 0;
  while (Step().action == BatchDecision::Action::kSend) ++sent;
  return sent;
}

void SteppableBatcher::Shutdown() {
  stopped_ = true;
  std::vector<Completion> ready;
  scheduler_->FailAllQueued(
      absl::UnavailableError("batcher shut down before the request's sequences were batched"),
      &ready, nullptr);
  RunAll(&ready);
  std::vector<std::unique_ptr<batching_internal::RequestState>> freed;
  scheduler_->TakeFreed(&freed);
}

}  // namespace testing
}  // namespace embedserve
