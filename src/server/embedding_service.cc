#include "embedserve/server/embedding_service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_writer.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "embedserve/batching/clock.h"
#include "embedserve/common/mutex.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/server/grpc_status.h"
#include "embedserve/server/metrics.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "pipeline/embedding_pipeline.h"

namespace embedserve {

class EmbedStreamReactor;

struct EmbeddingService::Streams {
  // Open EmbedStream calls, so that shutdown can end idle ones.
  Mutex mu;
  absl::flat_hash_set<EmbedStreamReactor*> open ABSL_GUARDED_BY(mu);
};

// Calls taken and not yet done (gRPC has not yet called their OnDone), so that shutdown
// stops gRPC as soon as every accepted call is answered rather than at the grace's end.
struct EmbeddingService::LiveCalls {
  void Add() {
    MutexLock lock(&mu);
    ++count;
    last_arrival = std::chrono::steady_clock::now();
  }
  void Done() {
    bool none_left = false;
    {
      MutexLock lock(&mu);
      none_left = --count == 0;
    }
    if (none_left) cv.NotifyAll();
  }

  Mutex mu;
  CondVar cv;  // count turned 0
  int64_t count ABSL_GUARDED_BY(mu) = 0;
  std::chrono::steady_clock::time_point last_arrival ABSL_GUARDED_BY(mu);
};

namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

static_assert(static_cast<int>(v1::EmbedRequest::kTextsFieldNumber) ==
                      static_cast<int>(v1::SimilarityRequest::kPairsFieldNumber) &&
                  static_cast<int>(v1::EmbedRequest::kTextsFieldNumber) ==
                      static_cast<int>(v1::TokenizeRequest::kTextsFieldNumber),
              "CheckUtf8Fields reads texts and pairs as one field number");
constexpr int kNoIdField = 0;  // TokenizeRequest has no id

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
  // texts and pairs share a field number (static_asserts below).
  constexpr int text_field = v1::EmbedRequest::kTextsFieldNumber;
  using WFL = google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  int index = 0;
  std::string value;
  absl::Status first_error;  // keep scanning after it, for the id
  while (const uint32_t tag = in.ReadTag()) {
    const int field = static_cast<int>(WFL::GetTagFieldNumber(tag));
    const bool text_like = WFL::GetTagWireType(tag) == WFL::WIRETYPE_LENGTH_DELIMITED &&
                           (field == text_field || field == id_field);
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
            (pfield == v1::TextPair::kTextAFieldNumber ||
             pfield == v1::TextPair::kTextBFieldNumber)) {
          uint32_t plen = 0;
          if (!pair.ReadVarint32(&plen) || !pair.ReadString(&text, static_cast<int>(plen))) break;
          absl::Status s = Tokenizer::CheckUtf8(text);
          if (!s.ok() && first_error.ok()) {
            first_error = absl::InvalidArgumentError(absl::StrCat(
                "pairs[", index, "].", pfield == v1::TextPair::kTextAFieldNumber ? "text_a" : "text_b", ": ", s.message()));
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

// The call's deadline on `clock`'s time line: 0 = none; an expired deadline becomes "now"
// (the pipeline then answers DEADLINE_EXCEEDED before queueing).
int64_t DeadlineMicros(std::chrono::system_clock::time_point deadline, const Clock& clock) {
  if (deadline == std::chrono::system_clock::time_point::max()) return 0;
  const auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(
                             deadline - std::chrono::system_clock::now())
                             .count();
  const int64_t now = clock.NowMicros();
  if (remaining <= 0) return now;
  // Beyond a day is as good as none (and keeps the sum from overflowing).
  if (remaining > int64_t{86400} * 1000000) return 0;
  return now + remaining;
}

CallControl ControlOf(CallbackServerContext* context, const Clock& clock, std::string id) {
  CallControl control;
  control.deadline_us = DeadlineMicros(context->deadline(), clock);
  control.is_cancelled = [context] { return context->IsCancelled(); };
  control.id = std::move(id);
  return control;
}

template <typename Request>
RequestOptions OptionsOf(const Request& request, const char* list_name) {
  RequestOptions options;
  options.truncate = !request.has_truncate() || request.truncate();
  options.list_name = list_name;
  return options;
}

std::vector<absl::string_view> TextsOf(const google::protobuf::RepeatedPtrField<std::string>& t) {
  return std::vector<absl::string_view>(t.begin(), t.end());
}

void SetUsage(int64_t tokens, v1::Usage* usage) {
  usage->set_prompt_tokens(tokens);
  usage->set_total_tokens(tokens);
}

void SetTimings(const StageTimings& t, v1::Timings* out) {
  out->set_tokenize_us(t.tokenize_us);
  out->set_queue_us(t.queue_us);
  out->set_inference_us(t.inference_us);
  out->set_total_us(t.total_us);
}

// The reply of a successful (or, on a stream, failed) Embed: usage always, vectors and
// timings on success.
void EncodeEmbedResult(const EmbedResult& r, v1::EmbedResponse* out) {
  if (r.status.ok() || r.prompt_tokens > 0) SetUsage(r.prompt_tokens, out->mutable_usage());
  if (!r.status.ok()) return;
  const EmbeddingMatrix& m = r.embeddings;
  auto* rows = out->mutable_embeddings();
  rows->Reserve(static_cast<int>(m.rows));
  for (int64_t i = 0; i < m.rows; ++i) {
    auto* values = rows->Add()->mutable_values();
    values->Reserve(static_cast<int>(m.dim));
    values->Add(m.Row(i), m.Row(i) + m.dim);
  }
  SetTimings(r.timings, out->mutable_timings());
}

// RESOURCE_EXHAUSTED for a reply over server.max_message_bytes. Permanent: the same
// request gets the same reply size, so the caller must split it, not retry it.
absl::Status ReplyTooLargeError(int64_t bytes, int64_t max_bytes, bool at_least) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the reply would be ", at_least ? "at least " : "", bytes,
      " bytes, more than server.max_message_bytes (", max_bytes,
      "); send fewer texts per request (retrying the same request fails the same way)"));
}

// Embed's reply holds `texts` vectors of `dim` floats: packed, each takes dim * 4 bytes
// and at least 4 of framing. Refuses before any work when that alone is over the limit.
absl::Status CheckEmbedReplySize(int64_t texts, const EmbeddingPipeline& pipeline,
                                 int64_t max_bytes) {
  const PipelineModel* model = pipeline.model();
  if (model == nullptr) return absl::OkStatus();  // refused as not serving anyway
  const int64_t at_least = texts * (model->backend.dimension * 4 + 4);
  if (at_least <= max_bytes) return absl::OkStatus();
  return ReplyTooLargeError(at_least, max_bytes, /*at_least=*/true);
}

// Serializes `response` into `out`; RESOURCE_EXHAUSTED (and `out` cleared) when it is
// larger than `max_bytes`.
template <typename Response>
grpc::Status SerializeReply(const Response& response, int64_t max_bytes, grpc::ByteBuffer* out) {
  bool own_buffer = false;
  grpc::Status g = grpc::SerializationTraits<Response>::Serialize(response, out, &own_buffer);
  if (g.ok() && static_cast<int64_t>(out->Length()) > max_bytes) {
    const auto bytes = static_cast<int64_t>(out->Length());
    out->Clear();
    g = ToGrpcStatus(ReplyTooLargeError(bytes, max_bytes, /*at_least=*/false));
  }
  return g;
}

// One unary call: owns its parsed request and its response, and serializes the
// response into gRPC's raw buffer when it replies. Deletes itself when gRPC is done.
template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(CallbackServerContext* context, grpc::ByteBuffer* out, ServerMetrics* metrics,
            RpcMethod method, const Clock& clock, int64_t max_reply_bytes,
            EmbeddingService::LiveCalls* live)
      : context_(context), out_(out), metrics_(metrics), method_(method), clock_(clock),
        start_us_(clock.NowMicros()), max_reply_bytes_(max_reply_bytes), live_(live) {
    live_->Add();
  }

  CallControl Control(std::string id) { return ControlOf(context_, clock_, std::move(id)); }

  // Finishes the call with `status` (serializing `response` when OK; a reply over the
  // size limit becomes RESOURCE_EXHAUSTED) and counts it with the status sent.
  void Reply(const absl::Status& status) {
    grpc::Status g = ToGrpcStatus(status);
    if (g.ok()) g = SerializeReply(response, max_reply_bytes_, out_);
    if (metrics_ != nullptr) {
      metrics_->OnRequest(method_, static_cast<int>(g.error_code()),
                          clock_.NowMicros() - start_us_);
    }
    Finish(g);
  }
  void OnDone() override {
    EmbeddingService::LiveCalls* live = live_;
    delete this;
    live->Done();
  }
  // OnDone (above) and OnCancel (none) are trivial: they neither block nor call gRPC, so
  // gRPC may run them on the thread that ends the call. Otherwise (gRPC 1.51's default)
  // every call's OnDone is handed to gRPC's executor thread: a thread wake-up and a
  // context switch per call. gRPC's own default reactor says the same of itself; the
  // hook is gRPC's "not API" and `override` fails the build should it go.
  bool InternalInlineable() override { return true; }

  Request request;
  Response response;

 private:
  CallbackServerContext* const context_;
  grpc::ByteBuffer* const out_;
  ServerMetrics* const metrics_;
  const RpcMethod method_;
  const Clock& clock_;
  const int64_t start_us_;
  const int64_t max_reply_bytes_;
  EmbeddingService::LiveCalls* const live_;
};

// What serving a unary call needs of the service.
struct CallEnv {
  EmbeddingPipeline* pipeline;
  ServerMetrics* metrics;
  int64_t max_message_bytes;
  EmbeddingService::LiveCalls* live;
};

// Embed and Similarity, for a call of either API: `Call` has `request`, `response`,
// Reply(status) (from any thread, once) and Control(id). The pipeline answers through
// its callback, on the thread that ends the batch (or on this one, when it refuses).
template <typename Call>
void ServeEmbed(const CallEnv& env, const grpc::ByteBuffer& raw_request, Call* call) {
  const v1::EmbedRequest& request = call->request;
  if (absl::Status s = ParseRequest(raw_request, RequestKind::kTexts,
                                    v1::EmbedRequest::kIdFieldNumber, &call->request);
      !s.ok()) {
    call->Reply(s);
    return;
  }
  if (absl::Status s =
          CheckEmbedReplySize(request.texts_size(), *env.pipeline, env.max_message_bytes);
      !s.ok()) {
    call->Reply(s);
    return;
  }
  call->response.set_id(request.id());
  RequestOptions options = OptionsOf(request, "texts");
  if (request.has_normalize()) options.normalize = request.normalize();
  env.pipeline->Embed(TextsOf(request.texts()), options, call->Control(request.id()),
                      [call](EmbedResult r) {
                        if (r.status.ok()) EncodeEmbedResult(r, &call->response);
                        call->Reply(r.status);
                      });
}

template <typename Call>
void ServeSimilarity(const CallEnv& env, const grpc::ByteBuffer& raw_request, Call* call) {
  const v1::SimilarityRequest& request = call->request;
  if (absl::Status s = ParseRequest(raw_request, RequestKind::kPairs,
                                    v1::SimilarityRequest::kIdFieldNumber, &call->request);
      !s.ok()) {
    call->Reply(s);
    return;
  }
  call->response.set_id(request.id());
  std::vector<std::pair<absl::string_view, absl::string_view>> pairs;
  pairs.reserve(static_cast<size_t>(request.pairs_size()));
  for (const v1::TextPair& p : request.pairs()) pairs.emplace_back(p.text_a(), p.text_b());
  env.pipeline->Similarity(pairs, OptionsOf(request, "pairs"), call->Control(request.id()),
                           [call](SimilarityResult r) {
                             if (r.status.ok()) {
                               call->response.mutable_scores()->Add(r.scores.begin(),
                                                                    r.scores.end());
                               SetUsage(r.prompt_tokens, call->response.mutable_usage());
                               SetTimings(r.timings, call->response.mutable_timings());
                             }
                             call->Reply(r.status);
                           });
}

// ---------------------------------------------------------------------------------
// Embed and Similarity on completion queues (Options::grpc_queues > 0).

// An event a queue returns: a call's next step, or (done) the end of the call.
class QueuedCallBase;
struct QueueTag {
  QueuedCallBase* call;
  bool done;
};

class QueuedCallBase {
 public:
  virtual ~QueuedCallBase() = default;
  // On the queue's thread, one event at a time.
  virtual void OnEvent(bool done, bool ok) = 0;
};

// Calls posted ahead on each queue for each method: a call that arrives takes one and
// posts the next, so this bounds only the calls that arrive at the same instant.
constexpr int kCallsPostedPerQueue = 64;

}  // namespace

struct EmbeddingService::Queues {
  struct Queue {
    std::unique_ptr<grpc::ServerCompletionQueue> cq;
    std::thread thread;
    // Held by the queue's thread around each event, and by StopQueues to set stopping:
    // once it is set no call is posted, so that none follows the queue's Shutdown.
    Mutex mu;
    bool stopping ABSL_GUARDED_BY(mu) = false;
  };

  void Add() {
    MutexLock lock(&mu);
    ++calls;
  }
  void Remove() {
    bool none_left = false;
    {
      MutexLock lock(&mu);
      none_left = --calls == 0;
    }
    if (none_left) cv.NotifyAll();
  }

  std::vector<std::unique_ptr<Queue>> queues;
  Mutex mu;
  CondVar cv;                             // calls turned 0
  int64_t calls ABSL_GUARDED_BY(mu) = 0;  // QueuedCall objects: posted, or taken and not done
  bool started = false;
  bool stopped = false;
};

namespace {

// One unary call on a completion queue: posted, taken (served as a callback call is),
// answered with Finish, and deleted once Finish's event and the call's end
// (AsyncNotifyWhenDone) have both come back. Only its queue's thread runs OnEvent;
// Reply runs on whichever thread the pipeline answers on.
template <typename Request, typename Response>
class QueuedCall final : public QueuedCallBase {
 public:
  using ServeFn = void (*)(const CallEnv&, const grpc::ByteBuffer&, QueuedCall*);
  struct Method {
    int index;  // in the service
    RpcMethod rpc;
    ServeFn serve;
  };

  // Posts one call of `method` on `queue`.
  static void Post(EmbeddingService* service, const CallEnv& env,
                   EmbeddingService::Queues* queues, EmbeddingService::Queues::Queue* queue,
                   const Method& method) {
    auto* call = new QueuedCall(service, env, queues, queue, method);
    queues->Add();
    call->context_.AsyncNotifyWhenDone(&call->done_tag_);
    service->RequestQueuedCall(method.index, &call->context_, &call->raw_request_,
                               &call->writer_, queue->cq.get(), &call->step_tag_);
  }

  void OnEvent(bool done, bool ok) override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (done) {
      // IsCancelled is valid from here on (gRPC's async API).
      cancelled_.store(context_.IsCancelled(), std::memory_order_relaxed);
      ended_ = true;
    } else if (!taken_) {
      if (!ok) {
        // Never taken (the server is stopping): no end event follows.
        Delete();
        return;
      }
      taken_ = true;
      if (!queue_->stopping) Post(service_, env_, queues_, queue_, method_);
      env_.live->Add();
      start_us_ = env_.pipeline->clock()->NowMicros();
      method_.serve(env_, raw_request_, this);
      return;
    } else {
      finished_ = true;  // the reply went out, or the client had gone
    }
    if (ended_ && finished_) {
      EmbeddingService::LiveCalls* live = env_.live;
      Delete();
      live->Done();
    }
  }

  CallControl Control(std::string id) {
    CallControl control;
    control.deadline_us = DeadlineMicros(context_.deadline(), *env_.pipeline->clock());
    control.is_cancelled = [this] { return cancelled_.load(std::memory_order_relaxed); };
    control.id = std::move(id);
    return control;
  }

  // As UnaryCall::Reply; the last use of this call outside its queue's thread.
  void Reply(const absl::Status& status) {
    grpc::Status g = ToGrpcStatus(status);
    if (g.ok()) g = SerializeReply(response, env_.max_message_bytes, &raw_reply_);
    if (env_.metrics != nullptr) {
      env_.metrics->OnRequest(method_.rpc, static_cast<int>(g.error_code()),
                              env_.pipeline->clock()->NowMicros() - start_us_);
    }
    if (g.ok()) {
      writer_.Finish(raw_reply_, g, &step_tag_);
    } else {
      writer_.FinishWithError(g, &step_tag_);
    }
  }

  Request request;
  Response response;

 private:
  QueuedCall(EmbeddingService* service, const CallEnv& env, EmbeddingService::Queues* queues,
             EmbeddingService::Queues::Queue* queue, const Method& method)
      : service_(service), env_(env), queues_(queues), queue_(queue), method_(method),
        writer_(&context_) {}

  void Delete() {
    EmbeddingService::Queues* queues = queues_;
    delete this;
    queues->Remove();
  }

  EmbeddingService* const service_;
  const CallEnv env_;
  EmbeddingService::Queues* const queues_;
  EmbeddingService::Queues::Queue* const queue_;
  const Method method_;
  grpc::ServerContext context_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> writer_;
  grpc::ByteBuffer raw_request_, raw_reply_;
  QueueTag step_tag_{this, false};
  QueueTag done_tag_{this, true};
  std::atomic<bool> cancelled_{false};  // read by the batcher, until the request is batched
  int64_t start_us_ = 0;
  bool taken_ = false;     // these three: the queue's thread only
  bool finished_ = false;
  bool ended_ = false;
};

using QueuedEmbed = QueuedCall<v1::EmbedRequest, v1::EmbedResponse>;
using QueuedSimilarity = QueuedCall<v1::SimilarityRequest, v1::SimilarityResponse>;

}  // namespace

// ---------------------------------------------------------------------------------
// EmbedStream: one reactor per stream. Reads requests one after another, hands each to
// the pipeline and writes responses as they complete (out of order), one write at a time
// from a queue. Finishes once the client half-closed (or the server drains) and every
// accepted request has been answered.
class EmbedStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  EmbedStreamReactor(EmbeddingPipeline* pipeline, EmbeddingService::Streams* streams,
                     EmbeddingService::LiveCalls* live, CallbackServerContext* context,
                     ServerMetrics* metrics, const EmbeddingService::Options& options)
      : pipeline_(pipeline),
        streams_(streams),
        live_(live),
        context_(context),
        metrics_(metrics),
        clock_(*pipeline->clock()),
        options_(options) {
    live_->Add();
    if (pipeline_->model() == nullptr) {
      Finish(ToGrpcStatus(NotServingError()));
      return;
    }
    {
      MutexLock lock(&streams_->mu);
      streams_->open.insert(this);
      registered_ = true;
    }
    if (!pipeline_->serving()) {
      Drain();  // finishes at once: nothing accepted yet
      return;
    }
    MutexLock lock(&mu_);
    if (!finished_) StartRead(&raw_request_);  // a shutdown may have drained it already
  }

  // Stops reading: finish as soon as the accepted requests are answered.
  void Drain() {
    bool finish = false;
    {
      MutexLock lock(&mu_);
      draining_ = true;
      finish = ShouldFinishLocked();
    }
    if (finish) Finish(final_status_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      {
        MutexLock lock(&mu_);
        if (finished_) return;  // drained while this message was on its way
        in_handler_ = true;
      }
      HandleRequest();
      raw_request_.Clear();
    }
    bool finish = false;
    {
      MutexLock lock(&mu_);
      in_handler_ = false;
      if (!ok) client_closed_ = true;
      if (!ok || draining_) reads_done_ = true;
      if (!reads_done_ && !finished_) {
        if (MayReadLocked()) {
          // Under the lock so that it never follows Finish (gRPC runs the completion
          // later, never inside StartRead).
          StartRead(&raw_request_);
        } else {
          read_paused_ = true;  // resumed by MaybeResumeReadLocked as replies drain
          if (metrics_ != nullptr) metrics_->OnStreamReadPaused();
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
      MutexLock lock(&mu_);
      unsent_bytes_ -= static_cast<int64_t>(queue_.front().Length());
      queue_.pop_front();
      if (!ok) write_failed_ = true;  // client gone: drop what is left
      if (write_failed_) {
        queue_.clear();
        unsent_bytes_ = 0;
      }
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
      MutexLock lock(&streams_->mu);
      streams_->open.erase(this);
    }
    EmbeddingService::LiveCalls* live = live_;
    delete this;
    live->Done();
  }

 private:
  // Decodes one message and hands it to the pipeline; the reply is queued by Answer,
  // now (a request that fails its checks) or from a batcher worker.
  void HandleRequest() {
    const int64_t start_us = clock_.NowMicros();
    {
      MutexLock lock(&mu_);
      ++pending_;
    }
    v1::EmbedRequest request;
    std::string id;
    if (absl::Status parsed = ParseRequest(raw_request_, RequestKind::kTexts,
                                           v1::EmbedRequest::kIdFieldNumber, &request, &id);
        !parsed.ok()) {
      EmbedResult r;
      r.status = std::move(parsed);
      Answer(std::move(id), r, start_us, 0);  // id echoed when readable, to match the error
      return;
    }
    if (absl::Status s =
            CheckEmbedReplySize(request.texts_size(), *pipeline_, options_.max_message_bytes);
        !s.ok()) {
      EmbedResult r;
      r.status = std::move(s);
      Answer(request.id(), r, start_us, 0);
      return;
    }
    const int64_t texts = request.texts_size();
    {
      MutexLock lock(&mu_);
      pending_sequences_ += texts;
    }
    RequestOptions options = OptionsOf(request, "texts");
    if (request.has_normalize()) options.normalize = request.normalize();
    options.queue_percent = options_.stream_queue_percent;
    pipeline_->Embed(TextsOf(request.texts()), options,
                     ControlOf(context_, clock_, request.id()),
                     [this, id = request.id(), start_us, texts](EmbedResult r) {
                       Answer(id, r, start_us, texts);
                     });
  }

  // Queues the reply to one message of `texts` texts (with `error` set when it failed, or
  // when the reply would be over the size limit).
  void Answer(std::string id, const EmbedResult& result, int64_t start_us, int64_t texts) {
    v1::EmbedResponse response;
    response.set_id(std::move(id));
    EncodeEmbedResult(result, &response);
    grpc::Status g = ToGrpcStatus(result.status);
    auto set_error = [&response](const grpc::Status& e) {
      response.mutable_error()->set_code(static_cast<int32_t>(e.error_code()));
      response.mutable_error()->set_message(e.error_message());
    };
    if (!g.ok()) set_error(g);
    grpc::ByteBuffer serialized;
    if (grpc::Status size = SerializeReply(response, options_.max_message_bytes, &serialized); !size.ok()) {
      // Too large: this message gets the error instead of its vectors.
      g = size;
      response.clear_embeddings();
      response.clear_timings();
      set_error(g);
      bool own_buffer = false;
      grpc::SerializationTraits<v1::EmbedResponse>::Serialize(response, &serialized,
                                                              &own_buffer);
    }
    if (metrics_ != nullptr) {
      metrics_->OnRequest(RpcMethod::kEmbedStream, static_cast<int>(g.error_code()),
                          clock_.NowMicros() - start_us);
    }
    const grpc::ByteBuffer* to_write = nullptr;
    bool finish = false;
    {
      MutexLock lock(&mu_);
      --pending_;
      pending_sequences_ -= texts;
      if (write_failed_) MaybeResumeReadLocked();
      if (!write_failed_) {
        unsent_bytes_ += static_cast<int64_t>(serialized.Length());
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

  // The flow-control rule (EmbeddingService::Options::max_stream_backlog says it).
  bool MayReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (BacklogLocked() >= options_.max_stream_backlog) return false;
    if (unsent_bytes_ >= options_.max_stream_backlog_bytes) return false;
    if (pending_sequences_ == 0) return true;  // an answer will not come to resume it
    return pending_sequences_ < options_.max_stream_sequences &&
           pipeline_->QueueHasRoom(pipeline_->options().max_texts_per_request,
                                   options_.stream_queue_percent);
  }

  void MaybeResumeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (read_paused_ && !reads_done_ && !draining_ && !finished_ && MayReadLocked()) {
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

  EmbeddingPipeline* const pipeline_;
  EmbeddingService::Streams* const streams_;
  EmbeddingService::LiveCalls* const live_;
  CallbackServerContext* const context_;
  ServerMetrics* const metrics_;
  const Clock& clock_;
  const EmbeddingService::Options& options_;  // the service's, which outlives its calls
  bool registered_ = false;
  grpc::ByteBuffer raw_request_;  // the read in progress (one at a time)

  Mutex mu_;
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
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;  // handed to the pipeline, not yet answered
  int64_t pending_sequences_ ABSL_GUARDED_BY(mu_) = 0;  // their texts
  int64_t unsent_bytes_ ABSL_GUARDED_BY(mu_) = 0;       // serialized replies in queue_
};

// ---------------------------------------------------------------------------------

absl::Status EmbeddingService::Options::Validate() const {
  if (max_stream_backlog < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.max_stream_backlog must be >= 1; was ", max_stream_backlog));
  }
  if (max_stream_backlog_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.max_stream_backlog_bytes must be >= 1; was ", max_stream_backlog_bytes));
  }
  if (max_stream_sequences < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EmbeddingService max_stream_sequences must be >= 1; was ", max_stream_sequences));
  }
  if (stream_queue_percent < 1 || stream_queue_percent > 100) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.stream_queue_percent must be in [1, 100]; was ", stream_queue_percent));
  }
  if (max_message_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.max_message_bytes must be >= 1; was ", max_message_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EmbeddingService>> EmbeddingService::Create(
    const Options& options, EmbeddingPipeline* pipeline, ServerMetrics* metrics) {
  ES_RETURN_IF_ERROR(options.Validate());
  if (pipeline == nullptr) return absl::InvalidArgumentError("EmbeddingService needs a pipeline");
  return std::unique_ptr<EmbeddingService>(new EmbeddingService(options, pipeline, metrics));
}

EmbeddingService::EmbeddingService(const Options& options, EmbeddingPipeline* pipeline,
                                   ServerMetrics* metrics)
    : options_(options),
      pipeline_(pipeline),
      metrics_(metrics),
      streams_(std::make_unique<Streams>()),
      live_(std::make_unique<LiveCalls>()),
      queues_(std::make_unique<Queues>()) {
  // The generated service numbers its methods in embedding.proto's order.
  const google::protobuf::ServiceDescriptor* service =
      v1::EmbedRequest::descriptor()->file()->FindServiceByName("EmbeddingService");
  embed_index_ = service->FindMethodByName("Embed")->index();
  similarity_index_ = service->FindMethodByName("Similarity")->index();
  using Handler = grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>;
  if (options_.grpc_queues > 0) {
    MarkMethodRaw(embed_index_);
    MarkMethodRaw(similarity_index_);
    return;
  }
  MarkMethodRawCallback(embed_index_,
                        new Handler([this](CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) {
                          return CallbackEmbed(context, request, response);
                        }));
  MarkMethodRawCallback(similarity_index_,
                        new Handler([this](CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) {
                          return CallbackSimilarity(context, request, response);
                        }));
}

EmbeddingService::~EmbeddingService() { StopQueues(); }

void EmbeddingService::RequestQueuedCall(int method_index, grpc::ServerContext* context,
                                         grpc::ByteBuffer* request,
                                         grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* writer,
                                         grpc::ServerCompletionQueue* cq, void* tag) {
  RequestAsyncUnary(method_index, context, request, writer, cq, cq, tag);
}

void EmbeddingService::AddQueues(grpc::ServerBuilder* builder) {
  for (int i = 0; i < options_.grpc_queues; ++i) {
    queues_->queues.push_back(std::make_unique<Queues::Queue>());
    queues_->queues.back()->cq = builder->AddCompletionQueue();
  }
}

void EmbeddingService::StartQueues() {
  if (queues_->queues.empty() || queues_->started) return;
  queues_->started = true;
  const CallEnv env{pipeline_, metrics_, options_.max_message_bytes, live_.get()};
  const QueuedEmbed::Method embed{embed_index_, RpcMethod::kEmbed, &ServeEmbed<QueuedEmbed>};
  const QueuedSimilarity::Method similarity{similarity_index_, RpcMethod::kSimilarity,
                                            &ServeSimilarity<QueuedSimilarity>};
  for (size_t i = 0; i < queues_->queues.size(); ++i) {
    Queues::Queue* queue = queues_->queues[i].get();
    for (int j = 0; j < kCallsPostedPerQueue; ++j) {
      QueuedEmbed::Post(this, env, queues_.get(), queue, embed);
      QueuedSimilarity::Post(this, env, queues_.get(), queue, similarity);
    }
    queue->thread = std::thread([queue, i] {
      pthread_setname_np(pthread_self(), absl::StrCat("es-grpc-", i).c_str());
      void* tag = nullptr;
      bool ok = false;
      while (queue->cq->Next(&tag, &ok)) {
        MutexLock lock(&queue->mu);
        const QueueTag* event = static_cast<const QueueTag*>(tag);
        event->call->OnEvent(event->done, ok);
      }
    });
  }
}

void EmbeddingService::StopQueues() {
  if (queues_->queues.empty() || queues_->stopped) return;
  queues_->stopped = true;
  for (auto& queue : queues_->queues) {
    MutexLock lock(&queue->mu);
    queue->stopping = true;
  }
  {
    // The server's Shutdown returned every call never taken; the pipeline answered
    // every call taken. Their last events are on the queues' way.
    MutexLock lock(&queues_->mu);
    while (queues_->calls > 0) queues_->cv.Wait(&queues_->mu);
  }
  for (auto& queue : queues_->queues) queue->cq->Shutdown();
  for (auto& queue : queues_->queues) {
    if (queue->thread.joinable()) {
      queue->thread.join();
    } else {  // never started: drain it here
      void* tag = nullptr;
      bool ok = false;
      while (queue->cq->Next(&tag, &ok)) {
      }
    }
  }
}

void EmbeddingService::SetServing(bool serving) {
  pipeline_->SetServing(serving);
  if (serving) return;
  MutexLock lock(&streams_->mu);
  // Drain under the lock: a reactor erases itself in OnDone under this lock, so none
  // of these can be deleted meanwhile.
  for (EmbedStreamReactor* s : streams_->open) s->Drain();
}

bool EmbeddingService::WaitForCalls(std::chrono::steady_clock::time_point deadline,
                                    std::chrono::microseconds quiet) {
  MutexLock lock(&live_->mu);
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    const auto quiet_until = live_->last_arrival + quiet;
    if (live_->count == 0 && now >= quiet_until) return true;
    if (now >= deadline) return live_->count == 0;
    // Woken when the last call ends; else at the end of the quiet time or the deadline.
    const auto until = live_->count > 0 ? deadline : std::min(deadline, quiet_until);
    live_->cv.WaitFor(&live_->mu, std::max<int64_t>(
                                      1, std::chrono::duration_cast<std::chrono::microseconds>(
                                             until - now)
                                             .count()));
  }
}

ServerUnaryReactor* EmbeddingService::CallbackEmbed(CallbackServerContext* context,
                                                    const grpc::ByteBuffer* raw_request,
                                                    grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::EmbedRequest, v1::EmbedResponse>(
      context, raw_response, metrics_, RpcMethod::kEmbed, *pipeline_->clock(),
      options_.max_message_bytes, live_.get());
  ServeEmbed(CallEnv{pipeline_, metrics_, options_.max_message_bytes, live_.get()},
             *raw_request, call);
  return call;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EmbeddingService::EmbedStream(
    CallbackServerContext* context) {
  return new EmbedStreamReactor(pipeline_, streams_.get(), live_.get(), context, metrics_,
                                options_);
}

ServerUnaryReactor* EmbeddingService::CallbackSimilarity(CallbackServerContext* context,
                                                         const grpc::ByteBuffer* raw_request,
                                                         grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::SimilarityRequest, v1::SimilarityResponse>(
      context, raw_response, metrics_, RpcMethod::kSimilarity, *pipeline_->clock(),
      options_.max_message_bytes, live_.get());
  ServeSimilarity(CallEnv{pipeline_, metrics_, options_.max_message_bytes, live_.get()},
                  *raw_request, call);
  return call;
}

ServerUnaryReactor* EmbeddingService::Tokenize(CallbackServerContext* context,
                                               const grpc::ByteBuffer* raw_request,
                                               grpc::ByteBuffer* raw_response) {
  const Clock& clock = *pipeline_->clock();
  auto* call = new UnaryCall<v1::TokenizeRequest, v1::TokenizeResponse>(
      context, raw_response, metrics_, RpcMethod::kTokenize, clock, options_.max_message_bytes,
      live_.get());
  if (absl::Status s =
          ParseRequest(*raw_request, RequestKind::kTexts, kNoIdField, &call->request);
      !s.ok()) {
    call->Reply(s);
    return call;
  }
  const TokenizeResult r = pipeline_->Tokenize(TextsOf(call->request.texts()),
                                               OptionsOf(call->request, "texts"),
                                               ControlOf(context, clock, ""));
  if (r.status.ok()) {
    for (const TokenIds& ids : r.tokens) {
      call->response.add_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
    }
    SetUsage(r.prompt_tokens, call->response.mutable_usage());
  }
  call->Reply(r.status);
  return call;
}

ServerUnaryReactor* EmbeddingService::GetModelInfo(CallbackServerContext* context,
                                                   const grpc::ByteBuffer* raw_request,
                                                   grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::GetModelInfoRequest, v1::ModelInfo>(
      context, raw_response, metrics_, RpcMethod::kGetModelInfo, *pipeline_->clock(),
      options_.max_message_bytes, live_.get());
  if (!call->request.ParseFromString(Flatten(*raw_request))) {
    call->Reply(absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", call->request.GetTypeName(), " message")));
    return call;
  }
  const PipelineModel* model = pipeline_->model();
  if (model == nullptr) {
    call->Reply(NotServingError());
    return call;
  }
  // Answered while draining too (harmless, and useful to a client that is curious).
  v1::ModelInfo* response = &call->response;
  const BackendInfo& info = model->backend;
  response->set_name(model->name);
  response->set_path(info.model_path);
  response->set_synthetic(info.synthetic);
  response->set_dimension(static_cast<int32_t>(info.dimension));
  response->set_max_seq_length(static_cast<int32_t>(model->max_seq_length));
  response->set_pooling(info.pooling);
  response->set_normalize(info.normalize);
  response->set_device(info.device);
  response->set_precision(info.precision);
  *response->mutable_batching() = options_.batching_info;
  response->set_max_texts_per_request(pipeline_->options().max_texts_per_request);
  for (const auto& [k, v] : options_.versions) (*response->mutable_versions())[k] = v;
  if (!info.runtime.empty()) (*response->mutable_versions())["runtime"] = info.runtime;
  call->Reply(absl::OkStatus());
  return call;
}

}  // namespace embedserve
