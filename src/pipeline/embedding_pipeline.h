// The request lifecycle shared by every front door (gRPC, HTTP): validation (serving,
// list size, UTF-8, length with truncate=false), tokenizing, usage, the deadline and
// cancellation, hand-off to the Batcher, normalising and the cosine, and the per-request
// log line. Transport-free: a front door decodes its wire format into texts and options,
// calls Embed / Similarity / Tokenize, and encodes the result its callback receives
// (request -> [tokenize -> queue] -> batch -> forward -> pool -> [normalize] -> reply).
// Thread-safe: every method may be called from any thread.
#ifndef EMBEDSERVE_PIPELINE_EMBEDDING_PIPELINE_H_
#define EMBEDSERVE_PIPELINE_EMBEDDING_PIPELINE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "embedserve/common/token_ids.h"
#include "embedserve/model/backend.h"
#include "embedserve/model/embedding_matrix.h"

namespace embedserve {

class Batcher;
class Clock;
class ServerMetrics;
class Tokenizer;

// What the caller asks of one request.
struct RequestOptions {
  std::optional<bool> normalize;  // unset: as the model folder says (2_Normalize)
  bool truncate = true;           // false: a text over max_seq_length is INVALID_ARGUMENT
  // How errors name the request's list ("texts" -> "texts[3]: invalid UTF-8 ...").
  std::string list_name = "texts";
  // BatchRequest::queue_percent: the share of the batch queue this request may fill when
  // it is admitted (EmbedStream: server.stream_queue_percent).
  int32_t queue_percent = 100;
};

// The call around one request: when it must end and whether its caller is gone.
struct CallControl {
  int64_t deadline_us = 0;  // Clock time; 0 = none. Passed before queueing: DEADLINE_EXCEEDED
  // May be empty. Polled by the batcher under its lock until the request's texts are
  // batched: must be cheap, thread-safe and must not block.
  std::function<bool()> is_cancelled;
  std::string id;  // the caller's request id, for the log line only
};

// Per-stage server times of one request, microseconds.
struct StageTimings {
  int64_t tokenize_us = 0;
  int64_t queue_us = 0;
  int64_t inference_us = 0;
  int64_t total_us = 0;
};

// What Embed's callback receives. `prompt_tokens` is set once the texts are tokenized,
// also when a later step fails; `embeddings` and `timings` only on success.
struct EmbedResult {
  absl::Status status;
  EmbeddingMatrix embeddings;  // one row per text, in order, normalised as asked
  int64_t prompt_tokens = 0;
  StageTimings timings;
};

struct SimilarityResult {
  absl::Status status;
  std::vector<float> scores;  // one cosine per pair, in order
  int64_t prompt_tokens = 0;
  StageTimings timings;
};

struct TokenizeResult {
  absl::Status status;
  std::vector<TokenIds> tokens;  // one per text, [CLS]/[SEP] included; empty on failure
  int64_t prompt_tokens = 0;
};

using EmbedCallback = std::function<void(EmbedResult)>;
using SimilarityCallback = std::function<void(SimilarityResult)>;

// The served model as the front doors describe it (GetModelInfo, GET /info).
struct PipelineModel {
  BackendInfo backend;         // as loaded
  std::string name;            // the config's model.name, else the folder's own
  int64_t max_seq_length = 0;  // effective: the config's when set, else the backend's
  int64_t vocab_size = 0;
  int32_t cls_id = -1;  // [CLS], [SEP]: the special tokens Tokenize adds
  int32_t sep_id = -1;
};

class EmbeddingPipeline {
 public:
  struct Options {
    // Most texts (or pairs) per request; more is INVALID_ARGUMENT.
    int max_texts_per_request = 256;
    // Tokens per text, [CLS]/[SEP] included; 0 = the backend's max_seq_length. Lower
    // than the backend's only.
    int64_t max_seq_length = 0;
    // Reported as the model's name instead of the folder's own when set (model.name).
    std::string model_name;
    // Log one debug line per request.
    bool log_requests = false;

    absl::Status Validate() const;
  };

  // No model attached: every call ends UNAVAILABLE until AttachModel() and
  // SetServing(true). `metrics` (may be null) and `clock` (null: the real clock) must
  // outlive the pipeline.
  static absl::StatusOr<std::unique_ptr<EmbeddingPipeline>> Create(const Options& options,
                                                                   ServerMetrics* metrics,
                                                                   Clock* clock = nullptr);
  ~EmbeddingPipeline();
  EmbeddingPipeline(const EmbeddingPipeline&) = delete;
  EmbeddingPipeline& operator=(const EmbeddingPipeline&) = delete;

  // All three must outlive every call. Call once. INVALID_ARGUMENT when
  // options.max_seq_length exceeds the backend's, or the effective one is < 2.
  absl::Status AttachModel(const Tokenizer* tokenizer, Backend* backend, Batcher* batcher);

  // While false (at the start, and from the beginning of shutdown) new calls end
  // UNAVAILABLE. Setting true needs an attached model.
  void SetServing(bool serving);
  bool serving() const { return serving_.load(std::memory_order_acquire); }
  // Null until AttachModel has succeeded.
  const PipelineModel* model() const;
  const Options& options() const { return options_; }
  Clock* clock() const { return clock_; }

  // Embeds `texts` (they need to live only until Embed returns). `done` runs exactly
  // once: inside Embed when the request fails before it is queued (not serving, list
  // size, queue full (checked before tokenizing, and again at the queue), UTF-8, too
  // long, deadline passed), else on a batcher worker.
  void Embed(absl::Span<const absl::string_view> texts, const RequestOptions& options,
             CallControl control, EmbedCallback done);
  // The same for token ids the caller tokenized: each sequence is checked against the
  // vocabulary and max_seq_length (cut to it when options.truncate).
  void EmbedTokens(std::vector<TokenIds> sequences, const RequestOptions& options,
                   CallControl control, EmbedCallback done);
  // Cosine of each pair (each distinct text is embedded once); errors name
  // "pairs[i].text_a" / "pairs[i].text_b". `options.normalize` is ignored.
  void Similarity(absl::Span<const std::pair<absl::string_view, absl::string_view>> pairs,
                  const RequestOptions& options, CallControl control, SimilarityCallback done);
  // Lock-free and cheap: whether the batch queue had room for `sequences` more at its
  // last change (false while no model is attached). For flow control of streams.
  bool QueueHasRoom(int64_t sequences, int32_t queue_percent = 100) const;

  // Tokenizes only (no queue): returns at once.
  TokenizeResult Tokenize(absl::Span<const absl::string_view> texts,
                          const RequestOptions& options, const CallControl& control);

  // Implementation details below.
  struct Runtime;

 private:
  EmbeddingPipeline(const Options& options, ServerMetrics* metrics, Clock* clock);
  const Runtime* runtime() const;  // null until AttachModel
  // Serving, attached, and 1..max_texts_per_request entries in `list_name`.
  absl::Status Admit(const std::string& list_name, size_t count) const;
  // Admit, then RESOURCE_EXHAUSTED when the batch queue has no room for `sequences`
  // now: under overload a request is refused before it is tokenized. `demand_key` as
  // BatchRequest's (a hash of the request's content).
  absl::Status AdmitToQueue(const std::string& list_name, int32_t queue_percent, size_t count,
                            size_t sequences, uint64_t demand_key) const;
  // Embed and EmbedTokens past their checks: usage, deadline, queue, normalise.
  void Queue(std::vector<TokenIds> sequences, uint64_t demand_key, const RequestOptions& options,
             CallControl control, EmbedCallback done, int64_t start_us, int64_t tokenize_us);
  // Answers an Embed that failed before it was queued (and logs it).
  void EmbedFailed(const CallControl& control, size_t num_texts, absl::Status status,
                   const EmbedCallback& done) const;

  const Options options_;
  ServerMetrics* const metrics_;
  Clock* const clock_;
  std::unique_ptr<Runtime> runtime_;
  std::atomic<bool> attached_{false};
  std::atomic<bool> serving_{false};
};

// UNAVAILABLE "the server is not serving (...)": what every front door answers while the
// model loads or the server shuts down.
absl::Status NotServingError();

}  // namespace embedserve

#endif  // EMBEDSERVE_PIPELINE_EMBEDDING_PIPELINE_H_
