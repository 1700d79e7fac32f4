#include "embedserve/batching/batcher.h"

#if defined(__linux__)
#include <pthread.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "batching/batch_scheduler.h"
#include "batching/refused_demand.h"
#include "embedserve/common/status_macros.h"

namespace embedserve {

using batching_internal::Batch;
using batching_internal::BatchDecision;
using batching_internal::BatchScheduler;
using batching_internal::Completion;

namespace {

absl::Status AtLeast(const char* field, int64_t value, int64_t min) {
  if (value >= min) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("batching.", field, " must be >= ", min, "; was ", value));
}

// Names the calling thread (shown by top -H, /proc/PID/task/TID/comm) so that a
// profile tells the batcher's threads from gRPC's; Linux only, at most 15 characters.
void NameThread(const char* prefix, int32_t index) {
#if defined(__linux__)
  const std::string name = absl::StrCat(prefix, index).substr(0, 15);
  pthread_setname_np(pthread_self(), name.c_str());
#else
  (void)prefix;
  (void)index;
#endif
}

int32_t RunCompletions(std::vector<Completion>* ready) {
  const int32_t n = static_cast<int32_t>(ready->size());
  for (Completion& c : *ready) c.done(std::move(c.result), c.timings);
  ready->clear();
  return n;
}

}  // namespace

// Threads that run answers handed off by the workers, in the order posted. Each part is
// one slice of one batch's answers; a thread runs a whole part.
class Batcher::CompletionPool {
 public:
  explicit CompletionPool(int32_t threads) {
    threads_.reserve(static_cast<size_t>(threads));
    for (int32_t i = 0; i < threads; ++i) {
      threads_.emplace_back([this, i] {
        NameThread("es-answer-", i);
        Loop();
      });
    }
  }
  // Runs every part already posted, then joins the threads.
  ~CompletionPool() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.NotifyAll();
    for (std::thread& t : threads_) t.join();
  }
  int32_t threads() const { return static_cast<int32_t>(threads_.size()); }

  void Post(std::vector<Completion> part) {
    {
      MutexLock lock(&mu_);
      parts_.push_back(std::move(part));
    }
    cv_.NotifyOne();
  }

 private:
  void Loop() {
    std::vector<Completion> part;
    while (true) {
      {
        MutexLock lock(&mu_);
        while (parts_.empty() && !stop_) cv_.Wait(&mu_);
        if (parts_.empty()) return;  // stopping, and nothing left to answer
        part = std::move(parts_.front());
        parts_.pop_front();
      }
      RunCompletions(&part);
    }
  }

  Mutex mu_;
  CondVar cv_;  // a part was posted, or stop_
  std::deque<std::vector<Completion>> parts_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

struct Batcher::Turn {
  Batch batch;
  BatchDecision decision;
  std::vector<Completion> ready;                               // answers to run unlocked
  std::vector<std::pair<absl::StatusCode, int32_t>> dropped;  // for the observer
  std::vector<std::unique_ptr<batching_internal::RequestState>> freed;  // freed unlocked
  bool send = false;        // took a batch
  bool exit = false;        // stopping and nothing queued: the worker ends
  int64_t depth = 0;        // queued sequences after the decision
  bool wake_other = false;  // work left for another worker
  bool wake_express = false;  // work left while every worker is busy: the express lane
  bool drained = false;     // stopping and the queue is now empty

  explicit Turn(size_t max_batch) {
    batch.owners.reserve(max_batch);
    batch.rows.reserve(max_batch);
    batch.inputs.reserve(max_batch);
    batch.queue_us.reserve(max_batch);
    decision.items.reserve(max_batch);
  }
};

absl::Status Batcher::Options::Validate() const {
  ES_RETURN_IF_ERROR(AtLeast("max_batch_size", max_batch_size, 1));
  ES_RETURN_IF_ERROR(AtLeast("max_batch_tokens", max_batch_tokens, 1));
  ES_RETURN_IF_ERROR(AtLeast("max_queue_delay_us", max_queue_delay_us, 0));
  ES_RETURN_IF_ERROR(AtLeast("max_queue_sequences", max_queue_sequences, 1));
  ES_RETURN_IF_ERROR(AtLeast("max_queue_wait_us", max_queue_wait_us, 0));
  ES_RETURN_IF_ERROR(AtLeast("overload_queue_wait_us", overload_queue_wait_us, 0));
  ES_RETURN_IF_ERROR(AtLeast("max_request_tokens", max_request_tokens, 0));
  ES_RETURN_IF_ERROR(AtLeast("workers", num_workers, 0));
  ES_RETURN_IF_ERROR(AtLeast("length_bucketing_max_age_us", length_bucketing_max_age_us, 0));
  ES_RETURN_IF_ERROR(AtLeast("idle_spin_us", idle_spin_us, 0));
  constexpr int64_t kMaxWorkers = 256;  // as the config allows
  if (num_workers > kMaxWorkers) {
    return absl::InvalidArgumentError(absl::StrCat("batching.workers must be <= ",
                                                   kMaxWorkers, "; was ", num_workers));
  }
  if (completion_threads < 0 || completion_threads > kMaxCompletionThreads) {
    return absl::InvalidArgumentError(absl::StrCat("batching.completion_threads must be in [0, ",
                                                   kMaxCompletionThreads, "]; was ",
                                                   completion_threads));
  }
  if (idle_spin_us > kMaxIdleSpinUs) {
    return absl::InvalidArgumentError(absl::StrCat("batching.idle_spin_us must be <= ",
                                                   kMaxIdleSpinUs, "; was ", idle_spin_us));
  }
  ES_RETURN_IF_ERROR(AtLeast("express_max_tokens", express_max_tokens, 0));
  if (express_max_tokens > max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batching.express_max_tokens must be <= batching.max_batch_tokens (", max_batch_tokens,
        "); was ", express_max_tokens));
  }
  if (express_max_tokens > 0 && (!enabled || num_workers < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batching.express_max_tokens needs batching on and worker threads; was ",
        express_max_tokens, " with ", enabled ? "" : "batching off and ", num_workers,
        " workers"));
  }
  if (express_cpu_threads < 0 || express_cpu_threads > kMaxWorkers) {
    return absl::InvalidArgumentError(absl::StrCat("batching.express_cpu_threads must be in [0, ",
                                                   kMaxWorkers, "]; was ", express_cpu_threads));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(const Options& options,
                                                         Backend* backend,
                                                         BatchObserver* observer,
                                                         Clock* clock) {
  ES_RETURN_IF_ERROR(options.Validate());
  if (backend == nullptr) return absl::InvalidArgumentError("Batcher::Create: backend is null");
  if (clock == nullptr) return absl::InvalidArgumentError("Batcher::Create: clock is null");
  if (backend->Info().dimension < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Batcher::Create: backend reports dimension ", backend->Info().dimension,
        "; must be >= 1"));
  }
  std::unique_ptr<Batcher> batcher(new Batcher(options, backend, observer, clock));
  if (options.num_workers > 0 && options.completion_threads > 0) {
    batcher->completions_ = std::make_unique<CompletionPool>(options.completion_threads);
  }
  batcher->workers_.reserve(static_cast<size_t>(options.num_workers));
  for (int32_t w = 0; w < options.num_workers; ++w) {
    batcher->workers_.emplace_back([b = batcher.get(), w] {
      NameThread("es-batch-", w);
      b->WorkerLoop(w);
    });
  }
  if (options.express_max_tokens > 0) {
    batcher->express_ = std::thread([b = batcher.get()] {
      NameThread("es-express", 0);
      b->ExpressLoop();
    });
  }
  return batcher;
}

Batcher::Batcher(const Options& options, Backend* backend, BatchObserver* observer, Clock* clock)
    : options_(options),
      backend_(backend),
      observer_(observer),
      clock_(clock),
      dimension_(backend->Info().dimension),
      scheduler_(std::make_unique<BatchScheduler>(options)),
      admit_limit_(options.max_queue_sequences),
      overload_limit_(options.max_queue_sequences) {
  if (HasOverloadBound()) {
    refused_ = std::make_unique<batching_internal::RefusedDemand>(Options::kOverloadHoldUs,
                                                                  kMaxRefusedRequests);
  }
}

Batcher::~Batcher() { Shutdown(); }

absl::Status Batcher::Submit(BatchRequest&& request) {
  if (request.queue_percent < 1 || request.queue_percent > 100) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BatchRequest.queue_percent must be in [1, 100]; was ", request.queue_percent));
  }
  const int32_t request_percent = request.queue_percent;
  ES_ASSIGN_OR_RETURN(std::unique_ptr<batching_internal::RequestState> state,
                      BatchScheduler::Prepare(options_, dimension_, request));
  // Only a request the lane would take wakes it (each sequence holds >= 1 token).
  const int64_t count = static_cast<int64_t>(state->sequences.size());
  bool small = false;
  if (options_.express_max_tokens > 0 && count <= options_.express_max_tokens) {
    int64_t tokens = 0, longest = 0;
    for (const TokenIds& s : state->sequences) {
      tokens += static_cast<int64_t>(s.size());
      longest = std::max(longest, static_cast<int64_t>(s.size()));
    }
    small = batching_internal::FitsExpressLane(options_, count, tokens, longest);
  }
  absl::Status status;
  bool wake = false;
  bool wake_express = false;
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      status = absl::UnavailableError("batcher is shutting down; request not accepted");
    } else if (status = CheckAdmission(scheduler_->counted_sequences(),
                                       static_cast<int64_t>(state->sequences.size()),
                                       request_percent, request.demand_key);
               status.ok()) {
      state->fits_express = small;
      status = scheduler_->Enqueue(state, clock_->NowMicros());  // releases `state` iff OK
      if (status.ok()) {
        PublishDepthLocked();
        wake = SignalWorkLocked();
        wake_express = small && ExpressMayRunLocked();
      }
    }
  }
  if (!status.ok()) {
    BatchScheduler::Unprepare(std::move(state), &request);  // the caller keeps it
    return status;
  }
  if (refused_ != nullptr) refused_->Admitted(request.demand_key);
  if (wake) work_cv_.NotifyOne();
  if (wake_express) express_cv_.NotifyOne();
  return absl::OkStatus();
}

bool Batcher::SignalWorkLocked() {
  if (spinning_workers_ > 0) {
    wake_seq_.fetch_add(1, std::memory_order_release);
    return false;
  }
  return idle_workers_ > 0;
}

bool Batcher::SpinForWork(uint64_t seen, int64_t spin_us) {
  mu_.Unlock();
  // Every 16 polls (~0.5 us) look at the time, every 64 (~2 us) yield the CPU.
  constexpr uint32_t kClockMask = 15, kYieldMask = 63;
  // Real time, not clock_: a test's fake clock may never move.
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
  bool moved = false;
  for (uint32_t i = 1;; ++i) {
    if (wake_seq_.load(std::memory_order_acquire) != seen) {
      moved = true;
      break;
    }
    CpuRelax();
    if ((i & kClockMask) != 0) continue;
    if (std::chrono::steady_clock::now() >= until) break;
    // Let a runnable thread of this CPU (the model's, an RPC handler) go first: polling
    // must not delay them by more than a couple of microseconds.
    if ((i & kYieldMask) == 0) std::this_thread::yield();
  }
  mu_.Lock();
  return moved;
}

int64_t Batcher::QueueDepth() const {
  MutexLock lock(&mu_);
  return scheduler_->queued_sequences();
}

void Batcher::PublishDepthLocked() {
  queued_hint_.store(scheduler_->queued_sequences(), std::memory_order_relaxed);
  counted_hint_.store(scheduler_->counted_sequences(), std::memory_order_relaxed);
}

absl::Status Batcher::CheckRoom(int64_t sequences, int32_t queue_percent,
                                uint64_t demand_key) const {
  const int32_t queued = queued_hint_.load(std::memory_order_relaxed);
  // More than the queue can ever hold is Submit's permanent INVALID_ARGUMENT, not this.
  if (sequences > options_.max_queue_sequences) return absl::OkStatus();
  if (sequences > int64_t{options_.max_queue_sequences} - queued) {
    return BatchScheduler::QueueFullError(queued, options_.max_queue_sequences, sequences);
  }
  return CheckAdmission(counted_hint_.load(std::memory_order_relaxed), sequences, queue_percent,
                        demand_key);
}

absl::Status Batcher::CheckAdmission(int32_t queued, int64_t needed, int32_t queue_percent,
                                     uint64_t demand_key) const {
  ES_RETURN_IF_ERROR(CheckWaitBound(queued, needed, demand_key));
  return CheckShare(queued, needed, queue_percent);
}

absl::Status Batcher::CheckShare(int32_t queued, int64_t needed, int32_t queue_percent) const {
  if (queue_percent >= 100 || queued == 0) return absl::OkStatus();
  int64_t bound = options_.max_queue_sequences;
  if (options_.max_queue_wait_us > 0) {
    bound = std::min<int64_t>(bound, WaitLimit(queued).limit);
  }
  const int64_t share = std::max<int64_t>(1, bound * queue_percent / 100);
  if (needed <= share - queued) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "batch queue is full for bulk requests: ", queued, " sequences queued, and this "
      "request may fill ", queue_percent, "% of the queue's bound of ", bound,
      " (the rest is kept for other callers); it needs ", needed, "; retry later"));
}

bool Batcher::HasOverloadBound() const {
  return options_.overload_queue_wait_us > 0 &&
         options_.overload_queue_wait_us < options_.max_queue_wait_us;
}

Batcher::TimeBound Batcher::WaitLimit(int32_t queued) const {
  const int32_t admit = admit_limit_.load(std::memory_order_relaxed);
  // The clock is read only while refused demand is outstanding: admission checks run on
  // every call's RPC thread.
  const bool overloaded =
      refused_ != nullptr && !refused_->Empty() &&
      queued + refused_->Outstanding(clock_->NowMicros()) > int64_t{admit};
  return {overloaded ? overload_limit_.load(std::memory_order_relaxed) : admit, overloaded};
}

absl::Status Batcher::CheckWaitBound(int32_t queued, int64_t needed,
                                     uint64_t demand_key) const {
  if (options_.max_queue_wait_us <= 0 || queued == 0) return absl::OkStatus();
  const auto [limit, overloaded] = WaitLimit(queued);
  if (needed <= int64_t{limit} - queued) return absl::OkStatus();
  if (refused_ != nullptr) refused_->Refused(demand_key, needed, clock_->NowMicros());
  const int64_t wait_us = overloaded ? options_.overload_queue_wait_us : options_.max_queue_wait_us;
  return absl::ResourceExhaustedError(absl::StrCat(
      "batch queue is full: ", queued, " sequences queued ahead, about ", wait_us / 1000,
      " ms of work at the recent rate (",
      overloaded ? "overloaded: with the requests refused within the last second it is "
                   "more than batching.max_queue_wait_ms, and batching.overload_queue_wait_ms"
                 : "batching.max_queue_wait_ms",
      " bounds it to ", limit, " sequences now), the request needs ", needed,
      "; retry later"));
}

void Batcher::UpdateAdmitLimitLocked(const BatchStats& batch) {
  const int32_t sequences = batch.sequences;
  const int64_t backend_us = batch.backend_us;
  if (options_.max_queue_wait_us <= 0 || sequences <= 0 || backend_us <= 0) return;
  // Only batches at least half full (in sequences or tokens) say how fast a full queue
  // drains: a lone request's batch costs more per sequence than a full one.
  if (2 * int64_t{sequences} < options_.max_batch_size &&
      2 * batch.tokens < options_.max_batch_tokens) {
    return;
  }
  recent_sequences_ = kRateDecay * recent_sequences_ + sequences;
  recent_backend_us_ = kRateDecay * recent_backend_us_ + static_cast<double>(backend_us);
  const double workers = std::max<int32_t>(1, options_.num_workers);
  const double per_us = recent_sequences_ / recent_backend_us_ * workers;
  const double floor = 1.0 * options_.max_batch_size * workers;  // a full next batch
  auto limit = [&](int64_t wait_us) {
    const double l = std::min<double>(options_.max_queue_sequences,
                                      std::max(floor, per_us * static_cast<double>(wait_us)));
    return static_cast<int32_t>(std::llround(l));
  };
  admit_limit_.store(limit(options_.max_queue_wait_us), std::memory_order_relaxed);
  overload_limit_.store(limit(options_.overload_queue_wait_us), std::memory_order_relaxed);
}

int64_t Batcher::LiveRequests() const {
  MutexLock lock(&mu_);
  return scheduler_->live_requests();
}

bool Batcher::ExpressMayRunLocked() const {
  return busy_workers_ >= options_.num_workers && bulk_in_flight_ > 0;
}

void Batcher::HandOffSmallLocked(Turn* turn, int64_t now) {
  if (options_.express_max_tokens <= 0 || express_running_ || stopping_) return;
  scheduler_->DecideExpressDroppingEnded(now, &turn->decision, &turn->ready,
                                         observer_ ? &turn->dropped : nullptr);
  // Only small requests queued, or more than the lane's batch takes but no bulk request:
  // the worker runs them itself, on all its threads.
  if (turn->decision.action != BatchAction::kSend ||
      scheduler_->queued_sequences() <= static_cast<int32_t>(turn->decision.items.size()) ||
      !turn->decision.passed_bulk) {
    return;
  }
  if (express_handoff_ == nullptr) express_handoff_ = std::make_unique<Batch>();
  scheduler_->TakeBatch(turn->decision, now, express_handoff_.get());
  express_handoff_ready_ = true;
  express_running_ = true;
  // Under the lock: the worker may go on to wait (kWait) before it ends its turn.
  express_cv_.NotifyOne();
}

void Batcher::DecideLocked(Turn* turn, int64_t now) {
  HandOffSmallLocked(turn, now);
  scheduler_->DecideDroppingEnded(now, stopping_, &turn->decision, &turn->ready,
                                  observer_ ? &turn->dropped : nullptr);
  turn->send = turn->decision.action == BatchAction::kSend;
  if (turn->send) {
    scheduler_->TakeBatch(turn->decision, now, &turn->batch);
    ++busy_workers_;
    turn->batch.holds_bulk = false;
    if (options_.express_max_tokens > 0) {
      for (const batching_internal::RequestState* owner : turn->batch.owners) {
        if (!owner->fits_express) {
          turn->batch.holds_bulk = true;
          ++bulk_in_flight_;
          break;
        }
      }
    }
  }
  turn->exit = !turn->send && stopping_ && scheduler_->queue_empty();
}

void Batcher::EndDecisionLocked(Turn* turn) {
  scheduler_->TakeFreed(&turn->freed);
  PublishDepthLocked();
  turn->depth = scheduler_->queued_sequences();
  turn->wake_other = turn->send && turn->depth > 0 && SignalWorkLocked();
  turn->wake_express = options_.express_max_tokens > 0 && turn->depth > 0 &&
                       ExpressMayRunLocked();
  turn->drained = stopping_ && turn->depth == 0;
}

int32_t Batcher::FinishTurn(int32_t worker, Turn* turn, int64_t form_us) {
  if (turn->wake_other) work_cv_.NotifyOne();
  if (turn->wake_express) express_cv_.NotifyOne();
  if (turn->drained) drained_cv_.NotifyAll();
  int32_t answered = RunCompletions(&turn->ready);
  turn->freed.clear();  // frees outside the lock
  if (observer_ != nullptr) {
    for (const auto& [code, sequences] : turn->dropped) observer_->OnDropped(code, sequences);
    turn->dropped.clear();
    if (turn->send) observer_->OnQueueDepth(turn->depth);
  }
  if (turn->send) answered += RunBatch(worker, &turn->batch, form_us);
  return answered;
}

absl::StatusOr<Batcher::StepResult> Batcher::Step() {
  if (options_.num_workers != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Batcher::Step is for a Batcher created with num_workers = 0; this one runs ",
        options_.num_workers, " worker threads"));
  }
  Turn turn(static_cast<size_t>(options_.max_batch_size));
  int64_t form_start = 0;
  {
    MutexLock lock(&mu_);
    form_start = clock_->NowMicros();
    DecideLocked(&turn, form_start);
    EndDecisionLocked(&turn);
  }
  StepResult result;
  result.action = turn.decision.action;
  result.wait_us = turn.decision.wait_us;
  result.sequences = turn.send ? static_cast<int32_t>(turn.batch.size()) : 0;
  result.answered = FinishTurn(0, &turn, turn.send ? clock_->NowMicros() - form_start : 0);
  return result;
}

void Batcher::WorkerLoop(int32_t worker) {
  Turn turn(static_cast<size_t>(options_.max_batch_size));
  // Poll before blocking: on entering the idle loop, and again after each poll that saw
  // new work that this worker did not get; not again after a poll that timed out.
  bool may_spin = options_.idle_spin_us > 0;
  while (true) {
    int64_t form_start = 0;
    {
      MutexLock lock(&mu_);
      while (true) {
        form_start = clock_->NowMicros();
        DecideLocked(&turn, form_start);
        // Answer the dropped requests now even with no batch, then come back.
        if (turn.send || turn.exit || !turn.ready.empty()) break;
        const BatchDecision& decision = turn.decision;
        if (may_spin && spinning_workers_ == 0) {
          int64_t spin_us = options_.idle_spin_us;
          if (decision.action == BatchAction::kWait && decision.wait_us < spin_us) {
            spin_us = decision.wait_us;
          }
          ++spinning_workers_;
          may_spin = SpinForWork(wake_seq_.load(std::memory_order_relaxed), spin_us);
          --spinning_workers_;
          continue;
        }
        ++idle_workers_;
        if (decision.action == BatchAction::kWait) {
          work_cv_.WaitFor(&mu_, decision.wait_us);
        } else {
          work_cv_.Wait(&mu_);
        }
        --idle_workers_;
        may_spin = options_.idle_spin_us > 0;
      }
      EndDecisionLocked(&turn);
    }
    const int64_t form_us = turn.send ? clock_->NowMicros() - form_start : 0;
    may_spin = options_.idle_spin_us > 0;
    FinishTurn(worker, &turn, form_us);
    if (turn.exit) return;
  }
}

void Batcher::ExpressLoop() {
  const int32_t worker = options_.num_workers;
  Turn turn(static_cast<size_t>(options_.max_batch_size));
  while (true) {
    int64_t form_start = 0;
    {
      MutexLock lock(&mu_);
      while (true) {
        form_start = clock_->NowMicros();
        if (express_handoff_ready_) {  // taken by a worker: run it, even when stopping
          std::swap(turn.batch, *express_handoff_);
          express_handoff_ready_ = false;
          turn.send = true;
          break;
        }
        // Shutting down: the workers drain the queue without waiting for anything.
        if (stopping_) return;
        if (ExpressMayRunLocked() && !express_running_) {
          scheduler_->DecideExpressDroppingEnded(form_start, &turn.decision, &turn.ready,
                                                 observer_ ? &turn.dropped : nullptr);
          turn.send = turn.decision.action == BatchAction::kSend;
          if (turn.send) {
            scheduler_->TakeBatch(turn.decision, form_start, &turn.batch);
            express_running_ = true;
          }
          if (turn.send || !turn.ready.empty()) break;
        }
        express_cv_.Wait(&mu_);
      }
      EndDecisionLocked(&turn);
    }
    FinishTurn(worker, &turn, turn.send ? clock_->NowMicros() - form_start : 0);
  }
}

int32_t Batcher::RunBatch(int32_t worker, Batch* batch, int64_t form_us) {
  BatchStats stats;
  const int64_t t0 = clock_->NowMicros();
  Backend::CallOptions call;
  if (is_express(worker)) {
    call.cpu_threads = options_.express_cpu_threads;
    call.cpu_nice = 0;
  }
  const absl::Status status =
      BatchScheduler::RunBackend(backend_, call, *clock_, dimension_, batch, &stats);
  stats.worker = worker;
  stats.form_us = form_us;
  const int64_t t1 = t0 + stats.backend_us;  // the backend's end: scatter counts as completion
  std::vector<Completion>& ready = batch->ready;
  std::vector<std::unique_ptr<batching_internal::RequestState>>& freed = batch->freed;
  {
    MutexLock lock(&mu_);
    scheduler_->CompleteBatch(batch, status, stats.backend_us, &ready);  // may drop queued rows
    scheduler_->TakeFreed(&freed);
    PublishDepthLocked();
    if (is_express(worker)) {
      express_running_ = false;
    } else {
      --busy_workers_;
      if (batch->holds_bulk) --bulk_in_flight_;
      if (status.ok()) UpdateAdmitLimitLocked(stats);
    }
  }
  int32_t answered = 0;
  if (completions_ != nullptr && ready.size() >= static_cast<size_t>(Options::kMinHandOff)) {
    // Equal parts of at least kMinHandOff / 2 answers, one per pool thread; the worker
    // only moves them (each Completion owns its `done` and its rows).
    const size_t n = ready.size();
    const size_t parts = std::min<size_t>(static_cast<size_t>(completions_->threads()),
                                          std::max<size_t>(1, n / (Options::kMinHandOff / 2)));
    size_t begin = 0;
    for (size_t p = 0; p < parts; ++p) {
      const size_t end = n * (p + 1) / parts;
      std::vector<Completion> part;
      part.reserve(end - begin);
      for (size_t i = begin; i < end; ++i) part.push_back(std::move(ready[i]));
      completions_->Post(std::move(part));
      begin = end;
    }
    ready.clear();
    answered = static_cast<int32_t>(n);
  } else {
    answered = RunCompletions(&ready);
  }
  freed.clear();  // frees outside the lock
  if (observer_ != nullptr) {
    stats.complete_us = clock_->NowMicros() - t1;
    observer_->OnBatch(stats);
  }
  return answered;
}

void Batcher::Shutdown(int64_t grace_us) {
  MutexLock shutdown_lock(&shutdown_mu_);
  if (shut_down_) return;
  std::vector<Completion> ready;
  std::vector<std::pair<absl::StatusCode, int32_t>> dropped;
  std::vector<std::unique_ptr<batching_internal::RequestState>> freed;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    wake_seq_.fetch_add(1, std::memory_order_release);  // a polling worker looks again
  }
  work_cv_.NotifyAll();
  express_cv_.NotifyAll();  // the express lane ends after its batch in flight
  {
    MutexLock lock(&mu_);
    const int64_t deadline = clock_->NowMicros() + (grace_us > 0 ? grace_us : 0);
    // Without worker threads nothing drains the queue: fail what is queued at once.
    while (!workers_.empty() && !scheduler_->queue_empty()) {
      const int64_t left = deadline - clock_->NowMicros();
      if (left <= 0) break;
      drained_cv_.WaitFor(&mu_, left);
    }
    scheduler_->FailAllQueued(
        absl::UnavailableError("batcher shut down before the request's sequences were batched"),
        &ready, observer_ ? &dropped : nullptr);
    scheduler_->TakeFreed(&freed);
    PublishDepthLocked();
  }
  work_cv_.NotifyAll();
  RunCompletions(&ready);
  freed.clear();
  if (observer_ != nullptr) {
    for (const auto& [code, sequences] : dropped) observer_->OnDropped(code, sequences);
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (express_.joinable()) express_.join();
  completions_.reset();  // runs what the workers handed off, then joins its threads
  shut_down_ = true;
}

}  // namespace embedserve
