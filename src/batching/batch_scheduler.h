// The batcher's bookkeeping without threads or clocks: admits requests into the queue,
// drops expired and cancelled ones, turns policy decisions (batch_policy.h) into batches,
// and turns backend results into per-request answers. The Batcher runs it under its mutex
// from its worker threads, or from Batcher::Step on the caller's thread.
// Internal to the batching stage. Not thread-safe, except where a function says so.
#ifndef EMBEDSERVE_BATCHING_BATCH_SCHEDULER_H_
#define EMBEDSERVE_BATCHING_BATCH_SCHEDULER_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "batching/batch_policy.h"
#include "batching/batch_queue.h"
#include "embedserve/batching/batcher.h"

namespace embedserve {
namespace batching_internal {

// One accepted request while the batcher holds it.
struct RequestState {
  std::vector<TokenIds> sequences;
  int64_t deadline_us = 0;
  std::function<bool()> is_cancelled;
  BatchDoneCallback done;
  EmbeddingMatrix result;  // allocated at admission; rows written by workers
  RequestTimings timings;
  int64_t enqueue_us = 0;
  // Its oldest queued item. A request's items are pushed together and never reordered,
  // so those still queued are a contiguous run of the age list starting here.
  BatchQueue::ItemId first_queued = BatchQueue::kNone;
  int32_t queued = 0;     // rows still in the queue
  int32_t in_flight = 0;  // rows in batches being run
  int32_t pending = 0;    // rows without a result yet
  bool finished = false;  // `done` has been handed out
  bool fits_express = false;  // the express lane may take it (Batcher::Submit decides)
  uint64_t last_checked = 0;          // check round, to poll each request once a round
  uint64_t last_taken_batch = 0;      // batch ids, to count each batch once
  uint64_t last_completed_batch = 0;
  RequestState* prev_queued = nullptr;  // list of requests with queued rows
  RequestState* next_queued = nullptr;
};

// A `done` to call outside the lock.
struct Completion {
  BatchDoneCallback done;
  absl::StatusOr<EmbeddingMatrix> result;
  RequestTimings timings;
};

// A batch taken from the queue, owned by the worker that runs it. Reused from batch to
// batch (vectors keep their capacity: no allocation in steady state).
struct Batch {
  uint64_t id = 0;
  int64_t start_us = 0;
  int64_t tokens = 0;
  int64_t longest = 0;
  int32_t requests = 0;
  // Holds a request the express lane would not take (Batcher: only beside such a batch
  // does the lane run).
  bool holds_bulk = false;
  std::vector<RequestState*> owners;     // per item
  std::vector<int32_t> rows;             // per item: row in its owner
  std::vector<const TokenIds*> inputs;   // per item: what Backend::Embed gets
  std::vector<int64_t> queue_us;         // per item: enqueue -> start
  // Scratch for the worker: answers and frees to do outside the lock.
  std::vector<Completion> ready;
  std::vector<std::unique_ptr<RequestState>> freed;
  size_t size() const { return inputs.size(); }
};

class BatchScheduler {
 public:
  // `options` must be valid.
  explicit BatchScheduler(const Batcher::Options& options);
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;
  // Frees what it still holds without answering it (callers answer everything first).
  // Requests whose answer has been handed out and that no batch references are freed
  // through TakeFreed (or here).
  ~BatchScheduler();

  // Checks `request` and builds its state (allocates: call outside any lock), moving
  // from `request` only when it succeeds. Thread-safe. INVALID_ARGUMENT as
  // Batcher::Submit documents.
  static absl::StatusOr<std::unique_ptr<RequestState>> Prepare(const Batcher::Options& options,
                                                               int64_t dimension,
                                                               BatchRequest& request);
  // Gives a prepared request's fields back to `request` (Submit refused it after Prepare).
  static void Unprepare(std::unique_ptr<RequestState> state, BatchRequest* request);

  // The RESOURCE_EXHAUSTED of a queue holding `queued` of `capacity` sequences that
  // cannot take `needed` more.
  static absl::Status QueueFullError(int32_t queued, int32_t capacity, int64_t needed);

  // Queues all rows of a prepared request at `now_us`, or returns RESOURCE_EXHAUSTED
  // (request untouched, `done` not called) when the queue cannot take them all.
  absl::Status Enqueue(std::unique_ptr<RequestState>& request, int64_t now_us);

  // Ends every queued request whose deadline has passed (DEADLINE_EXCEEDED) or whose
  // is_cancelled() says so (CANCELLED): its queued rows leave the queue; its answer is
  // appended to `ready`. `dropped` (nullable) gets one (code, rows) per request ended.
  void DropExpiredAndCancelled(int64_t now_us, std::vector<Completion>* ready,
                               std::vector<std::pair<absl::StatusCode, int32_t>>* dropped);

  // The policy on the current queue.
  void Decide(int64_t now_us, bool flush, BatchDecision* decision) const {
    DecideBatch(options_, queue_, now_us, flush, decision);
  }

  // What a free worker runs: the policy, with expired and cancelled requests dropped
  // first (as DropExpiredAndCancelled) among those the decided batch would hold, then the
  // policy again until the batch holds none. Every kFullCheckIntervalUs it checks the
  // whole queue instead, so a request deep in a long queue still ends soon after its
  // deadline while the lock hold per batch stays O(batch), not O(queue).
  static constexpr int64_t kFullCheckIntervalUs = 1000;
  void DecideDroppingEnded(int64_t now_us, bool flush, BatchDecision* decision,
                           std::vector<Completion>* ready,
                           std::vector<std::pair<absl::StatusCode, int32_t>>* dropped);

  // The express lane's turn (DecideExpressBatch), dropping ended requests among those
  // its batch would hold as DecideDroppingEnded does.
  void DecideExpressDroppingEnded(int64_t now_us, BatchDecision* decision,
                                  std::vector<Completion>* ready,
                                  std::vector<std::pair<absl::StatusCode, int32_t>>* dropped);

  // Moves decision.items (a kSend decision on the current queue) into `batch`.
  void TakeBatch(const BatchDecision& decision, int64_t now_us, Batch* batch);

  // Copies the rows of a successful backend result into the requests' result matrices.
  // Touches only rows owned by `batch`: safe WITHOUT the lock, concurrently with other
  // batches. Returns INTERNAL if `result` is not batch.size() x dimension.
  static absl::Status ScatterRows(const Batch& batch, const EmbeddingMatrix& result,
                                  int64_t dimension);

  // The unlocked middle of a worker turn: runs `batch` through `backend` with `call` and
  // scatters the rows (safe WITHOUT the lock, as ScatterRows). Returns the batch's status
  // (the backend's, or a wrong shape's INTERNAL) and fills `*stats` (all but worker,
  // form_us and complete_us; the queue_us span stays valid until `batch` is reused).
  static absl::Status RunBackend(Backend* backend, const Backend::CallOptions& call,
                                 const Clock& clock, int64_t dimension, Batch* batch,
                                 BatchStats* stats);

  // Records the end of `batch` (status: the backend's, or ScatterRows' error): requests
  // whose rows are now all done, or that this batch failed, are appended to `ready`.
  void CompleteBatch(Batch* batch, const absl::Status& status, int64_t backend_us,
                     std::vector<Completion>* ready);

  // Ends every queued request with `status` (shutdown); appends their answers to `ready`.
  void FailAllQueued(const absl::Status& status, std::vector<Completion>* ready,
                     std::vector<std::pair<absl::StatusCode, int32_t>>* dropped);

  // Moves out the requests that are finished and no longer referenced, so the caller can
  // free them (their token ids, results, callbacks) outside its lock.
  void TakeFreed(std::vector<std::unique_ptr<RequestState>>* out) {
    for (RequestState* r : freed_) out->emplace_back(r);
    freed_.clear();
  }

  int32_t queued_sequences() const { return queue_.size(); }
  // The queued sequences a new request waits behind, which the time bound and the share
  // check admit by: all of them but the first batch per worker of started requests' rows
  // (newcomers pass a started request every other batch, batch_policy.h, so that much of
  // it is in service like the batch in flight; the rest still counts, so the bound holds
  // when every request is larger than a batch).
  int32_t counted_sequences() const {
    const int64_t per_worker = static_cast<int64_t>(options_.max_batch_size) *
                               std::max<int32_t>(1, options_.num_workers);
    return queue_.size() - static_cast<int32_t>(std::min<int64_t>(started_queued_, per_worker));
  }
  bool queue_empty() const { return queue_.empty(); }
  // Requests accepted and not yet freed (answered and with no rows in flight).
  int64_t live_requests() const { return live_requests_; }
  const BatchQueue& queue() const { return queue_; }

 private:
  // Ends `request` with `status`: removes its queued rows, hands out its `done`.
  void Fail(RequestState* request, const absl::Status& status, std::vector<Completion>* ready);
  // Ends the requests of `decision`'s batch whose deadline passed or that were
  // cancelled; returns true if any was (the decision is then stale).
  bool DropEndedInDecision(int64_t now_us, const BatchDecision& decision,
                           std::vector<Completion>* ready,
                           std::vector<std::pair<absl::StatusCode, int32_t>>* dropped);
  // Ends `request` if its deadline passed or it was cancelled; returns true if it did.
  bool DropIfEnded(RequestState* request, int64_t now_us, std::vector<Completion>* ready,
                   std::vector<std::pair<absl::StatusCode, int32_t>>* dropped);
  void UnlinkQueued(RequestState* request);
  void MaybeFree(RequestState* request);

  const Batcher::Options options_;
  BatchQueue queue_;
  RequestState* queued_head_ = nullptr;  // requests with queued rows, oldest first
  RequestState* queued_tail_ = nullptr;
  std::vector<RequestState*> freed_;  // see TakeFreed
  uint64_t next_batch_id_ = 1;
  uint64_t check_round_ = 0;
  int64_t last_full_check_us_ = 0;
  int64_t live_requests_ = 0;
  // Queued rows of started requests: those with fewer rows queued than they have (rows
  // leave the queue only into a batch, or all at once when the request ends).
  int32_t started_queued_ = 0;
};

}  // namespace batching_internal
}  // namespace embedserve

#endif  // EMBEDSERVE_BATCHING_BATCH_SCHEDULER_H_
