// Embed and Similarity as both ways of taking a unary call serve them (the callback API
// in src/server/embedding_service.cc, completion queues in src/server/queued_calls.cc),
// and the count of calls not yet done that shutdown waits on.
#ifndef EMBEDSERVE_SERVER_UNARY_METHODS_H_
#define EMBEDSERVE_SERVER_UNARY_METHODS_H_

#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "embedserve/batching/clock.h"
#include "embedserve/common/mutex.h"
#include "embedserve/server/embedding_service.h"
#include "embedserve/server/grpc_status.h"
#include "embedserve/server/metrics.h"
#include "embedserve/v1/embedding.pb.h"
#include "pipeline/embedding_pipeline.h"
#include "server/wire_format.h"

namespace embedserve {

// Calls taken and not yet done (on the callback API until gRPC calls OnDone; on a queue
// until its reply's and its end's events are back), so that shutdown stops gRPC as soon
// as every accepted call is answered rather than at the grace's end.
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

namespace grpc_wire {

// What serving a unary call needs of the service.
struct CallEnv {
  EmbeddingPipeline* pipeline;
  ServerMetrics* metrics;
  int64_t max_message_bytes;
  EmbeddingService::LiveCalls* live;
};

// A call's control for the pipeline: its deadline on the pipeline's clock, whether it
// was cancelled (cheap, thread-safe), its id for the log.
inline CallControl MakeControl(std::chrono::system_clock::time_point deadline,
                               const Clock& clock, std::function<bool()> is_cancelled,
                               std::string id) {
  CallControl control;
  control.deadline_us = DeadlineMicros(deadline, clock);
  control.is_cancelled = std::move(is_cancelled);
  control.id = std::move(id);
  return control;
}

// The status a unary call ends with: `status` as gRPC's, or OK with `response`
// serialized into `*out` (RESOURCE_EXHAUSTED instead when it is over
// server.max_message_bytes); counted in the metrics with the code sent and the time
// since `start_us`.
template <typename Response>
grpc::Status EncodeReply(const CallEnv& env, RpcMethod method, int64_t start_us,
                         const absl::Status& status, const Response& response,
                         grpc::ByteBuffer* out) {
  grpc::Status g = ToGrpcStatus(status);
  if (g.ok()) g = SerializeReply(response, env.max_message_bytes, out);
  if (env.metrics != nullptr) {
    env.metrics->OnRequest(method, static_cast<int>(g.error_code()),
                           env.pipeline->clock()->NowMicros() - start_us);
  }
  return g;
}

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

}  // namespace grpc_wire
}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_UNARY_METHODS_H_
