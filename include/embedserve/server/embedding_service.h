// embedserve.v1.EmbeddingService on the gRPC callback API: tokenizes on the RPC thread,
// hands token ids to the Batcher and finishes each call from the batcher's `done`
// callback, so no RPC thread ever waits on the model. Embed, EmbedStream, Similarity and
// Tokenize take raw bytes and parse them here, so that a text with invalid UTF-8 gets
// INVALID_ARGUMENT naming the field and index (protobuf's own parser would reject the
// whole message with a bare error). Sits between the network and the
// batcher (request -> [tokenize -> queue] -> batch -> forward -> pool -> [reply]).
// Thread-safe: gRPC calls the handlers from any of its threads; AttachModel() and
// SetServing() may be called from any thread.
#ifndef EMBEDSERVE_SERVER_EMBEDDING_SERVICE_H_
#define EMBEDSERVE_SERVER_EMBEDDING_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/v1/embedding.grpc.pb.h"

namespace embedserve {

class Backend;
class Batcher;
class Clock;
class ServerMetrics;
class Tokenizer;

using EmbeddingServiceBase = v1::EmbeddingService::WithRawCallbackMethod_Embed<
    v1::EmbeddingService::WithRawCallbackMethod_EmbedStream<
        v1::EmbeddingService::WithRawCallbackMethod_Similarity<
            v1::EmbeddingService::WithRawCallbackMethod_Tokenize<
                v1::EmbeddingService::WithCallbackMethod_GetModelInfo<
                    v1::EmbeddingService::Service>>>>>;

class EmbeddingService final : public EmbeddingServiceBase {
 public:
  struct Options {
    // Most texts in one Embed/Tokenize request or pairs in one Similarity request;
    // more is INVALID_ARGUMENT.
    int max_texts_per_request = 256;
    // Tokens per text, [CLS]/[SEP] included; 0 = the backend's max_seq_length. Lower
    // than the backend's only.
    int64_t max_seq_length = 0;
    // EmbedStream flow control: messages of one stream being processed or waiting to be
    // written; at this many the server stops reading the stream until replies drain
    // (a client must read replies while it writes).
    int max_stream_backlog = 1024;
    // Reported by GetModelInfo.name instead of the folder's own name when set (the
    // config's model.name: a Hugging Face snapshot folder names itself by a hash).
    std::string model_name;
    // Reported by GetModelInfo (the batcher's settings as configured).
    v1::BatchingInfo batching_info;
    // Reported by GetModelInfo.versions, e.g. {"embedserve", "0.1.0"}.
    std::map<std::string, std::string> versions;
    // Log one debug line per request.
    bool log_requests = false;

    absl::Status Validate() const;
  };

  // Creates the service with no model attached: every RPC answers UNAVAILABLE
  // ("model is loading") until AttachModel() and SetServing(true). `metrics` (may be
  // null) and `clock` (may be null: the real clock) must outlive the service.
  static absl::StatusOr<std::unique_ptr<EmbeddingService>> Create(
      const Options& options, ServerMetrics* metrics, Clock* clock = nullptr);

  ~EmbeddingService() override;
  EmbeddingService(const EmbeddingService&) = delete;
  EmbeddingService& operator=(const EmbeddingService&) = delete;

  // Attaches the model; all three must outlive the service (or at least every call:
  // the server shuts gRPC down before destroying them). Call once. Fails with
  // INVALID_ARGUMENT when options.max_seq_length exceeds the backend's.
  absl::Status AttachModel(const Tokenizer* tokenizer, Backend* backend,
                           Batcher* batcher);

  // While false (the start, and from the beginning of shutdown) new calls are refused
  // with UNAVAILABLE. Setting true needs an attached model.
  void SetServing(bool serving);
  bool serving() const { return serving_.load(std::memory_order_acquire); }

  // RPCs (gRPC callback API; requests and responses are the serialized messages of
  // embedding.proto).
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EmbedStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Similarity(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

  // Implementation details below.
  struct Runtime;  // tokenizer, backend, batcher, effective limits

 private:
  EmbeddingService(const Options& options, ServerMetrics* metrics, Clock* clock);

  const Runtime* runtime() const;  // null until AttachModel

  const Options options_;
  ServerMetrics* const metrics_;
  Clock* const clock_;
  std::unique_ptr<Runtime> runtime_;
  std::atomic<bool> attached_{false};
  std::atomic<bool> serving_{false};
};

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_EMBEDDING_SERVICE_H_
