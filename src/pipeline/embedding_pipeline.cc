#include "pipeline/embedding_pipeline.h"

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "embedserve/batching/batcher.h"
#include "embedserve/batching/clock.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/server/metrics.h"
#include "embedserve/tokenizer/tokenizer.h"

namespace embedserve {

struct EmbeddingPipeline::Runtime {
  const Tokenizer* tokenizer = nullptr;
  Batcher* batcher = nullptr;
  PipelineModel model;
};

namespace {

const char* Verb(bool ok) { return ok ? "ok" : "failed"; }

// Tokenizes `text` (named `name` in errors, e.g. "texts[3]").
absl::StatusOr<TokenIds> EncodeOne(const Tokenizer& tokenizer, int64_t max_seq_length,
                                   absl::string_view text, bool truncate,
                                   const std::string& name) {
  auto encoding = tokenizer.Encode(text, max_seq_length);
  if (!encoding.ok()) {
    return absl::Status(encoding.status().code(),
                        absl::StrCat(name, ": ", encoding.status().message()));
  }
  if (!truncate && encoding->untruncated_length > max_seq_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " has ", encoding->untruncated_length, " tokens, more than max_seq_length ",
        max_seq_length, "; shorten it or leave truncate unset (true)"));
  }
  return std::move(encoding->ids);
}

// The state of one queued request, shared by its `done` and by the submitter (which
// answers itself when Submit fails, since `done` then never runs).
template <typename Callback>
struct QueuedCall {
  Callback done;
  int64_t start_us = 0;
  int64_t tokenize_us = 0;
  int64_t tokens = 0;
};

}  // namespace

absl::Status NotServingError() {
  return absl::UnavailableError(
      "the server is not serving (the model is loading or the server is shutting down); "
      "retry later or on another replica");
}

absl::Status EmbeddingPipeline::Options::Validate() const {
  if (max_texts_per_request < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.max_texts_per_request must be >= 1; was ", max_texts_per_request));
  }
  if (max_seq_length < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.max_seq_length must be >= 0; was ", max_seq_length));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EmbeddingPipeline>> EmbeddingPipeline::Create(
    const Options& options, ServerMetrics* metrics, Clock* clock) {
  ES_RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<EmbeddingPipeline>(
      new EmbeddingPipeline(options, metrics, clock == nullptr ? RealClock() : clock));
}

EmbeddingPipeline::EmbeddingPipeline(const Options& options, ServerMetrics* metrics,
                                     Clock* clock)
    : options_(options), metrics_(metrics), clock_(clock) {}

EmbeddingPipeline::~EmbeddingPipeline() = default;

const EmbeddingPipeline::Runtime* EmbeddingPipeline::runtime() const {
  return attached_.load(std::memory_order_acquire) ? runtime_.get() : nullptr;
}

const PipelineModel* EmbeddingPipeline::model() const {
  const Runtime* rt = runtime();
  return rt == nullptr ? nullptr : &rt->model;
}

absl::Status EmbeddingPipeline::AttachModel(const Tokenizer* tokenizer, Backend* backend,
                                            Batcher* batcher) {
  if (tokenizer == nullptr || backend == nullptr || batcher == nullptr) {
    return absl::InvalidArgumentError("AttachModel needs a tokenizer, a backend and a batcher");
  }
  if (attached_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("AttachModel was already called");
  }
  const BackendInfo& info = backend->Info();
  auto rt = std::make_unique<Runtime>();
  rt->tokenizer = tokenizer;
  rt->batcher = batcher;
  PipelineModel& m = rt->model;
  m.backend = info;
  m.name = options_.model_name.empty() ? info.model_name : options_.model_name;
  m.vocab_size = tokenizer->vocab_size();
  m.cls_id = tokenizer->cls_id();
  m.sep_id = tokenizer->sep_id();
  m.max_seq_length = info.max_seq_length;
  if (options_.max_seq_length > 0) {
    if (info.max_seq_length > 0 && options_.max_seq_length > info.max_seq_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.max_seq_length must be <= the model's ", info.max_seq_length, "; was ",
          options_.max_seq_length));
    }
    m.max_seq_length = options_.max_seq_length;
  }
  if (m.max_seq_length < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the model's max_seq_length must be >= 2 ([CLS] and [SEP]); was ", m.max_seq_length));
  }
  runtime_ = std::move(rt);
  attached_.store(true, std::memory_order_release);
  return absl::OkStatus();
}

void EmbeddingPipeline::SetServing(bool serving) {
  if (serving && runtime() == nullptr) return;  // nothing to serve yet
  serving_.store(serving, std::memory_order_release);
}

absl::Status EmbeddingPipeline::Admit(const std::string& list_name, size_t count) const {
  if (runtime() == nullptr || !serving()) return NotServingError();
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(list_name, " must hold at least one entry; was empty"));
  }
  if (count > static_cast<size_t>(options_.max_texts_per_request)) {
    return absl::InvalidArgumentError(absl::StrCat(
        list_name, " holds ", count, " entries, more than the limit of ",
        options_.max_texts_per_request,
        " per request (server.max_texts_per_request); split the request"));
  }
  return absl::OkStatus();
}

absl::Status EmbeddingPipeline::AdmitToQueue(const std::string& list_name,
                                             int32_t queue_percent, size_t count,
                                             size_t sequences, uint64_t demand_key) const {
  ES_RETURN_IF_ERROR(Admit(list_name, count));
  return runtime()->batcher->CheckRoom(static_cast<int64_t>(sequences), queue_percent,
                                       demand_key);
}

bool EmbeddingPipeline::QueueHasRoom(int64_t sequences, int32_t queue_percent) const {
  const Runtime* rt = runtime();
  return rt != nullptr && rt->batcher->CheckRoom(sequences, queue_percent).ok();
}

namespace {

// BatchRequest::demand_key: the same for a request sent again with the same content
// (never 0, which means unknown).
template <typename T>
uint64_t DemandKey(absl::Span<const T> content) {
  const uint64_t key = absl::HashOf(content);
  return key == 0 ? 1 : key;
}

// Records the tokenize stage and checks the deadline: the step between tokenize and queue.
absl::Status PrepareToQueue(ServerMetrics* metrics, const Clock& clock, int64_t tokenize_us,
                            int64_t tokens, const CallControl& control) {
  if (metrics != nullptr) metrics->OnTokenize(tokenize_us, tokens);
  if (control.deadline_us != 0 && clock.NowMicros() >= control.deadline_us) {
    return absl::DeadlineExceededError("deadline passed before queueing");
  }
  return absl::OkStatus();
}

StageTimings Timings(int64_t tokenize_us, const RequestTimings& t, int64_t total_us) {
  StageTimings out;
  out.tokenize_us = tokenize_us;
  out.queue_us = t.queue_us;
  out.inference_us = t.inference_us;
  out.total_us = total_us;
  return out;
}

}  // namespace

void EmbeddingPipeline::Embed(absl::Span<const absl::string_view> texts,
                              const RequestOptions& options, CallControl control,
                              EmbedCallback done) {
  const int64_t start_us = clock_->NowMicros();
  const uint64_t demand_key = DemandKey(texts);
  if (absl::Status s = AdmitToQueue(options.list_name, options.queue_percent, texts.size(),
                                    texts.size(), demand_key);
      !s.ok()) {
    return EmbedFailed(control, texts.size(), std::move(s), done);
  }
  const Runtime& rt = *runtime();
  std::vector<TokenIds> sequences;
  sequences.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = EncodeOne(*rt.tokenizer, rt.model.max_seq_length, texts[i], options.truncate,
                         absl::StrCat(options.list_name, "[", i, "]"));
    if (!ids.ok()) return EmbedFailed(control, texts.size(), ids.status(), done);
    sequences.push_back(*std::move(ids));
  }
  Queue(std::move(sequences), demand_key, options, std::move(control), std::move(done),
        start_us, clock_->NowMicros() - start_us);
}

void EmbeddingPipeline::EmbedTokens(std::vector<TokenIds> sequences,
                                    const RequestOptions& options, CallControl control,
                                    EmbedCallback done) {
  const int64_t start_us = clock_->NowMicros();
  const uint64_t demand_key = DemandKey(absl::MakeConstSpan(sequences));
  if (absl::Status s = AdmitToQueue(options.list_name, options.queue_percent, sequences.size(),
                                    sequences.size(), demand_key);
      !s.ok()) {
    return EmbedFailed(control, sequences.size(), std::move(s), done);
  }
  const Runtime& rt = *runtime();
  for (size_t i = 0; i < sequences.size(); ++i) {
    TokenIds& ids = sequences[i];
    const auto name = [&] { return absl::StrCat(options.list_name, "[", i, "]"); };
    if (ids.empty()) {
      return EmbedFailed(control, sequences.size(),
                         absl::InvalidArgumentError(absl::StrCat(name(), " holds no token ids")),
                         done);
    }
    for (size_t j = 0; j < ids.size(); ++j) {
      if (ids[j] < 0 || ids[j] >= rt.model.vocab_size) {
        return EmbedFailed(control, sequences.size(),
                           absl::InvalidArgumentError(absl::StrCat(
                               name(), "[", j, "] is token id ", ids[j],
                               ", outside the vocabulary [0, ", rt.model.vocab_size, ")")),
                           done);
      }
    }
    if (static_cast<int64_t>(ids.size()) > rt.model.max_seq_length) {
      if (!options.truncate) {
        return EmbedFailed(control, sequences.size(),
                           absl::InvalidArgumentError(absl::StrCat(
                               name(), " has ", ids.size(), " tokens, more than max_seq_length ",
                               rt.model.max_seq_length,
                               "; shorten it or leave truncate unset (true)")),
                           done);
      }
      ids.resize(static_cast<size_t>(rt.model.max_seq_length));
    }
  }
  Queue(std::move(sequences), demand_key, options, std::move(control), std::move(done),
        start_us, clock_->NowMicros() - start_us);
}

void EmbeddingPipeline::EmbedFailed(const CallControl& control, size_t num_texts,
                                    absl::Status status, const EmbedCallback& done) const {
  if (options_.log_requests) {
    spdlog::debug("Embed id='{}' texts={} -> failed {}", control.id, num_texts,
                  status.ToString());
  }
  EmbedResult r;
  r.status = std::move(status);
  done(std::move(r));
}

void EmbeddingPipeline::Queue(std::vector<TokenIds> sequences, uint64_t demand_key,
                              const RequestOptions& options, CallControl control,
                              EmbedCallback done, int64_t start_us, int64_t tokenize_us) {
  const Runtime& rt = *runtime();
  auto call = std::make_shared<QueuedCall<EmbedCallback>>();
  call->done = std::move(done);
  call->start_us = start_us;
  call->tokenize_us = tokenize_us;
  for (const TokenIds& ids : sequences) call->tokens += static_cast<int64_t>(ids.size());
  const size_t num_texts = sequences.size();
  auto finish = [this, num_texts, id = control.id](QueuedCall<EmbedCallback>& c,
                                                   EmbedResult r) {
    r.prompt_tokens = c.tokens;
    if (options_.log_requests) {
      spdlog::debug("Embed id='{}' texts={} -> {} {} (queue {} us, inference {} us)", id,
                    num_texts, Verb(r.status.ok()), r.status.ToString(), r.timings.queue_us,
                    r.timings.inference_us);
    }
    c.done(std::move(r));
  };
  if (absl::Status s =
          PrepareToQueue(metrics_, *clock_, tokenize_us, call->tokens, control);
      !s.ok()) {
    EmbedResult r;
    r.status = std::move(s);
    return finish(*call, std::move(r));
  }
  const bool normalize = options.normalize.value_or(rt.model.backend.normalize);
  BatchRequest batch;
  batch.sequences = std::move(sequences);
  batch.demand_key = demand_key;
  batch.deadline_us = control.deadline_us;
  batch.is_cancelled = std::move(control.is_cancelled);
  batch.queue_percent = options.queue_percent;
  batch.done = [this, call, normalize, finish](absl::StatusOr<EmbeddingMatrix> result,
                                               const RequestTimings& timings) {
    if (metrics_ != nullptr) metrics_->OnQueueAndInference(timings.queue_us, timings.inference_us);
    EmbedResult r;
    r.status = result.status();
    if (result.ok()) {
      r.embeddings = *std::move(result);
      if (normalize) {
        for (int64_t i = 0; i < r.embeddings.rows; ++i) {
          L2NormalizeInPlace(r.embeddings.MutableRow(i), r.embeddings.dim);
        }
      }
      r.timings = Timings(call->tokenize_us, timings, clock_->NowMicros() - call->start_us);
    }
    finish(*call, std::move(r));
  };
  if (absl::Status s = rt.batcher->Submit(std::move(batch)); !s.ok()) {
    EmbedResult r;
    r.status = std::move(s);
    finish(*call, std::move(r));  // `done` will not run: answer here
  }
}

void EmbeddingPipeline::Similarity(
    absl::Span<const std::pair<absl::string_view, absl::string_view>> pairs,
    const RequestOptions& options, CallControl control, SimilarityCallback done) {
  const int64_t start_us = clock_->NowMicros();
  auto fail = [&](absl::Status s, int64_t tokens) {
    SimilarityResult r;
    r.status = std::move(s);
    r.prompt_tokens = tokens;
    if (options_.log_requests) {
      spdlog::debug("Similarity id='{}' pairs={} -> failed {}", control.id, pairs.size(),
                    r.status.ToString());
    }
    done(std::move(r));
  };
  if (absl::Status s = Admit("pairs", pairs.size()); !s.ok()) return fail(std::move(s), 0);
  const Runtime& rt = *runtime();
  // Each distinct text is embedded once: rows are assigned (a hash of each text) before
  // anything is tokenized, so the queue's room is checked for the real count and a
  // refused request costs no tokenization.
  struct FirstUse {
    absl::string_view text;
    size_t pair;
    bool is_b;
  };
  absl::flat_hash_map<absl::string_view, int32_t> row_of;
  std::vector<FirstUse> distinct;  // row -> where its text first appears
  auto pair_rows = std::make_shared<std::vector<std::pair<int32_t, int32_t>>>();
  pair_rows->reserve(pairs.size());
  auto row_for = [&](absl::string_view text, size_t pair, bool is_b) {
    const auto [it, added] = row_of.emplace(text, static_cast<int32_t>(distinct.size()));
    if (added) distinct.push_back({text, pair, is_b});
    return it->second;
  };
  for (size_t i = 0; i < pairs.size(); ++i) {
    const int32_t a = row_for(pairs[i].first, i, false);
    pair_rows->emplace_back(a, row_for(pairs[i].second, i, true));
  }
  const uint64_t demand_key = DemandKey(pairs);
  if (absl::Status s = rt.batcher->CheckRoom(static_cast<int64_t>(distinct.size()),
                                             options.queue_percent, demand_key);
      !s.ok()) {
    return fail(std::move(s), 0);
  }
  BatchRequest batch;
  batch.demand_key = demand_key;
  batch.sequences.reserve(distinct.size());
  int64_t tokens = 0;
  for (const FirstUse& use : distinct) {
    auto ids = EncodeOne(*rt.tokenizer, rt.model.max_seq_length, use.text, options.truncate,
                         absl::StrCat("pairs[", use.pair, "].", use.is_b ? "text_b" : "text_a"));
    if (!ids.ok()) return fail(ids.status(), 0);
    tokens += static_cast<int64_t>(ids->size());
    batch.sequences.push_back(*std::move(ids));
  }
  const int64_t tokenize_us = clock_->NowMicros() - start_us;
  if (absl::Status s = PrepareToQueue(metrics_, *clock_, tokenize_us, tokens, control);
      !s.ok()) {
    return fail(std::move(s), tokens);
  }
  auto call = std::make_shared<QueuedCall<SimilarityCallback>>();
  call->done = std::move(done);
  call->start_us = start_us;
  call->tokenize_us = tokenize_us;
  call->tokens = tokens;
  batch.deadline_us = control.deadline_us;
  batch.is_cancelled = std::move(control.is_cancelled);
  batch.queue_percent = options.queue_percent;
  const bool log = options_.log_requests;
  batch.done = [this, call, pair_rows, log, id = control.id](
                   absl::StatusOr<EmbeddingMatrix> result, const RequestTimings& timings) {
    if (metrics_ != nullptr) metrics_->OnQueueAndInference(timings.queue_us, timings.inference_us);
    SimilarityResult r;
    r.status = result.status();
    r.prompt_tokens = call->tokens;
    if (result.ok()) {
      r.scores.reserve(pair_rows->size());
      for (const auto& [a, b] : *pair_rows) {
        r.scores.push_back(Cosine(result->Row(a), result->Row(b), result->dim));
      }
      r.timings = Timings(call->tokenize_us, timings, clock_->NowMicros() - call->start_us);
    }
    if (log) {
      spdlog::debug("Similarity id='{}' pairs={} -> {} {}", id, pair_rows->size(),
                    Verb(r.status.ok()), r.status.ToString());
    }
    call->done(std::move(r));
  };
  if (absl::Status s = rt.batcher->Submit(std::move(batch)); !s.ok()) {
    SimilarityResult r;
    r.status = std::move(s);
    r.prompt_tokens = tokens;
    call->done(std::move(r));  // `done` will not run: answer here
  }
}

TokenizeResult EmbeddingPipeline::Tokenize(absl::Span<const absl::string_view> texts,
                                           const RequestOptions& options,
                                           const CallControl& control) {
  TokenizeResult r;
  r.status = Admit(options.list_name, texts.size());
  if (r.status.ok()) {
    const Runtime& rt = *runtime();
    r.tokens.reserve(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      auto ids = EncodeOne(*rt.tokenizer, rt.model.max_seq_length, texts[i], options.truncate,
                           absl::StrCat(options.list_name, "[", i, "]"));
      if (!ids.ok()) {
        r.status = ids.status();
        r.tokens.clear();
        r.prompt_tokens = 0;
        break;
      }
      r.prompt_tokens += static_cast<int64_t>(ids->size());
      r.tokens.push_back(*std::move(ids));
    }
  }
  if (options_.log_requests) {
    spdlog::debug("Tokenize id='{}' texts={} -> {} {}", control.id, texts.size(),
                  Verb(r.status.ok()), r.status.ToString());
  }
  return r;
}

}  // namespace embedserve
