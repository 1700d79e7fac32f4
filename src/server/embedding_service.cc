#include "embedserve/server/embedding_service.h"

#include <google/protobuf/descriptor.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/support/byte_buffer.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
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
#include "server/queued_calls.h"
#include "server/unary_methods.h"
#include "server/wire_format.h"

namespace embedserve {

class EmbedStreamReactor;

struct EmbeddingService::Streams {
  // Open EmbedStream calls, so that shutdown can end idle ones.
  Mutex mu;
  absl::flat_hash_set<EmbedStreamReactor*> open ABSL_GUARDED_BY(mu);
};

namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;
using grpc_wire::CallEnv;
using grpc_wire::CheckEmbedReplySize;
using grpc_wire::EncodeEmbedResult;
using grpc_wire::Flatten;
using grpc_wire::kNoIdField;
using grpc_wire::OptionsOf;
using grpc_wire::ParseRequest;
using grpc_wire::RequestKind;
using grpc_wire::SerializeReply;
using grpc_wire::SetUsage;
using grpc_wire::TextsOf;

CallControl ControlOf(CallbackServerContext* context, const Clock& clock, std::string id) {
  return grpc_wire::MakeControl(
      context->deadline(), clock, [context] { return context->IsCancelled(); }, std::move(id));
}

// One unary call: owns its parsed request and its response, and serializes the
// response into gRPC's raw buffer when it replies. Deletes itself when gRPC is done.
template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(CallbackServerContext* context, grpc::ByteBuffer* out, RpcMethod method,
            const CallEnv& env)
      : context_(context), out_(out), method_(method), env_(env),
        start_us_(env.pipeline->clock()->NowMicros()) {
    env_.live->Add();
  }

  CallControl Control(std::string id) {
    return ControlOf(context_, *env_.pipeline->clock(), std::move(id));
  }

  // Finishes the call with `status` (serializing `response` when OK; a reply over the
  // size limit becomes RESOURCE_EXHAUSTED) and counts it with the status sent.
  void Reply(const absl::Status& status) {
    Finish(grpc_wire::EncodeReply(env_, method_, start_us_, status, response, out_));
  }
  void OnDone() override {
    EmbeddingService::LiveCalls* live = env_.live;
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
  const RpcMethod method_;
  const CallEnv env_;
  const int64_t start_us_;
};

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

grpc_wire::CallEnv EmbeddingService::Env() const {
  return CallEnv{pipeline_, metrics_, options_.max_message_bytes, live_.get()};
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
  const CallEnv env = Env();
  auto* call = new UnaryCall<v1::EmbedRequest, v1::EmbedResponse>(context, raw_response,
                                                                   RpcMethod::kEmbed, env);
  ServeEmbed(env, *raw_request, call);
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
  const CallEnv env = Env();
  auto* call = new UnaryCall<v1::SimilarityRequest, v1::SimilarityResponse>(
      context, raw_response, RpcMethod::kSimilarity, env);
  ServeSimilarity(env, *raw_request, call);
  return call;
}

ServerUnaryReactor* EmbeddingService::Tokenize(CallbackServerContext* context,
                                               const grpc::ByteBuffer* raw_request,
                                               grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::TokenizeRequest, v1::TokenizeResponse>(
      context, raw_response, RpcMethod::kTokenize, Env());
  if (absl::Status s =
          ParseRequest(*raw_request, RequestKind::kTexts, kNoIdField, &call->request);
      !s.ok()) {
    call->Reply(s);
    return call;
  }
  const TokenizeResult r = pipeline_->Tokenize(TextsOf(call->request.texts()),
                                               OptionsOf(call->request, "texts"),
                                               call->Control(""));
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
      context, raw_response, RpcMethod::kGetModelInfo, Env());
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
