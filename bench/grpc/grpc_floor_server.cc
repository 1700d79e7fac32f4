// grpc_floor_server: embedserve's gRPC surface with nothing behind it, to measure what
// gRPC itself costs per call on a host (its CPU per call and its round trip), the floor
// under the real server's request path. Similarity and Embed parse the request as
// embedserve does and answer at once, on the thread that took the call, with a reply of
// the real shape: one score per pair, or one vector of --dim zeros per text. No
// tokenizer, no batcher, no model. GetModelInfo answers with the name only;
// grpc.health.v1 answers SERVING (--api callback only).
//
// Two ways of taking calls:
//   --api callback   gRPC's callback API, as src/server/embedding_service.cc (gRPC runs
//                    its own polling threads; 1.51: clamp(cores / 2, 2, 16) of them)
//   --api cq         the completion-queue API: --cq-threads threads, each polling a
//                    queue of its own with --calls-per-cq calls posted ahead
// Usage: grpc_floor_server --port 0 --api callback   (prints "listening on HOST:PORT")
// bench/grpc/floor.sh drives it with embedserve-bench beside the real server.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace {

namespace v1 = ::embedserve::v1;

// The reply to a raw request, serialized, or a status for bytes that do not parse.
enum class Method { kSimilarity, kEmbed, kGetModelInfo };

grpc::Status Answer(Method method, const grpc::ByteBuffer& request, int dim,
                    grpc::ByteBuffer* reply) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (request.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  std::string out;
  if (method == Method::kSimilarity) {
    v1::SimilarityRequest req;
    if (!req.ParseFromString(bytes)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "not a SimilarityRequest");
    }
    v1::SimilarityResponse resp;
    for (int i = 0; i < req.pairs_size(); ++i) resp.add_scores(0.5f);
    resp.set_id(req.id());
    resp.SerializeToString(&out);
  } else if (method == Method::kGetModelInfo) {
    v1::ModelInfo info;
    info.set_name("grpc_floor_server");
    info.SerializeToString(&out);
  } else {
    v1::EmbedRequest req;
    if (!req.ParseFromString(bytes)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "not an EmbedRequest");
    }
    v1::EmbedResponse resp;
    for (int i = 0; i < req.texts_size(); ++i) resp.add_embeddings()->mutable_values()->Resize(dim, 0.0f);
    resp.set_id(req.id());
    resp.SerializeToString(&out);
  }
  grpc::Slice slice(out);
  *reply = grpc::ByteBuffer(&slice, 1);
  return grpc::Status::OK;
}

// Every method on the API in question (a method left synchronous would start gRPC's
// synchronous thread pool as well); those not overridden answer UNIMPLEMENTED.
using CallbackBase = v1::EmbeddingService::WithRawCallbackMethod_Similarity<
    v1::EmbeddingService::WithRawCallbackMethod_Embed<
        v1::EmbeddingService::WithRawCallbackMethod_GetModelInfo<
            v1::EmbeddingService::WithRawCallbackMethod_Tokenize<
                v1::EmbeddingService::WithRawCallbackMethod_EmbedStream<
                    v1::EmbeddingService::Service>>>>>;

class CallbackService final : public CallbackBase {
 public:
  explicit CallbackService(int dim) : dim_(dim) {}
  grpc::ServerUnaryReactor* Similarity(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* reply) override {
    return AnswerNow(context, Method::kSimilarity, *request, reply);
  }
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* reply) override {
    return AnswerNow(context, Method::kEmbed, *request, reply);
  }
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* reply) override {
    return AnswerNow(context, Method::kGetModelInfo, *request, reply);
  }

 private:
  // Finishes the call on this thread with gRPC's default reactor.
  grpc::ServerUnaryReactor* AnswerNow(grpc::CallbackServerContext* context, Method method,
                                      const grpc::ByteBuffer& request, grpc::ByteBuffer* reply) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(Answer(method, request, dim_, reply));
    return reactor;
  }

  const int dim_;
};

// Tokenize and EmbedStream are never requested: such a call waits for its deadline.
using CqService = v1::EmbeddingService::WithRawMethod_Similarity<
    v1::EmbeddingService::WithRawMethod_Embed<
        v1::EmbeddingService::WithRawMethod_GetModelInfo<
            v1::EmbeddingService::WithRawMethod_Tokenize<
                v1::EmbeddingService::WithRawMethod_EmbedStream<
                    v1::EmbeddingService::Service>>>>>;

// A completion queue, its thread's lock and whether calls may still be posted to it:
// once the server is stopping, nothing is posted (a queue takes no work after Shutdown).
struct Queue {
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  std::mutex mu;  // held by the queue's thread around each tag; by main() to stop
  bool stopping = false;
};

// One posted call of the completion-queue API: requested, then answered, then posted
// again. Its tag is the object itself; only its queue's thread touches it.
class CqCall {
 public:
  CqCall(CqService* service, Queue* queue, Method method, int dim)
      : service_(service), queue_(queue), cq_(queue->cq.get()), method_(method), dim_(dim) {}

  void Post() {
    context_ = std::make_unique<grpc::ServerContext>();
    writer_ = std::make_unique<grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>>(context_.get());
    answered_ = false;
    switch (method_) {
      case Method::kSimilarity:
        service_->RequestSimilarity(context_.get(), &request_, writer_.get(), cq_, cq_, this);
        break;
      case Method::kEmbed:
        service_->RequestEmbed(context_.get(), &request_, writer_.get(), cq_, cq_, this);
        break;
      case Method::kGetModelInfo:
        service_->RequestGetModelInfo(context_.get(), &request_, writer_.get(), cq_, cq_, this);
        break;
    }
  }

  // The queue returned this call's tag: a new call (answer it) or its answer sent (post
  // again). `ok` false on a new call: the server is shutting down.
  void Proceed(bool ok) {
    if (answered_) {
      if (!queue_->stopping) Post();
    } else if (ok) {
      answered_ = true;
      grpc::Status status = Answer(method_, request_, dim_, &reply_);
      writer_->Finish(reply_, status, this);
    }
  }

 private:
  CqService* const service_;
  Queue* const queue_;
  grpc::ServerCompletionQueue* const cq_;
  const Method method_;
  const int dim_;
  std::unique_ptr<grpc::ServerContext> context_;
  std::unique_ptr<grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>> writer_;
  grpc::ByteBuffer request_, reply_;
  bool answered_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"grpc_floor_server: embedserve's gRPC surface answering at once (no model)"};
  std::string host = "127.0.0.1", api = "callback";
  int port = 0, dim = 384, cq_threads = 2, calls_per_cq = 256;
  bool deadlock_detection = false;
  app.add_option("--host", host, "address to listen on");
  app.add_option("--port", port, "port (0: any free one; printed)");
  app.add_option("--api", api, "callback or cq")->check(CLI::IsMember({"callback", "cq"}));
  app.add_option("--dim", dim, "Embed: values per vector")->check(CLI::Range(1, 4096));
  app.add_option("--cq-threads", cq_threads, "cq: threads, one queue each")->check(CLI::Range(1, 256));
  app.add_option("--calls-per-cq", calls_per_cq, "cq: calls of each method posted ahead per queue")
      ->check(CLI::Range(1, 65536));
  app.add_flag("--deadlock-detection", deadlock_detection,
               "keep abseil's deadlock detector on gRPC's locks (embedserve turns it off)");
  CLI11_PARSE(app, argc, argv);
  if (!deadlock_detection) absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // SIGTERM / SIGINT end the server; blocked here so that every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // grpc.health.v1 is a callback service in gRPC 1.51, which would start the callback
  // API's polling threads beside the queues' own; --api cq leaves it out, and clients
  // that find it UNIMPLEMENTED ask GetModelInfo instead (embedserve-bench --wait-ready).
  grpc::EnableDefaultHealthCheckService(api == "callback");
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &bound_port);
  CallbackService callback_service(dim);
  CqService cq_service;
  std::vector<std::unique_ptr<Queue>> queues;
  if (api == "callback") {
    builder.RegisterService(&callback_service);
  } else {
    builder.RegisterService(&cq_service);
    for (int i = 0; i < cq_threads; ++i) {
      queues.push_back(std::make_unique<Queue>());
      queues.back()->cq = builder.AddCompletionQueue();
    }
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    std::fprintf(stderr, "grpc_floor_server: cannot listen on %s:%d\n", host.c_str(), port);
    return 1;
  }
  std::vector<std::unique_ptr<CqCall>> calls;
  std::vector<std::thread> threads;
  for (auto& queue : queues) {
    for (Method method : {Method::kSimilarity, Method::kEmbed, Method::kGetModelInfo}) {
      for (int i = 0; i < (method == Method::kGetModelInfo ? 1 : calls_per_cq); ++i) {
        calls.push_back(std::make_unique<CqCall>(&cq_service, queue.get(), method, dim));
        calls.back()->Post();
      }
    }
    threads.emplace_back([q = queue.get()] {
      void* tag = nullptr;
      bool ok = false;
      while (q->cq->Next(&tag, &ok)) {
        std::lock_guard<std::mutex> lock(q->mu);
        static_cast<CqCall*>(tag)->Proceed(ok);
      }
    });
  }
  std::printf("listening on %s:%d (api %s)\n", host.c_str(), bound_port, api.c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  for (auto& queue : queues) {
    std::lock_guard<std::mutex> lock(queue->mu);
    queue->stopping = true;
  }
  server->Shutdown(std::chrono::system_clock::now());
  for (auto& queue : queues) queue->cq->Shutdown();
  for (std::thread& t : threads) t.join();
  return 0;
}
