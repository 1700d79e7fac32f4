#include "embedserve/server/embedding_service.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_writer.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "embedserve/batching/batcher.h"
#include "embedserve/batching/clock.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/model/backend.h"
#include "embedserve/model/embedding_matrix.h"
#include "embedserve/server/grpc_status.h"
#include "embedserve/server/metrics.h"
#include "embedserve/tokenizer/tokenizer.h"

namespace embedserve {

class EmbedStreamReactor;

struct EmbeddingService::Runtime {
  const Tokenizer* tokenizer = nullptr;
  Backend* backend = nullptr;
  Batcher* batcher = nullptr;
  int64_t max_seq_length = 0;  // effective
  int64_t dimension = 0;
  bool normalize_default = false;
  v1::ModelInfo model_info;

  // Open EmbedStream calls, so that shutdown can end idle ones.
  absl::Mutex streams_mu;
  absl::flat_hash_set<EmbedStreamReactor*> streams ABSL_GUARDED_BY(streams_mu);
};

namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

// Texts of one request, tokenized.
struct TokenizedTexts {
  std::vector<TokenIds> sequences;
  int64_t tokens = 0;
  int64_t tokenize_us = 0;
};

// "texts holds 0 texts" / count limits, for a repeated field named `field`.
absl::Status CheckCount(absl::string_view field, int count, int limit) {
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must hold at least one entry; was empty"));
  }
  if (count > limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " holds ", count, " entries, more than the limit of ", limit,
        " per request (server.max_texts_per_request); split the request"));
  }
  return absl::OkStatus();
}

// Tokenizes `text` (named `name` in errors, e.g. "texts[3]").
absl::StatusOr<TokenIds> EncodeOne(const EmbeddingService::Runtime& rt,
                                   absl::string_view text, bool truncate,
                                   const std::string& name) {
  auto encoding = rt.tokenizer->Encode(text, rt.max_seq_length);
  if (!encoding.ok()) {
    return absl::Status(encoding.status().code(),
                        absl::StrCat(name, ": ", encoding.status().message()));
  }
  if (!truncate && encoding->untruncated_length > rt.max_seq_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " has ", encoding->untruncated_length, " tokens, more than max_seq_length ",
        rt.max_seq_length, "; shorten it or leave truncate unset (true)"));
  }
  return std::move(encoding->ids);
}

int64_t DeadlineMicros(const CallbackServerContext* context, const Clock* clock,
                       bool* expired) {
  *expired = false;
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return 0;
  const auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(
                             deadline - std::chrono::system_clock::now())
                             .count();
  if (remaining <= 0) {
    *expired = true;
    return 0;
  }
  // Beyond a day is as good as none (and keeps the sum from overflowing).
  if (remaining > int64_t{86400} * 1000000) return 0;
  return clock->NowMicros() + remaining;
}

// The step between tokenize and queue, shared by Embed, Similarity and EmbedStream:
// records the tokenize time and token count, fills the reply's usage and gives the batch
// the call's deadline. DEADLINE_EXCEEDED when that has already passed (nothing is queued).
absl::Status PrepareToQueue(const CallbackServerContext* context, const Clock* clock,
                            ServerMetrics* metrics, int64_t tokenize_us, int64_t tokens,
                            v1::Usage* usage, BatchRequest* batch) {
  if (metrics != nullptr) metrics->OnTokenize(tokenize_us, tokens);
  usage->set_prompt_tokens(tokens);
  usage->set_total_tokens(tokens);
  bool expired = false;
  batch->deadline_us = DeadlineMicros(context, clock, &expired);
  if (expired) return absl::DeadlineExceededError("deadline passed before queueing");
  return absl::OkStatus();
}

absl::Status NotReady() {
  return absl::UnavailableError(
      "the server is not serving (the model is loading or the server is shutting down); "
      "retry later or on another replica");
}

void FillTimings(int64_t tokenize_us, const RequestTimings& t, int64_t total_us,
                 v1::Timings* out) {
  out->set_tokenize_us(tokenize_us);
  out->set_queue_us(t.queue_us);
  out->set_inference_us(t.inference_us);
  out->set_total_us(total_us);
}

// Appends rows of `m` (normalised if asked) to `out`.
void AppendEmbeddings(EmbeddingMatrix* m, bool normalize,
                      google::protobuf::RepeatedPtrField<v1::Embedding>* out) {
  out->Reserve(static_cast<int>(m->rows));
  for (int64_t r = 0; r < m->rows; ++r) {
    float* row = m->MutableRow(r);
    if (normalize) L2NormalizeInPlace(row, m->dim);
    auto* values = out->Add()->mutable_values();
    values->Reserve(static_cast<int>(m->dim));
    values->Add(row, row + m->dim);
  }
}


// ---------------------------------------------------------------------------------
// Raw request parsing with precise UTF-8 errors.

enum class RequestKind { kTexts, kPairs };

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  size_t total = 0;
  for (const auto& s : slices) total += s.size();
  bytes.reserve(total);
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

// Walks the wire format of a request and checks every text field (texts[i], or
// pairs[i].text_a / text_b) and the id for valid UTF-8. Malformed wire data is left to
// the real parser.
absl::Status CheckUtf8Fields(absl::string_view bytes, RequestKind kind, int id_field,
                             std::string* id_out) {
  using WFL = google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  int index = 0;
  std::string value;
  absl::Status first_error;  // keep scanning after it, for the id
  while (const uint32_t tag = in.ReadTag()) {
    const int field = static_cast<int>(WFL::GetTagFieldNumber(tag));
    const bool text_like = WFL::GetTagWireType(tag) == WFL::WIRETYPE_LENGTH_DELIMITED &&
                           (field == 1 || field == id_field);
    if (!text_like) {
      if (!WFL::SkipField(&in, tag)) return first_error;
      continue;
    }
    uint32_t len = 0;
    if (!in.ReadVarint32(&len) || !in.ReadString(&value, static_cast<int>(len))) {
      return first_error;
    }
    if (field == id_field) {
      if (absl::Status s = Tokenizer::CheckUtf8(value); !s.ok()) {
        if (first_error.ok()) {
          first_error = absl::InvalidArgumentError(absl::StrCat("id: ", s.message()));
        }
        continue;
      }
      if (id_out != nullptr) *id_out = value;
      continue;
    }
    if (kind == RequestKind::kTexts) {
      absl::Status s = Tokenizer::CheckUtf8(value);
      if (!s.ok() && first_error.ok()) {
        first_error =
            absl::InvalidArgumentError(absl::StrCat("texts[", index, "]: ", s.message()));
      }
    } else {
      google::protobuf::io::CodedInputStream pair(
          reinterpret_cast<const uint8_t*>(value.data()), static_cast<int>(value.size()));
      std::string text;
      while (const uint32_t ptag = pair.ReadTag()) {
        const int pfield = static_cast<int>(WFL::GetTagFieldNumber(ptag));
        if (WFL::GetTagWireType(ptag) == WFL::WIRETYPE_LENGTH_DELIMITED &&
            (pfield == 1 || pfield == 2)) {
          uint32_t plen = 0;
          if (!pair.ReadVarint32(&plen) || !pair.ReadString(&text, static_cast<int>(plen))) break;
          absl::Status s = Tokenizer::CheckUtf8(text);
          if (!s.ok() && first_error.ok()) {
            first_error = absl::InvalidArgumentError(absl::StrCat(
                "pairs[", index, "].", pfield == 1 ? "text_a" : "text_b", ": ", s.message()));
          }
        } else if (!WFL::SkipField(&pair, ptag)) {
          break;
        }
      }
    }
    ++index;
  }
  return first_error;
}

// Parses a serialized request into `out`; INVALID_ARGUMENT naming the field and index
// for invalid UTF-8, or saying the bytes are not the expected message. On failure
// `*id_out` (nullable) gets the request id when it could be read.
absl::Status ParseRequest(const grpc::ByteBuffer& buffer, RequestKind kind, int id_field,
                          google::protobuf::Message* out, std::string* id_out = nullptr) {
  const std::string bytes = Flatten(buffer);
  ES_RETURN_IF_ERROR(CheckUtf8Fields(bytes, kind, id_field, id_out));
  if (!out->ParseFromString(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", out->GetTypeName(), " message"));
  }
  return absl::OkStatus();
}

// The request's list: its field name and its length.
std::pair<const char*, int> ListOf(const v1::EmbedRequest& r) { return {"texts", r.texts_size()}; }
std::pair<const char*, int> ListOf(const v1::TokenizeRequest& r) {
  return {"texts", r.texts_size()};
}
std::pair<const char*, int> ListOf(const v1::SimilarityRequest& r) {
  return {"pairs", r.pairs_size()};
}

// What every unary RPC checks first: `raw` parses into `request` (ParseRequest), a model
// is attached and serving (`rt`, `serving`), and the request's list holds 1..max_items.
template <typename Request>
absl::Status AdmitUnary(const grpc::ByteBuffer& raw, RequestKind kind, int id_field,
                        const EmbeddingService::Runtime* rt, bool serving, int max_items,
                        Request* request) {
  ES_RETURN_IF_ERROR(ParseRequest(raw, kind, id_field, request));
  if (rt == nullptr || !serving) return NotReady();
  const auto [name, count] = ListOf(*request);
  return CheckCount(name, count, max_items);
}

// One unary call: owns its parsed request and its response, and serializes the
// response into gRPC's raw buffer when it replies. Deletes itself when gRPC is done.
class UnaryCallBase : public grpc::ServerUnaryReactor {
 public:
  virtual void Reply(const grpc::Status& status) = 0;
  void OnDone() override { delete this; }
};

template <typename Request, typename Response>
class UnaryCall final : public UnaryCallBase {
 public:
  explicit UnaryCall(grpc::ByteBuffer* out) : out_(out) {}
  void Reply(const grpc::Status& status) override {
    if (status.ok()) {
      bool own_buffer = false;
      const grpc::Status s =
          grpc::SerializationTraits<Response>::Serialize(response, out_, &own_buffer);
      if (!s.ok()) {
        Finish(s);
        return;
      }
    }
    Finish(status);
  }
  Request request;
  Response response;

 private:
  grpc::ByteBuffer* const out_;
};

}  // namespace

// ---------------------------------------------------------------------------------
// EmbedStream: one reactor per stream. Reads requests one after another, hands each to
// the batcher and writes responses as they complete (out of order), one write at a time
// from a queue. Finishes once the client half-closed (or the server drains) and every
// accepted request has been answered.
class EmbedStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  EmbedStreamReactor(EmbeddingService* service, const EmbeddingService::Runtime* rt,
                     CallbackServerContext* context, ServerMetrics* metrics, Clock* clock,
                     int max_texts, int max_backlog)
      : service_(service),
        rt_(rt),
        context_(context),
        metrics_(metrics),
        clock_(clock),
        max_texts_(max_texts),
        max_backlog_(max_backlog) {
    if (rt_ == nullptr) {
      Finish(ToGrpcStatus(NotReady()));
      return;
    }
    {
      auto* mrt = const_cast<EmbeddingService::Runtime*>(rt_);
      absl::MutexLock lock(&mrt->streams_mu);
      mrt->streams.insert(this);
      registered_ = true;
    }
    if (!service_->serving()) {
      Drain();  // finishes at once: nothing accepted yet
      return;
    }
    absl::MutexLock lock(&mu_);
    if (!finished_) StartRead(&raw_request_);  // a shutdown may have drained it already
  }

  // Stops reading: finish as soon as the accepted requests are answered.
  void Drain() {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      draining_ = true;
      finish = ShouldFinishLocked();
    }
    if (finish) Finish(final_status_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      {
        absl::MutexLock lock(&mu_);
        if (finished_) return;  // drained while this message was on its way
        in_handler_ = true;
      }
      HandleRequest();
      raw_request_.Clear();
    }
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      in_handler_ = false;
      if (!ok) client_closed_ = true;
      if (!ok || draining_) reads_done_ = true;
      if (!reads_done_ && !finished_) {
        if (BacklogLocked() < max_backlog_) {
          // Under the lock so that it never follows Finish (gRPC runs the completion
          // later, never inside StartRead).
          StartRead(&raw_request_);
        } else {
          read_paused_ = true;  // resumed by MaybeResumeReadLocked as replies drain
        }
      } else {
        finish = ShouldFinishLocked();
      }
    }
    if (finish) Finish(final_status_);
  }

  void OnWriteDone(bool ok) override {
    const grpc::ByteBuffer* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) write_failed_ = true;  // client gone: drop what is left
      if (write_failed_) queue_.clear();
      MaybeResumeReadLocked();
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        finish = ShouldFinishLocked();
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish) Finish(final_status_);
  }

  void OnDone() override {
    if (registered_) {
      auto* mrt = const_cast<EmbeddingService::Runtime*>(rt_);
      absl::MutexLock lock(&mrt->streams_mu);
      mrt->streams.erase(this);
    }
    delete this;
  }

 private:
  void HandleRequest() {
    const int64_t start_us = clock_->NowMicros();
    auto response = std::make_unique<v1::EmbedResponse>();
    v1::EmbedRequest request;
    std::string id;
    if (absl::Status parsed = ParseRequest(raw_request_, RequestKind::kTexts, 4, &request, &id);
        !parsed.ok()) {
      response->set_id(id);  // echoed when readable, so the client can match the error
      Answer(std::move(response), parsed, start_us);
      return;
    }
    response->set_id(request.id());
    if (!service_->serving()) {
      Answer(std::move(response), NotReady(), start_us);
      return;
    }
    absl::Status status = CheckCount("texts", request.texts_size(), max_texts_);
    TokenizedTexts tokenized;
    const bool truncate = !request.has_truncate() || request.truncate();
    for (int i = 0; status.ok() && i < request.texts_size(); ++i) {
      auto ids = EncodeOne(*rt_, request.texts(i), truncate, absl::StrCat("texts[", i, "]"));
      if (!ids.ok()) {
        status = ids.status();
        break;
      }
      tokenized.tokens += static_cast<int64_t>(ids->size());
      tokenized.sequences.push_back(*std::move(ids));
    }
    tokenized.tokenize_us = clock_->NowMicros() - start_us;
    if (!status.ok()) {
      Answer(std::move(response), status, start_us);
      return;
    }
    BatchRequest batch;
    status = PrepareToQueue(context_, clock_, metrics_, tokenized.tokenize_us, tokenized.tokens,
                            response->mutable_usage(), &batch);
    if (!status.ok()) {
      Answer(std::move(response), status, start_us);
      return;
    }
    batch.sequences = std::move(tokenized.sequences);
    const bool normalize =
        request.has_normalize() ? request.normalize() : rt_->normalize_default;
    const int64_t tokenize_us = tokenized.tokenize_us;
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
    }
    v1::EmbedResponse* raw = response.release();
    batch.done = [this, raw, normalize, tokenize_us, start_us](
                     absl::StatusOr<EmbeddingMatrix> result, const RequestTimings& timings) {
      std::unique_ptr<v1::EmbedResponse> r(raw);
      if (metrics_ != nullptr) {
        metrics_->OnQueueAndInference(timings.queue_us, timings.inference_us);
      }
      if (result.ok()) {
        AppendEmbeddings(&*result, normalize, r->mutable_embeddings());
        FillTimings(tokenize_us, timings, clock_->NowMicros() - start_us,
                    r->mutable_timings());
      }
      Answer(std::move(r), result.status(), start_us, /*was_pending=*/true);
    };
    const absl::Status submitted = rt_->batcher->Submit(std::move(batch));
    if (!submitted.ok()) {
      // `done` will not run: take the response back.
      Answer(std::unique_ptr<v1::EmbedResponse>(raw), submitted, start_us,
             /*was_pending=*/true);
    }
  }

  // Queues the response (with `error` set when !status.ok()).
  void Answer(std::unique_ptr<v1::EmbedResponse> response, const absl::Status& status,
              int64_t start_us, bool was_pending = false) {
    const grpc::Status g = ToGrpcStatus(status);
    if (!status.ok()) {
      response->clear_embeddings();
      response->clear_timings();
      response->mutable_error()->set_code(static_cast<int32_t>(g.error_code()));
      response->mutable_error()->set_message(g.error_message());
    }
    if (metrics_ != nullptr) {
      metrics_->OnRequest(RpcMethod::kEmbedStream, static_cast<int>(g.error_code()),
                          clock_->NowMicros() - start_us);
    }
    grpc::ByteBuffer serialized;
    bool own_buffer = false;
    grpc::SerializationTraits<v1::EmbedResponse>::Serialize(*response, &serialized, &own_buffer);
    const grpc::ByteBuffer* to_write = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      if (was_pending) --pending_;
      if (write_failed_) MaybeResumeReadLocked();
      if (!write_failed_) {
        queue_.push_back(std::move(serialized));
        if (!writing_) {
          writing_ = true;
          to_write = &queue_.front();
        }
      }
      if (to_write == nullptr) finish = ShouldFinishLocked();
    }
    if (to_write != nullptr) StartWrite(to_write);
    if (finish) Finish(final_status_);
  }

  // Messages taken in and not yet written.
  int64_t BacklogLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_ + static_cast<int64_t>(queue_.size());
  }

  void MaybeResumeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (read_paused_ && !reads_done_ && !draining_ && !finished_ &&
        BacklogLocked() < max_backlog_) {
      read_paused_ = false;
      StartRead(&raw_request_);
    }
  }

  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return false;
    if ((reads_done_ || draining_) && pending_ == 0 && !writing_ && !in_handler_) {
      finished_ = true;
      // Ended by the server (shutdown) rather than by the client's half-close: say so,
      // so that the client resends what it has not got a reply for elsewhere.
      if (!client_closed_) {
        final_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     "the server is shutting down; every request it read "
                                     "was answered on this stream");
      }
      return true;
    }
    return false;
  }

  EmbeddingService* const service_;
  const EmbeddingService::Runtime* const rt_;
  CallbackServerContext* const context_;
  ServerMetrics* const metrics_;
  Clock* const clock_;
  const int max_texts_;
  const int64_t max_backlog_;
  bool registered_ = false;
  grpc::ByteBuffer raw_request_;  // the read in progress (one at a time)

  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);  // front is being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool in_handler_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool client_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;  // no read outstanding: backlog full
  grpc::Status final_status_;  // written once under mu_ before Finish
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;  // submitted, `done` not yet run
};

// ---------------------------------------------------------------------------------

absl::Status EmbeddingService::Options::Validate() const {
  if (max_texts_per_request < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.max_texts_per_request must be >= 1; was ", max_texts_per_request));
  }
  if (max_stream_backlog < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.max_stream_backlog must be >= 1; was ", max_stream_backlog));
  }
  if (max_seq_length < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.max_seq_length must be >= 0; was ", max_seq_length));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EmbeddingService>> EmbeddingService::Create(
    const Options& options, ServerMetrics* metrics, Clock* clock) {
  ES_RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<EmbeddingService>(
      new EmbeddingService(options, metrics, clock == nullptr ? RealClock() : clock));
}

EmbeddingService::EmbeddingService(const Options& options, ServerMetrics* metrics,
                                   Clock* clock)
    : options_(options), metrics_(metrics), clock_(clock) {}

EmbeddingService::~EmbeddingService() = default;

const EmbeddingService::Runtime* EmbeddingService::runtime() const {
  return attached_.load(std::memory_order_acquire) ? runtime_.get() : nullptr;
}

absl::Status EmbeddingService::AttachModel(const Tokenizer* tokenizer, Backend* backend,
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
  rt->backend = backend;
  rt->batcher = batcher;
  rt->dimension = info.dimension;
  rt->normalize_default = info.normalize;
  rt->max_seq_length = info.max_seq_length;
  if (options_.max_seq_length > 0) {
    if (info.max_seq_length > 0 && options_.max_seq_length > info.max_seq_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.max_seq_length must be <= the model's ", info.max_seq_length, "; was ",
          options_.max_seq_length));
    }
    rt->max_seq_length = options_.max_seq_length;
  }
  if (rt->max_seq_length < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the model's max_seq_length must be >= 2 ([CLS] and [SEP]); was ",
        rt->max_seq_length));
  }
  v1::ModelInfo& mi = rt->model_info;
  mi.set_name(options_.model_name.empty() ? info.model_name : options_.model_name);
  mi.set_path(info.model_path);
  mi.set_synthetic(info.synthetic);
  mi.set_dimension(static_cast<int32_t>(info.dimension));
  mi.set_max_seq_length(static_cast<int32_t>(rt->max_seq_length));
  mi.set_pooling(info.pooling);
  mi.set_normalize(info.normalize);
  mi.set_device(info.device);
  mi.set_precision(info.precision);
  *mi.mutable_batching() = options_.batching_info;
  mi.set_max_texts_per_request(options_.max_texts_per_request);
  for (const auto& [k, v] : options_.versions) (*mi.mutable_versions())[k] = v;
  if (!info.runtime.empty()) (*mi.mutable_versions())["runtime"] = info.runtime;
  runtime_ = std::move(rt);
  attached_.store(true, std::memory_order_release);
  return absl::OkStatus();
}

void EmbeddingService::SetServing(bool serving) {
  if (serving && runtime() == nullptr) return;  // nothing to serve yet
  serving_.store(serving, std::memory_order_release);
  if (serving) return;
  Runtime* rt = runtime_.get();
  if (rt == nullptr || !attached_.load(std::memory_order_acquire)) return;
  std::vector<EmbedStreamReactor*> streams;
  {
    absl::MutexLock lock(&rt->streams_mu);
    streams.assign(rt->streams.begin(), rt->streams.end());
    // Drain under the lock: a reactor erases itself in OnDone under this lock, so none
    // of these can be deleted meanwhile.
    for (EmbedStreamReactor* s : streams) s->Drain();
  }
}

// Finishes a unary call and counts it.
namespace {
void FinishUnary(UnaryCallBase* call, ServerMetrics* metrics, RpcMethod method,
                 const absl::Status& status, int64_t elapsed_us) {
  const grpc::Status g = ToGrpcStatus(status);
  if (metrics != nullptr) {
    metrics->OnRequest(method, static_cast<int>(g.error_code()), elapsed_us);
  }
  call->Reply(g);
}
}  // namespace

ServerUnaryReactor* EmbeddingService::Embed(CallbackServerContext* context,
                                            const grpc::ByteBuffer* raw_request,
                                            grpc::ByteBuffer* raw_response) {
  auto* reactor = new UnaryCall<v1::EmbedRequest, v1::EmbedResponse>(raw_response);
  const v1::EmbedRequest* request = &reactor->request;
  v1::EmbedResponse* response = &reactor->response;
  const int64_t start_us = clock_->NowMicros();
  auto fail = [&](const absl::Status& s) {
    if (options_.log_requests) {
      spdlog::debug("Embed id='{}' texts={} -> {}", request->id(), request->texts_size(),
                    s.ToString());
    }
    FinishUnary(reactor, metrics_, RpcMethod::kEmbed, s, clock_->NowMicros() - start_us);
    return reactor;
  };
  const Runtime* rt = runtime();
  if (absl::Status s = AdmitUnary(*raw_request, RequestKind::kTexts, 4, rt, serving(),
                                  options_.max_texts_per_request, &reactor->request);
      !s.ok()) {
    return fail(s);
  }
  response->set_id(request->id());
  const bool truncate = !request->has_truncate() || request->truncate();
  BatchRequest batch;
  batch.sequences.reserve(static_cast<size_t>(request->texts_size()));
  int64_t tokens = 0;
  for (int i = 0; i < request->texts_size(); ++i) {
    auto ids = EncodeOne(*rt, request->texts(i), truncate, absl::StrCat("texts[", i, "]"));
    if (!ids.ok()) return fail(ids.status());
    tokens += static_cast<int64_t>(ids->size());
    batch.sequences.push_back(*std::move(ids));
  }
  const int64_t tokenize_us = clock_->NowMicros() - start_us;
  if (absl::Status s = PrepareToQueue(context, clock_, metrics_, tokenize_us, tokens,
                                      response->mutable_usage(), &batch);
      !s.ok()) {
    return fail(s);
  }
  batch.is_cancelled = [context] { return context->IsCancelled(); };
  const bool normalize = request->has_normalize() ? request->normalize() : rt->normalize_default;
  const int num_texts = request->texts_size();
  batch.done = [this, reactor, response, normalize, tokenize_us, start_us, num_texts](
                   absl::StatusOr<EmbeddingMatrix> result, const RequestTimings& timings) {
    if (metrics_ != nullptr) metrics_->OnQueueAndInference(timings.queue_us, timings.inference_us);
    if (result.ok()) {
      AppendEmbeddings(&*result, normalize, response->mutable_embeddings());
      FillTimings(tokenize_us, timings, clock_->NowMicros() - start_us,
                  response->mutable_timings());
    }
    if (options_.log_requests) {
      spdlog::debug("Embed id='{}' texts={} -> {} (queue {} us, inference {} us)",
                    response->id(), num_texts, result.status().ToString(), timings.queue_us,
                    timings.inference_us);
    }
    FinishUnary(reactor, metrics_, RpcMethod::kEmbed, result.status(),
                clock_->NowMicros() - start_us);
  };
  const absl::Status submitted = rt->batcher->Submit(std::move(batch));
  if (!submitted.ok()) return fail(submitted);
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EmbeddingService::EmbedStream(
    CallbackServerContext* context) {
  return new EmbedStreamReactor(this, runtime(), context, metrics_, clock_,
                                options_.max_texts_per_request, options_.max_stream_backlog);
}

ServerUnaryReactor* EmbeddingService::Similarity(CallbackServerContext* context,
                                                 const grpc::ByteBuffer* raw_request,
                                                 grpc::ByteBuffer* raw_response) {
  auto* reactor = new UnaryCall<v1::SimilarityRequest, v1::SimilarityResponse>(raw_response);
  const v1::SimilarityRequest* request = &reactor->request;
  v1::SimilarityResponse* response = &reactor->response;
  const int64_t start_us = clock_->NowMicros();
  auto fail = [&](const absl::Status& s) {
    FinishUnary(reactor, metrics_, RpcMethod::kSimilarity, s, clock_->NowMicros() - start_us);
    return reactor;
  };
  const Runtime* rt = runtime();
  if (absl::Status s = AdmitUnary(*raw_request, RequestKind::kPairs, 3, rt, serving(),
                                  options_.max_texts_per_request, &reactor->request);
      !s.ok()) {
    return fail(s);
  }
  response->set_id(request->id());
  const bool truncate = !request->has_truncate() || request->truncate();
  // Each distinct text is embedded once.
  absl::flat_hash_map<absl::string_view, int32_t> row_of;
  auto pair_rows = std::make_shared<std::vector<std::pair<int32_t, int32_t>>>();
  pair_rows->reserve(static_cast<size_t>(request->pairs_size()));
  BatchRequest batch;
  int64_t tokens = 0;
  auto row_for = [&](const std::string& text, const std::string& name) -> absl::StatusOr<int32_t> {
    auto it = row_of.find(text);
    if (it != row_of.end()) return it->second;
    ES_ASSIGN_OR_RETURN(TokenIds ids, EncodeOne(*rt, text, truncate, name));
    tokens += static_cast<int64_t>(ids.size());
    const auto row = static_cast<int32_t>(batch.sequences.size());
    batch.sequences.push_back(std::move(ids));
    row_of.emplace(text, row);
    return row;
  };
  for (int i = 0; i < request->pairs_size(); ++i) {
    const v1::TextPair& pair = request->pairs(i);
    auto a = row_for(pair.text_a(), absl::StrCat("pairs[", i, "].text_a"));
    if (!a.ok()) return fail(a.status());
    auto b = row_for(pair.text_b(), absl::StrCat("pairs[", i, "].text_b"));
    if (!b.ok()) return fail(b.status());
    pair_rows->emplace_back(*a, *b);
  }
  const int64_t tokenize_us = clock_->NowMicros() - start_us;
  if (absl::Status s = PrepareToQueue(context, clock_, metrics_, tokenize_us, tokens,
                                      response->mutable_usage(), &batch);
      !s.ok()) {
    return fail(s);
  }
  batch.is_cancelled = [context] { return context->IsCancelled(); };
  batch.done = [this, reactor, response, pair_rows, tokenize_us, start_us](
                   absl::StatusOr<EmbeddingMatrix> result, const RequestTimings& timings) {
    if (metrics_ != nullptr) metrics_->OnQueueAndInference(timings.queue_us, timings.inference_us);
    if (result.ok()) {
      auto* scores = response->mutable_scores();
      scores->Reserve(static_cast<int>(pair_rows->size()));
      for (const auto& [a, b] : *pair_rows) {
        scores->Add(Cosine(result->Row(a), result->Row(b), result->dim));
      }
      FillTimings(tokenize_us, timings, clock_->NowMicros() - start_us,
                  response->mutable_timings());
    }
    FinishUnary(reactor, metrics_, RpcMethod::kSimilarity, result.status(),
                clock_->NowMicros() - start_us);
  };
  const absl::Status submitted = rt->batcher->Submit(std::move(batch));
  if (!submitted.ok()) return fail(submitted);
  return reactor;
}

ServerUnaryReactor* EmbeddingService::Tokenize(CallbackServerContext* /*context*/,
                                               const grpc::ByteBuffer* raw_request,
                                               grpc::ByteBuffer* raw_response) {
  auto* reactor = new UnaryCall<v1::TokenizeRequest, v1::TokenizeResponse>(raw_response);
  const v1::TokenizeRequest* request = &reactor->request;
  v1::TokenizeResponse* response = &reactor->response;
  const int64_t start_us = clock_->NowMicros();
  auto finish = [&](const absl::Status& s) {
    FinishUnary(reactor, metrics_, RpcMethod::kTokenize, s, clock_->NowMicros() - start_us);
    return reactor;
  };
  const Runtime* rt = runtime();
  if (absl::Status s = AdmitUnary(*raw_request, RequestKind::kTexts, 0, rt, serving(),
                                  options_.max_texts_per_request, &reactor->request);
      !s.ok()) {
    return finish(s);
  }
  const bool truncate = !request->has_truncate() || request->truncate();
  int64_t tokens = 0;
  for (int i = 0; i < request->texts_size(); ++i) {
    auto ids = EncodeOne(*rt, request->texts(i), truncate, absl::StrCat("texts[", i, "]"));
    if (!ids.ok()) {
      response->Clear();
      return finish(ids.status());
    }
    tokens += static_cast<int64_t>(ids->size());
    response->add_tokens()->mutable_ids()->Add(ids->begin(), ids->end());
  }
  response->mutable_usage()->set_prompt_tokens(tokens);
  response->mutable_usage()->set_total_tokens(tokens);
  return finish(absl::OkStatus());
}

ServerUnaryReactor* EmbeddingService::GetModelInfo(CallbackServerContext* context,
                                                   const v1::GetModelInfoRequest* /*request*/,
                                                   v1::ModelInfo* response) {
  ServerUnaryReactor* reactor = context->DefaultReactor();
  const int64_t start_us = clock_->NowMicros();
  const Runtime* rt = runtime();
  // Answered while draining too (harmless, and useful to a client that is curious).
  absl::Status status = rt == nullptr ? NotReady() : absl::OkStatus();
  if (rt != nullptr) *response = rt->model_info;
  const grpc::Status g = ToGrpcStatus(status);
  if (metrics_ != nullptr) {
    metrics_->OnRequest(RpcMethod::kGetModelInfo, static_cast<int>(g.error_code()),
                        clock_->NowMicros() - start_us);
  }
  reactor->Finish(g);
  return reactor;
}

}  // namespace embedserve
