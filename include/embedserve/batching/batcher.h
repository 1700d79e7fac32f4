// The dynamic batcher: sits between the RPC handlers and the Backend
// (request -> tokenize -> [queue -> batch] -> forward -> pool -> reply). Requests of token
// ids go into one bounded queue of sequences; N worker threads each take a batch (bounded
// by sequences and tokens, similar lengths grouped) and call Backend::Embed on it.
// Thread-safety: Batcher is safe to use from any thread; callbacks (`done`,
// BatchObserver) run on the batcher's worker threads (or in Shutdown, or in Step), never
// under its lock.
#ifndef EMBEDSERVE_BATCHING_BATCHER_H_
#define EMBEDSERVE_BATCHING_BATCHER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "embedserve/batching/clock.h"
#include "embedserve/common/mutex.h"
#include "embedserve/common/token_ids.h"
#include "embedserve/model/backend.h"
#include "embedserve/model/embedding_matrix.h"

namespace embedserve {

// Filled by the batcher for each request and handed to its `done`.
struct RequestTimings {
  int64_t queue_us = 0;      // enqueue -> start of the last batch that held its items
  int64_t inference_us = 0;  // sum over its batches of backend Embed() time
  int32_t num_batches = 0;   // batches that held its items
};

// Receives the request's embeddings (rows in the order of its sequences, NOT normalised,
// as Backend::Embed returns them) or the status that ended it: DEADLINE_EXCEEDED,
// CANCELLED, UNAVAILABLE (shut down before it ran), or the backend's error.
using BatchDoneCallback = std::function<void(absl::StatusOr<EmbeddingMatrix> embeddings,
                                             const RequestTimings& timings)>;

struct BatchRequest {
  std::vector<TokenIds> sequences;  // one work item each; 1..N; moved in
  int64_t deadline_us = 0;          // Clock time; 0 = none
  // May be empty. Polled (under the batcher's lock: must be cheap, must not block and must
  // not call into the Batcher) each time a worker forms a batch, until the request's
  // items have all been batched.
  std::function<bool()> is_cancelled;
  // Called exactly once iff Submit returns OK, from a worker thread (or from Shutdown, or
  // from Step). Whatever it references must outlive the Batcher or its Shutdown: the
  // destructor answers what is still queued.
  BatchDoneCallback done;
  // The share of the queue's bound (max_queue_sequences, and max_queue_wait_us's bound
  // when on, over the sequences it counts), in percent, that may be filled when this
  // one is admitted: 100 for
  // interactive calls; less for bulk traffic (EmbedStream), which then leaves the rest
  // to other callers however fast it writes. 1..100.
  int32_t queue_percent = 100;
  // The request's content as a hash (0: unknown), the same when a refused request is
  // sent again: Options::overload_queue_wait_us counts a retried request's demand once.
  uint64_t demand_key = 0;
};

// What one batch did, for metrics. Handed to BatchObserver::OnBatch.
struct BatchStats {
  int32_t worker = 0;         // the worker that ran it, 0..num_workers-1; the express lane's
                              // batches: num_workers
  int32_t sequences = 0;      // items in the batch
  int32_t requests = 0;       // distinct requests with items in the batch
  int64_t tokens = 0;         // real tokens: sum of the sequences' lengths
  int64_t longest = 0;        // longest sequence, in tokens
  int64_t padded_tokens = 0;  // longest * sequences: what a padding backend computes
  // Per item: enqueue -> batch start, in microseconds. Valid only during OnBatch.
  absl::Span<const int64_t> queue_us;
  int64_t form_us = 0;      // time the worker held the lock to form the batch
  int64_t backend_us = 0;   // Backend::Embed wall time
  int64_t complete_us = 0;  // scatter rows + bookkeeping + `done` callbacks
  absl::Status status;      // the backend's result for this batch

  // Share of padded_tokens that is padding, 0..1.
  double padding_ratio() const {
    return padded_tokens == 0
               ? 0.0
               : static_cast<double>(padded_tokens - tokens) / static_cast<double>(padded_tokens);
  }
};

// Metrics hook. Called from worker threads, concurrently when num_workers > 1: must be
// thread-safe and quick.
class BatchObserver {
 public:
  virtual ~BatchObserver() = default;
  // After each backend call, outside the batcher's lock.
  virtual void OnBatch(const BatchStats& stats) = 0;
  // Queued sequences, reported by a worker each time it takes a batch from the queue.
  virtual void OnQueueDepth(int64_t sequences) = 0;
  // A request ended before all its items ran: `code` is DEADLINE_EXCEEDED, CANCELLED or
  // UNAVAILABLE; `sequences` of its items were dropped from the queue. Optional.
  virtual void OnDropped(absl::StatusCode code, int32_t sequences) {
    (void)code;
    (void)sequences;
  }
};

// What the batching policy decides for a free worker.
enum class BatchAction {
  kIdle,  // nothing queued: wait for a Submit
  kWait,  // a batch may still fill: decide again after wait_us (or on a Submit)
  kSend,  // take the batch now
};

namespace batching_internal {
class BatchScheduler;
struct Batch;
class RefusedDemand;
}  // namespace batching_internal

class Batcher {
 public:
  struct Options {
    // false: every request is dispatched alone as its own batch, whatever its size (the
    // seed's baseline, for comparisons). Deadlines and cancellation still apply.
    bool enabled = true;
    // Most sequences per batch. Raise for throughput on big accelerators.
    int32_t max_batch_size = 64;
    // Most tokens per batch, counted as longest*count when count_padding, else as the
    // sum. Bounds the memory of one forward pass; also the longest sequence accepted.
    int64_t max_batch_tokens = 8192;
    // true when the backend pads a batch to its longest sequence (set from
    // Backend::Info().pads_inputs by the server). Also turns similar-length grouping on.
    bool count_padding = true;
    // How long the oldest queued item may wait for a batch to fill. 0: a free worker
    // takes what is queued at once (best latency; batches still form under load).
    int64_t max_queue_delay_us = 0;
    // Queue bound, in sequences; a request that does not fit now fails at once with
    // RESOURCE_EXHAUSTED.
    int32_t max_queue_sequences = 4096;
    // Queue bound in time: the queue admits at most the sequences the workers ran in this
    // long at the rate of recent batches that were at least half full (sequences per
    // microsecond of backend time, weighted toward the last ~10 such batches, times the
    // workers: how fast a full queue drains), never fewer than
    // max_batch_size x workers (each worker's next batch can be full) nor more than
    // max_queue_sequences. It counts the queued sequences but the first batch per worker
    // of requests already started (work newcomers pass every other batch,
    // batch_policy.h): a request that does not fit while counted sequences are queued
    // gets RESOURCE_EXHAUSTED, as from a full queue.
    // Bounds the wait of admitted requests under overload where max_queue_sequences is
    // seconds of work (a CPU runs 4096 MiniLM sequences in ~10 s; a GPU in ~15 ms, where
    // max_queue_sequences binds first). Until a batch has run: max_queue_sequences.
    // 0: off.
    int64_t max_queue_wait_us = 0;
    // The time bound while the queue is overloaded: while the sequences queued plus those
    // of the distinct requests refused within the last kOverloadHoldUs (and not admitted
    // since) exceed what max_queue_wait_us admits, the queue admits only this much work.
    // Requests are told apart by BatchRequest::demand_key, so closed-loop callers that
    // retry a refused request count once each: when all they want fits max_queue_wait_us
    // (e.g. four callers of 64 texts, ~150-200 ms of work on a 2-core CPU), they are
    // admitted under it, however often they retried. An open-loop overload keeps offering
    // new requests, so its refused work keeps the shorter standing queue, and an admitted
    // request waits this long rather than max_queue_wait_us (CoDel's reasoning: a queue
    // that never drains adds delay and no throughput once it holds the workers' next
    // batches). Computed from the same rate, with the same floor of one batch per worker.
    // 0, or >= max_queue_wait_us: no separate overload bound.
    int64_t overload_queue_wait_us = 0;
    // How long a refused request counts as demand (callers that gave up stop counting).
    static constexpr int64_t kOverloadHoldUs = 1'000'000;
    // Most tokens in one request (the sum of its sequences' lengths); more is
    // INVALID_ARGUMENT (split the request). Bounds the work one call can put in front of
    // others. 0: no bound.
    int64_t max_request_tokens = 0;
    // Worker threads, each running one batch at a time (model instances or streams).
    // 0: no threads; the owner runs each worker turn with Step() (tests, on a fake clock;
    // the config's batching.workers is 1..256).
    int32_t num_workers = 1;
    // Similar-length grouping (count_padding only): items queued for less than this are
    // picked by similarity of length to the batch's; items older than this are taken
    // first, oldest first, whatever their length. The oldest queued item always goes in
    // the next batch, so nothing starves. 0: plain FIFO.
    int64_t length_bucketing_max_age_us = 10'000;
    // How long a worker that finds nothing to send polls for new work (a Submit, or
    // another worker leaving items queued) before it blocks on the condition variable.
    // It polls an atomic counter, without the lock; at most one worker polls at a time, and
    // a Submit that finds it polling skips the wake-up syscall. Waking a blocked worker
    // costs tens to hundreds of microseconds on a VM (the idle vCPU has halted and the
    // hypervisor must resume it); a polling worker takes the request within about a
    // microsecond. Cost: up to this much CPU of one core each time the queue runs dry,
    // i.e. at most idle_spin_us per batch (small next to a model's forward pass); the
    // poller yields the CPU every ~2 us to runnable threads. Also bounded by a kWait
    // decision's wait. 0: block at once. At most kMaxIdleSpinUs. See docs/batching.md.
    int64_t idle_spin_us = 50;
    static constexpr int64_t kMaxIdleSpinUs = 10'000;
    // Threads that run the answers (`done`s) of a finished batch, so that its worker goes
    // back to the model at once. The server's `done` serializes the reply and sends it
    // (gRPC's Finish writes to the socket on the calling thread), some microseconds each:
    // for a batch of hundreds of one-pair requests that is milliseconds during which the
    // worker would start no batch. A batch with at least kMinHandOff answers is split
    // into up to this many equal parts, one per thread; a smaller one is answered on the
    // worker, so a lone request pays no thread wake-up. 0: the worker answers every
    // batch itself. Ignored with num_workers = 0 (Step answers on its caller).
    int32_t completion_threads = 0;
    static constexpr int32_t kMinHandOff = 16;
    static constexpr int32_t kMaxCompletionThreads = 64;
    // The express lane: when > 0, one more worker thread that runs small requests while
    // every worker is running a batch, so that a short interactive call waits for its own
    // forward rather than for a bulk batch in flight and then its own (on a 2-core CPU a
    // batch of 64 texts takes ~0.1-1 s; one pair ~10 ms). It takes whole requests of at
    // most this many tokens that have had no batch yet, oldest first, into batches of at
    // most this many tokens (counted as max_batch_tokens is) and max_batch_size
    // sequences, and runs them at once, beside the batch in flight, with
    // express_cpu_threads intra-op threads. Its batches do not inform the rate of
    // max_queue_wait_us. It helps where the workers leave cores to share (a CPU); with
    // model copies behind a BackendPool it waits for a free copy like any worker.
    // Requires num_workers >= 1. 0: off. At most max_batch_tokens.
    int64_t express_max_tokens = 0;
    // Backend::CallOptions::cpu_threads of the express lane's batches: 1 keeps its
    // forward free of barriers with threads the batch in flight preempts. 0: the
    // backend's own setting. Its calls also ask for cpu_nice 0: with model.cpu_nice > 0
    // the lane's thread gets a core before the workers' threads.
    int32_t express_cpu_threads = 1;

    // INVALID_ARGUMENT naming the field, the rule and the value, e.g.
    // "batching.max_batch_size must be >= 1; was 0".
    absl::Status Validate() const;
  };

  // Default bound on how long Shutdown lets queued work finish.
  static constexpr int64_t kDefaultShutdownGraceUs = 10'000'000;

  // Starts options.num_workers threads (none for 0: see Step). `backend` (not owned)
  // must outlive the Batcher; `observer` (nullable, not owned) and `clock` (not owned)
  // likewise. Fails with INVALID_ARGUMENT for bad options, a null backend or clock, or a
  // backend whose Info().dimension is < 1.
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(const Options& options,
                                                         Backend* backend,
                                                         BatchObserver* observer,
                                                         Clock* clock = RealClock());

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;
  // Shutdown(kDefaultShutdownGraceUs) if not yet done, so the `done` of every request
  // still queued runs here (with UNAVAILABLE): what those callbacks write into must
  // outlive the Batcher.
  ~Batcher();

  // Takes ownership of `request` (moves from it) iff the returned status is OK: `done`
  // will then be called exactly once. Otherwise `request` is left as it was, with the
  // caller (the TF Serving / Triton contract), and `done` is NOT called:
  //  RESOURCE_EXHAUSTED: the queue cannot take all of the request's sequences now
  //    (retryable; an RPC thread never blocks here).
  //  UNAVAILABLE: shutting down (permanent for this Batcher).
  //  INVALID_ARGUMENT: no sequences, an empty sequence, a sequence longer than
  //    max_batch_tokens, more tokens than max_request_tokens, more sequences than
  //    max_queue_sequences (could never be queued), or no `done`.
  absl::Status Submit(BatchRequest&& request);

  // What one worker turn did.
  struct StepResult {
    BatchAction action = BatchAction::kIdle;
    int64_t wait_us = 0;    // kWait: how long the policy would wait
    int32_t sequences = 0;  // kSend: the batch's size
    int32_t answered = 0;   // `done`s run during the turn
  };
  // Runs on the calling thread the turn each worker thread runs, without waiting: ends
  // expired and cancelled requests, asks the policy, and on kSend runs the batch through
  // the backend and answers what it completes. Only for a Batcher created with
  // num_workers = 0 (else FAILED_PRECONDITION); thread-safe like Submit.
  absl::StatusOr<StepResult> Step();

  // Stops accepting (Submit returns UNAVAILABLE), lets the workers finish what is queued
  // (without waiting for max_queue_delay) for up to `grace_us`, then fails what is still
  // queued with UNAVAILABLE (those `done`s run on the calling thread), waits for the
  // batches in flight and joins the workers. With num_workers = 0 nothing drains the
  // queue: what is queued fails at once. Every accepted request has been answered
  // when it returns. Idempotent; safe from any thread except a callback of this Batcher.
  void Shutdown(int64_t grace_us = kDefaultShutdownGraceUs);

  // Queued sequences (not yet in a batch).
  int64_t QueueDepth() const;
  // Requests accepted and not yet released (answered, with no rows in a batch).
  int64_t LiveRequests() const;

  // Cheap: RESOURCE_EXHAUSTED (as Submit words it) when the queue looked too full for
  // `sequences` more at its last change, else OK (Submit still decides; also for more
  // sequences than the queue can ever hold, which Submit refuses). Lock-free but while
  // refused requests count as demand (overload bound; a small lock of their own).
  // Lets a caller refuse under overload before it spends work on a request (tokenizing).
  // `queue_percent` and `demand_key` as BatchRequest's: a refusal here counts against
  // the key as Submit's does; only Submit's acceptance clears it.
  absl::Status CheckRoom(int64_t sequences, int32_t queue_percent = 100,
                         uint64_t demand_key = 0) const;

  const Options& options() const { return options_; }

 private:
  Batcher(const Options& options, Backend* backend, BatchObserver* observer, Clock* clock);
  // One worker's buffers and what its current turn decided (batcher.cc).
  struct Turn;
  // The worker threads' loop: turns, waiting between them when there is nothing to send.
  void WorkerLoop(int32_t worker);
  // The parts of a turn. Under mu_: drop what ended, decide at `now`, take the batch on
  // kSend; then collect what the turn frees and whom to wake.
  void DecideLocked(Turn* turn, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndDecisionLocked(Turn* turn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Outside mu_: wake-ups, answers, observer calls, and the batch. Returns the number of
  // `done`s run.
  int32_t FinishTurn(int32_t worker, Turn* turn, int64_t form_us);
  // Under mu_: new work is queued for a free worker. Bumps wake_seq_ when a worker is
  // polling (it will see the work), else returns whether a blocked worker must be
  // notified (the caller notifies work_cv_ after unlocking).
  bool SignalWorkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases mu_, polls wake_seq_ until it differs from `seen` or `spin_us` (real time)
  // have passed, takes mu_ again. Returns true if wake_seq_ moved.
  bool SpinForWork(uint64_t seen, int64_t spin_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs one taken batch through the backend and answers what it completes; returns the
  // number of `done`s run. The express lane's worker index is num_workers.
  int32_t RunBatch(int32_t worker, batching_internal::Batch* batch, int64_t form_us);
  // The express lane's thread (Options::express_max_tokens): waits until every worker is
  // running a batch and a small request is queued, runs it, and again.
  void ExpressLoop();
  bool is_express(int32_t worker) const {
    return options_.express_max_tokens > 0 && worker == options_.num_workers;
  }

  const Options options_;
  Backend* const backend_;
  BatchObserver* const observer_;
  Clock* const clock_;
  const int64_t dimension_;

  // std::mutex underneath, not absl::Mutex: see mutex.h.
  mutable Mutex mu_;
  CondVar work_cv_;     // workers wait here for items / delay / stop
  CondVar drained_cv_;  // Shutdown waits here for the queue to empty
  std::unique_ptr<batching_internal::BatchScheduler> scheduler_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int32_t idle_workers_ ABSL_GUARDED_BY(mu_) = 0;      // blocked on work_cv_
  int32_t spinning_workers_ ABSL_GUARDED_BY(mu_) = 0;  // polling wake_seq_: 0 or 1
  // Workers (not the express lane) between taking a batch and completing it.
  int32_t busy_workers_ ABSL_GUARDED_BY(mu_) = 0;
  // Of those, the ones whose batch holds a request the express lane would not take.
  int32_t bulk_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // The lane runs only while every worker is busy and one of them runs bulk work: small
  // requests then need not wait for a long batch; beside a batch of small requests only,
  // the lane would split the cores between two small batches and win nothing.
  bool ExpressMayRunLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  CondVar express_cv_;  // the express lane waits here for busy workers and small work
  // The express lane has a batch: taken by itself or handed to it, until completed.
  bool express_running_ ABSL_GUARDED_BY(mu_) = false;
  // A batch of small requests a worker took out of the queue for the lane (so that they
  // do not ride in the worker's larger batch); the lane runs it next, even if stopping.
  std::unique_ptr<batching_internal::Batch> express_handoff_ ABSL_GUARDED_BY(mu_);
  bool express_handoff_ready_ ABSL_GUARDED_BY(mu_) = false;
  // Under mu_, from a worker's turn: when the lane is idle and small requests are queued
  // with other work, takes them into express_handoff_ and wakes the lane.
  void HandOffSmallLocked(Turn* turn, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Bumped under mu_ (by SignalWorkLocked, Shutdown) while a worker polls; read without it.
  std::atomic<uint64_t> wake_seq_{0};
  // The queue's depth, and the part of it the time bound and the share admit by
  // (BatchScheduler::counted_sequences), stored under mu_ after each change; read
  // without it by CheckRoom.
  std::atomic<int32_t> queued_hint_{0};
  std::atomic<int32_t> counted_hint_{0};
  void PublishDepthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // max_queue_wait_us: sequences and backend microseconds of recent batches, each
  // decayed by kRateDecay per batch, and the admission bound they give (written under
  // mu_, read without it by CheckRoom).
  static constexpr double kRateDecay = 0.9;
  double recent_sequences_ ABSL_GUARDED_BY(mu_) = 0;
  double recent_backend_us_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int32_t> admit_limit_;
  // overload_queue_wait_us: its bound from the same rate (read without mu_), and the
  // refused requests' demand that turns it on; null without an overload bound.
  std::atomic<int32_t> overload_limit_;
  std::unique_ptr<batching_internal::RefusedDemand> refused_;
  static constexpr int32_t kMaxRefusedRequests = 4096;  // past it: unbounded demand
  // Options::overload_queue_wait_us is set and shorter than max_queue_wait_us.
  bool HasOverloadBound() const;
  // The time bound that applies with `queued` counted sequences: overload_limit_ while
  // they and the refused requests' outstanding demand pass admit_limit_ (overloaded),
  // else admit_limit_.
  struct TimeBound {
    int32_t limit;
    bool overloaded;
  };
  TimeBound WaitLimit(int32_t queued) const;
  void UpdateAdmitLimitLocked(const BatchStats& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED when `needed` more sequences would pass the time bound, or the
  // share `queue_percent` of the queue's bound, with `queued` queued, else OK. Nothing
  // is refused by these into an empty queue.
  // A time-bound refusal is recorded against `demand_key` (overload bound only).
  absl::Status CheckWaitBound(int32_t queued, int64_t needed, uint64_t demand_key) const;
  absl::Status CheckShare(int32_t queued, int64_t needed, int32_t queue_percent) const;
  absl::Status CheckAdmission(int32_t queued, int64_t needed, int32_t queue_percent,
                              uint64_t demand_key) const;

  // Runs handed-off answers (Options::completion_threads); null when off. Shutdown
  // drains and joins it after the workers.
  class CompletionPool;
  std::unique_ptr<CompletionPool> completions_;

  Mutex shutdown_mu_;  // serialises Shutdown calls
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
  std::vector<std::thread> workers_;  // written by Create, joined by Shutdown
  std::thread express_;               // likewise; not started when the lane is off
};

}  // namespace embedserve

#endif  // EMBEDSERVE_BATCHING_BATCHER_H_
