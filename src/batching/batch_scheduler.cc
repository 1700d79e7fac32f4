#include "batching/batch_scheduler.h"

#include <cassert>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace embedserve {
namespace batching_internal {

BatchScheduler::BatchScheduler(const Batcher::Options& options)
    : options_(options), queue_(options.max_queue_sequences) {}

BatchScheduler::~BatchScheduler() {
  // Only queued requests can remain (nothing is in flight once the workers are joined).
  RequestState* r = queued_head_;
  while (r != nullptr) {
    RequestState* next = r->next_queued;
    if (r->in_flight == 0) delete r;
    r = next;
  }
  for (RequestState* f : freed_) delete f;
}

absl::StatusOr<std::unique_ptr<RequestState>> BatchScheduler::Prepare(
    const Batcher::Options& options, int64_t dimension, BatchRequest& request) {
  const size_t n = request.sequences.size();
  if (n == 0) return absl::InvalidArgumentError("request has no sequences");
  if (n > static_cast<size_t>(options.max_queue_sequences)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request has ", n, " sequences; more than batching.max_queue_sequences (",
                     options.max_queue_sequences, ") can never be queued"));
  }
  uint64_t tokens = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t len = request.sequences[i].size();
    tokens += len;
    if (len == 0) return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " is empty"));
    if (len > static_cast<uint64_t>(options.max_batch_tokens) ||
        len > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", i, " has ", len, " tokens; batching.max_batch_tokens is ",
                       options.max_batch_tokens));
    }
  }
  if (options.max_request_tokens > 0 && tokens > static_cast<uint64_t>(options.max_request_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request has ", tokens, " tokens, more than batching.max_request_tokens (",
        options.max_request_tokens, "); split it into smaller requests"));
  }
  if (!request.done) return absl::InvalidArgumentError("request has no done callback");
  auto state = std::make_unique<RequestState>();
  state->sequences = std::move(request.sequences);
  state->deadline_us = request.deadline_us;
  state->is_cancelled = std::move(request.is_cancelled);
  state->done = std::move(request.done);
  state->result.rows = static_cast<int64_t>(n);
  state->result.dim = dimension;
  state->result.values.resize(n * static_cast<size_t>(dimension));
  state->pending = static_cast<int32_t>(n);
  return state;
}

absl::Status BatchScheduler::RunBackend(Backend* backend, const Backend::CallOptions& call,
                                       const Clock& clock, int64_t dimension, Batch* batch,
                                       BatchStats* stats) {
  const int64_t t0 = clock.NowMicros();
  absl::StatusOr<EmbeddingMatrix> result =
      backend->EmbedWith(absl::MakeConstSpan(batch->inputs.data(), batch->inputs.size()), call);
  const int64_t t1 = clock.NowMicros();
  absl::Status status = result.ok() ? ScatterRows(*batch, *result, dimension) : result.status();
  stats->sequences = static_cast<int32_t>(batch->size());
  stats->requests = batch->requests;
  stats->tokens = batch->tokens;
  stats->longest = batch->longest;
  stats->padded_tokens = batch->longest * static_cast<int64_t>(batch->size());
  stats->queue_us = absl::MakeConstSpan(batch->queue_us);
  stats->backend_us = t1 - t0;
  stats->status = status;
  return status;
}

void BatchScheduler::Unprepare(std::unique_ptr<RequestState> state, BatchRequest* request) {
  request->sequences = std::move(state->sequences);
  request->deadline_us = state->deadline_us;
  request->is_cancelled = std::move(state->is_cancelled);
  request->done = std::move(state->done);
}

absl::Status BatchScheduler::QueueFullError(int32_t queued, int32_t capacity, int64_t needed) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "batch queue is full: ", queued, " of batching.max_queue_sequences=", capacity,
      " sequences queued, the request needs ", needed, "; retry later"));
}

absl::Status BatchScheduler::Enqueue(std::unique_ptr<RequestState>& request, int64_t now_us) {
  const int32_t n = static_cast<int32_t>(request->sequences.size());
  if (n > queue_.capacity() - queue_.size()) {
    return QueueFullError(queue_.size(), queue_.capacity(), n);
  }
  RequestState* r = request.release();
  r->enqueue_us = now_us;
  for (int32_t row = 0; row < n; ++row) {
    const BatchQueue::ItemId id = queue_.Push(
        r, row, static_cast<int32_t>(r->sequences[static_cast<size_t>(row)].size()), now_us);
    if (row == 0) r->first_queued = id;
  }
  r->queued = n;
  r->prev_queued = queued_tail_;
  r->next_queued = nullptr;
  if (queued_tail_ != nullptr) {
    queued_tail_->next_queued = r;
  } else {
    queued_head_ = r;
  }
  queued_tail_ = r;
  ++live_requests_;
  return absl::OkStatus();
}

void BatchScheduler::UnlinkQueued(RequestState* r) {
  if (r->prev_queued != nullptr) {
    r->prev_queued->next_queued = r->next_queued;
  } else {
    queued_head_ = r->next_queued;
  }
  if (r->next_queued != nullptr) {
    r->next_queued->prev_queued = r->prev_queued;
  } else {
    queued_tail_ = r->prev_queued;
  }
  r->prev_queued = r->next_queued = nullptr;
}

void BatchScheduler::MaybeFree(RequestState* r) {
  if (r->finished && r->in_flight == 0 && r->queued == 0) {
    freed_.push_back(r);
    --live_requests_;
  }
}

void BatchScheduler::Fail(RequestState* r, const absl::Status& status,
                          std::vector<Completion>* ready) {
  if (r->queued > 0) {
    BatchQueue::ItemId id = r->first_queued;
    for (int32_t left = r->queued; left > 0; --left) {
      assert(id != BatchQueue::kNone && queue_.item(id).request == r);
      const BatchQueue::ItemId next = queue_.Next(id);
      queue_.Remove(id);
      id = next;
    }
    r->first_queued = BatchQueue::kNone;
    if (r->queued < static_cast<int32_t>(r->sequences.size())) started_queued_ -= r->queued;
    r->queued = 0;
    UnlinkQueued(r);
  }
  if (!r->finished) {
    r->finished = true;
    ready->push_back(Completion{std::move(r->done), status, r->timings});
  }
}

bool BatchScheduler::DropIfEnded(RequestState* r, int64_t now_us, std::vector<Completion>* ready,
                                 std::vector<std::pair<absl::StatusCode, int32_t>>* dropped) {
  absl::Status status;
  if (r->deadline_us != 0 && now_us >= r->deadline_us) {
    status = absl::DeadlineExceededError(
        absl::StrCat("deadline passed with ", r->queued, " of the request's ",
                     r->sequences.size(), " sequences still queued for a batch"));
  } else if (r->is_cancelled && r->is_cancelled()) {
    status = absl::CancelledError("request cancelled while queued for a batch");
  } else {
    return false;
  }
  if (dropped != nullptr) dropped->emplace_back(status.code(), r->queued);
  Fail(r, status, ready);
  MaybeFree(r);
  return true;
}

void BatchScheduler::DropExpiredAndCancelled(
    int64_t now_us, std::vector<Completion>* ready,
    std::vector<std::pair<absl::StatusCode, int32_t>>* dropped) {
  last_full_check_us_ = now_us;
  RequestState* r = queued_head_;
  while (r != nullptr) {
    RequestState* next = r->next_queued;  // r may be unlinked (and freed) below
    DropIfEnded(r, now_us, ready, dropped);
    r = next;
  }
}

void BatchScheduler::DecideDroppingEnded(
    int64_t now_us, bool flush, BatchDecision* decision, std::vector<Completion>* ready,
    std::vector<std::pair<absl::StatusCode, int32_t>>* dropped) {
  if (now_us - last_full_check_us_ >= kFullCheckIntervalUs) {
    DropExpiredAndCancelled(now_us, ready, dropped);
  }
  while (true) {
    Decide(now_us, flush, decision);
    if (!DropEndedInDecision(now_us, *decision, ready, dropped)) return;
  }
}

void BatchScheduler::DecideExpressDroppingEnded(
    int64_t now_us, BatchDecision* decision, std::vector<Completion>* ready,
    std::vector<std::pair<absl::StatusCode, int32_t>>* dropped) {
  while (true) {
    DecideExpressBatch(options_, queue_, decision);
    if (!DropEndedInDecision(now_us, *decision, ready, dropped)) return;
  }
}

bool BatchScheduler::DropEndedInDecision(
    int64_t now_us, const BatchDecision& decision, std::vector<Completion>* ready,
    std::vector<std::pair<absl::StatusCode, int32_t>>* dropped) {
  if (decision.action == BatchDecision::Action::kIdle) return false;
  // Poll each request the batch would hold, once. Failing one removes all its items,
  // which invalidates the decision: the caller decides again (each round drops >= 1).
  const uint64_t round = ++check_round_;
  bool any_dropped = false;
  for (const BatchQueue::ItemId id : decision.items) {
    RequestState* r = queue_.item(id).request;
    if (r == nullptr || r->last_checked == round) continue;  // r == nullptr: removed
    r->last_checked = round;
    if (DropIfEnded(r, now_us, ready, dropped)) any_dropped = true;
  }
  return any_dropped;
}

void BatchScheduler::TakeBatch(const BatchDecision& decision, int64_t now_us, Batch* batch) {
  batch->id = next_batch_id_++;
  batch->start_us = now_us;
  batch->tokens = decision.tokens;
  batch->longest = decision.longest;
  batch->requests = 0;
  batch->owners.clear();
  batch->rows.clear();
  batch->inputs.clear();
  batch->queue_us.clear();
  for (const BatchQueue::ItemId id : decision.items) {
    const BatchQueue::Item& it = queue_.item(id);
    RequestState* r = it.request;
    const int32_t row = it.row;
    batch->owners.push_back(r);
    batch->rows.push_back(row);
    batch->inputs.push_back(&r->sequences[static_cast<size_t>(row)]);
    batch->queue_us.push_back(now_us - it.enqueue_us);
    if (id == r->first_queued) {
      // The run of r's queued items now starts at the next one, if it is r's.
      const BatchQueue::ItemId next = queue_.Next(id);
      r->first_queued = (next != BatchQueue::kNone && queue_.item(next).request == r)
                            ? next
                            : BatchQueue::kNone;
    }
    queue_.Remove(id);
    ++r->in_flight;
    if (r->queued == static_cast<int32_t>(r->sequences.size())) {
      started_queued_ += r->queued;  // its first row taken: it has started
    }
    --started_queued_;
    if (--r->queued == 0) UnlinkQueued(r);
    if (r->last_taken_batch != batch->id) {
      r->last_taken_batch = batch->id;
      ++r->timings.num_batches;
      r->timings.queue_us = now_us - r->enqueue_us;
      ++batch->requests;
    }
  }
  if (decision.passed_over != BatchQueue::kNone) queue_.MarkPassedOver(decision.passed_over);
}

absl::Status BatchScheduler::ScatterRows(const Batch& batch, const EmbeddingMatrix& result,
                                         int64_t dimension) {
  const int64_t n = static_cast<int64_t>(batch.size());
  if (result.rows != n || result.dim != dimension ||
      result.values.size() != static_cast<size_t>(n * dimension)) {
    return absl::InternalError(absl::StrCat(
        "backend returned a ", result.rows, " x ", result.dim, " matrix (", result.values.size(),
        " values) for a batch of ", n, " sequences; expected ", n, " x ", dimension));
  }
  const size_t bytes = static_cast<size_t>(dimension) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    RequestState* r = batch.owners[static_cast<size_t>(i)];
    std::memcpy(r->result.MutableRow(batch.rows[static_cast<size_t>(i)]), result.Row(i), bytes);
  }
  return absl::OkStatus();
}

void BatchScheduler::CompleteBatch(Batch* batch, const absl::Status& status, int64_t backend_us,
                                   std::vector<Completion>* ready) {
  for (size_t i = 0; i < batch->size(); ++i) {
    RequestState* r = batch->owners[i];
    --r->in_flight;
    if (r->last_completed_batch != batch->id) {
      r->last_completed_batch = batch->id;
      r->timings.inference_us += backend_us;
    }
    if (!r->finished) {
      if (status.ok()) {
        if (--r->pending == 0) {
          r->finished = true;
          ready->push_back(Completion{std::move(r->done), std::move(r->result), r->timings});
        }
      } else {
        Fail(r, status, ready);
      }
    }
    MaybeFree(r);  // at its last item in flight: no later item of this batch is r's
  }
  batch->owners.clear();
}

void BatchScheduler::FailAllQueued(const absl::Status& status, std::vector<Completion>* ready,
                                   std::vector<std::pair<absl::StatusCode, int32_t>>* dropped) {
  while (queued_head_ != nullptr) {
    RequestState* r = queued_head_;
    if (dropped != nullptr) dropped->emplace_back(status.code(), r->queued);
    Fail(r, status, ready);  // unlinks r
    MaybeFree(r);
  }
}

}  // namespace batching_internal
}  // namespace embedserve
