// embedserve.v1.EmbeddingService: the gRPC front door of the EmbeddingPipeline
// (src/pipeline/). It decodes the wire format, calls the pipeline and encodes what the
// pipeline's callback receives; no RPC thread ever waits on the model. Every method is
// served on gRPC's callback API, or (Options::grpc_queues > 0) Embed and Similarity on
// completion queues with a thread each, the others on the callback API.
// Every method takes raw bytes and parses them here, so that a text with invalid UTF-8
// gets INVALID_ARGUMENT naming the field and index, and a malformed body
// INVALID_ARGUMENT saying so (protobuf's own parser would reject the whole message with
// a bare error).
// Thread-safe: gRPC calls the handlers from any of its threads; SetServing() may be
// called from any thread.
#ifndef EMBEDSERVE_SERVER_EMBEDDING_SERVICE_H_
#define EMBEDSERVE_SERVER_EMBEDDING_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/v1/embedding.grpc.pb.h"

namespace grpc {
class ServerBuilder;
}  // namespace grpc

namespace embedserve {

namespace grpc_wire {
struct CallEnv;
}  // namespace grpc_wire
class EmbeddingPipeline;
class ServerMetrics;

// Embed and Similarity are marked when the service is made: callback, or queued.
using EmbeddingServiceBase = v1::EmbeddingService::WithRawCallbackMethod_EmbedStream<
    v1::EmbeddingService::WithRawCallbackMethod_Tokenize<
        v1::EmbeddingService::WithRawCallbackMethod_GetModelInfo<
            v1::EmbeddingService::Service>>>;

class EmbeddingService final : public EmbeddingServiceBase {
 public:
  struct Options {
    // EmbedStream flow control: the server reads a stream's next message only while
    // (a) fewer than max_stream_backlog of its messages are being processed or wait to
    // be written, (b) its replies waiting to be written hold fewer than
    // max_stream_backlog_bytes, and (c) it has no texts in work, or fewer than
    // max_stream_sequences and the batch queue has room for a largest request
    // (server.max_texts_per_request). Else it stops reading until its replies drain:
    // a fast stream is slowed instead of refused with RESOURCE_EXHAUSTED, and one whose
    // client does not read its replies holds a bounded amount of memory.
    int max_stream_backlog = 1024;
    int64_t max_stream_backlog_bytes = 2 << 20;
    int64_t max_stream_sequences = 2048;  // the server sets half of the batch queue
    // The share of the batch queue's bound, in percent, that EmbedStream messages may
    // fill (BatchRequest::queue_percent); the rest stays free for unary calls and HTTP,
    // so streams that write as fast as the queue drains do not lock others out. A stream
    // reads its next message only while the queue has room within this share.
    int32_t stream_queue_percent = 50;
    // Largest reply, serialized (server.max_message_bytes). A larger one is refused
    // with RESOURCE_EXHAUSTED (on EmbedStream: that message's error; the stream goes
    // on); Embed refuses before computing when the vectors alone would not fit.
    int64_t max_message_bytes = int64_t{64} << 20;
    // Reported by GetModelInfo (the batcher's settings as configured).
    v1::BatchingInfo batching_info;
    // Reported by GetModelInfo.versions, e.g. {"embedserve", "0.1.0"}.
    std::map<std::string, std::string> versions;
    // 0: every method on gRPC's callback API. N > 0: Embed and Similarity on N
    // completion queues, each polled by a thread of its own (server.grpc_queues). On a
    // 16-core host gRPC 1.51 takes a call of the queues for a third of the callback
    // API's CPU (docs/results/grpc-floor/).
    int grpc_queues = 0;

    absl::Status Validate() const;
  };

  // `pipeline` and `metrics` (may be null) must outlive the service. Every RPC answers
  // UNAVAILABLE until the pipeline has a model and serves.
  static absl::StatusOr<std::unique_ptr<EmbeddingService>> Create(const Options& options,
                                                                   EmbeddingPipeline* pipeline,
                                                                   ServerMetrics* metrics);

  ~EmbeddingService() override;
  EmbeddingService(const EmbeddingService&) = delete;
  EmbeddingService& operator=(const EmbeddingService&) = delete;

  // Sets the pipeline's serving state; false also drains every open EmbedStream (each
  // answers what it has read, then ends UNAVAILABLE).
  void SetServing(bool serving);

  // Blocks until every call of this service has ended (its reply sent, or its client
  // gone) and none has arrived for `quiet`, or until `deadline`; true when none is left.
  // Calls that arrive meanwhile are counted too (while not serving they end at once,
  // UNAVAILABLE).
  bool WaitForCalls(std::chrono::steady_clock::time_point deadline,
                    std::chrono::microseconds quiet);

  // With Options::grpc_queues > 0: AddQueues before the builder's BuildAndStart (after
  // RegisterService), StartQueues once the server runs, and StopQueues after its
  // Shutdown and after the pipeline has answered every call it took (the batcher shut
  // down): it waits until every call taken on a queue is done. Without queues they do
  // nothing. StopQueues is safe to call more than once.
  void AddQueues(grpc::ServerBuilder* builder);
  void StartQueues();
  void StopQueues();

  // RPCs on the callback API (requests and responses are the serialized messages of
  // embedding.proto).
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EmbedStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;

  // Implementation details below.
  struct Streams;    // open EmbedStream calls
  struct LiveCalls;  // calls not yet done, for WaitForCalls
  struct Queues;     // the completion queues and their threads

  // Asks gRPC for the next call of method `method_index` (Embed or Similarity) on `cq`;
  // `tag` comes back from the queue when it arrives (ok) or never will (not ok).
  void RequestQueuedCall(int method_index, grpc::ServerContext* context,
                         grpc::ByteBuffer* request,
                         grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* writer,
                         grpc::ServerCompletionQueue* cq, void* tag);

 private:
  EmbeddingService(const Options& options, EmbeddingPipeline* pipeline, ServerMetrics* metrics);

  // What a unary call of either API needs of this service (src/server/unary_methods.h).
  grpc_wire::CallEnv Env() const;

  // Embed and Similarity on the callback API (Options::grpc_queues 0).
  grpc::ServerUnaryReactor* CallbackEmbed(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response);
  grpc::ServerUnaryReactor* CallbackSimilarity(grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer* request,
                                               grpc::ByteBuffer* response);

  const Options options_;
  EmbeddingPipeline* const pipeline_;
  ServerMetrics* const metrics_;
  std::unique_ptr<Streams> streams_;
  std::unique_ptr<LiveCalls> live_;
  std::unique_ptr<Queues> queues_;
  int embed_index_ = 0;       // the methods' places in the service (embedding.proto's order)
  int similarity_index_ = 0;
};

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_EMBEDDING_SERVICE_H_
