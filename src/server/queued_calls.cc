// Embed and Similarity on completion queues (EmbeddingService::Options::grpc_queues > 0):
// gRPC's async API, a thread per queue. Each call is posted ahead, taken when a client's
// call arrives (which posts the next), served as a callback call is (unary_methods.h)
// and deleted once its reply is sent and the call has ended.
#include <grpcpp/server_builder.h>
#include <pthread.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "embedserve/common/mutex.h"
#include "embedserve/server/embedding_service.h"
#include "embedserve/server/grpc_status.h"
#include "embedserve/server/metrics.h"
#include "server/queued_calls.h"
#include "server/unary_methods.h"

namespace embedserve {

using grpc_wire::CallEnv;
using grpc_wire::EncodeReply;
using grpc_wire::MakeControl;
using grpc_wire::ServeEmbed;
using grpc_wire::ServeSimilarity;

namespace {

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
    return MakeControl(
        context_.deadline(), *env_.pipeline->clock(),
        [this] { return cancelled_.load(std::memory_order_relaxed); }, std::move(id));
  }

  // As UnaryCall::Reply; the last use of this call outside its queue's thread.
  void Reply(const absl::Status& status) {
    const grpc::Status g =
        EncodeReply(env_, method_.rpc, start_us_, status, response, &raw_reply_);
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
  const CallEnv env = Env();
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

}  // namespace embedserve
