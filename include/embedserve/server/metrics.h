// Server metrics on a prometheus-cpp Registry: requests by method and status code,
// per-stage duration histograms (tokenize, queue, inference, total), batch size in
// sequences and tokens, queue depth and padding ratio, HTTP requests by route and status
// and the HTTP server's own refusals. Fed by the front doors (per request), the pipeline
// (per stage), the Batcher (BatchObserver, per batch) and the HTTP server (transport
// errors); rendered by prometheus::TextSerializer for GET /metrics (src/http/).
// Thread-safe: every method may be called from any thread.
#ifndef EMBEDSERVE_SERVER_METRICS_H_
#define EMBEDSERVE_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "embedserve/batching/batcher.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace embedserve {

enum class RpcMethod { kEmbed = 0, kEmbedStream, kSimilarity, kTokenize, kGetModelInfo };
inline constexpr int kNumRpcMethods = 5;
const char* RpcMethodName(RpcMethod method);

// The HTTP front door's routes, for embedserve_http_requests_total.
enum class HttpRoute {
  kOpenAiEmbeddings = 0,  // POST /v1/embeddings
  kEmbed,                 // POST /embed (and /)
  kSimilarity,            // POST /similarity
  kTokenize,              // POST /tokenize
  kInfo,                  // GET /info
  kHealth,                // GET /health
  kMetrics,               // GET /metrics
  kOther,                 // anything else (404, 405)
};
inline constexpr int kNumHttpRoutes = 8;
const char* HttpRouteName(HttpRoute route);

// What the HTTP server answered or dropped itself, before a request reached a route, for
// embedserve_http_transport_errors_total{reason}.
enum class HttpTransportError {
  kMalformed = 0,     // "malformed": not HTTP; answered 400, connection closed
  kBodyTooLarge,      // "body_too_large": answered 413
  kUrlTooLong,        // "url_too_long": answered 414
  kHeadersTooLarge,   // "headers_too_large": answered 431
  kHeaderTimeout,     // "header_timeout": headers not complete in time; dropped
  kBodyTimeout,       // "body_timeout": body not complete in time; dropped
  kWriteTimeout,      // "write_timeout": the client did not read the answer in time; dropped
};
inline constexpr int kNumHttpTransportErrors = 7;
const char* HttpTransportErrorName(HttpTransportError error);

class ServerMetrics final : public BatchObserver {
 public:
  // Registers every metric family; the children a request updates are created here (or,
  // for status codes, the first time a code is seen) and kept, so updates never look
  // labels up.
  ServerMetrics();
  ~ServerMetrics() override;
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // One answered request (an EmbedStream message counts as one request of
  // kEmbedStream). `grpc_code` is the grpc::StatusCode value (0..16).
  void OnRequest(RpcMethod method, int grpc_code, int64_t total_us);
  // Stage times of one successful or failed request that reached that stage.
  void OnTokenize(int64_t tokenize_us, int64_t tokens);
  void OnQueueAndInference(int64_t queue_us, int64_t inference_us);
  // One answered HTTP request that reached a route. `http_status` 100..599.
  void OnHttpRequest(HttpRoute route, int http_status, int64_t total_us);
  // One request the HTTP server refused or dropped before any route saw it.
  void OnHttpTransportError(HttpTransportError error);
  // An EmbedStream stopped reading its client's messages until its replies drain (its
  // backlog, its bytes unsent or its share of the queue was full): flow control at work.
  void OnStreamReadPaused();

  // BatchObserver.
  void OnBatch(const BatchStats& stats) override;
  void OnQueueDepth(int64_t sequences) override;
  void OnDropped(absl::StatusCode code, int32_t sequences) override;

  // Everything, Prometheus text exposition format 0.0.4.
  std::string RenderPrometheus() const;

  // Current values, read in memory (tests, logs).
  uint64_t requests(RpcMethod method, int grpc_code) const;
  uint64_t http_requests(HttpRoute route, int http_status) const;
  uint64_t http_transport_errors(HttpTransportError error) const;
  // Requests that reached tokenizing (observations of the tokenize histogram).
  uint64_t tokenized_requests() const;
  uint64_t stream_read_pauses() const;

  // Implementation details below.
 private:
  using CounterFamily = prometheus::Family<prometheus::Counter>;
  // The child of `family` with `labels`, created on first use and cached in `slot`.
  static prometheus::Counter& LazyChild(CounterFamily* family,
                                        std::atomic<prometheus::Counter*>* slot,
                                        const char* name1, const char* value1,
                                        const char* name2 = nullptr, const char* value2 = nullptr);
  static uint64_t ValueOf(const std::atomic<prometheus::Counter*>& slot);

  static constexpr int kNumCodes = 17;
  static constexpr int kNumHttpStatuses = 500;  // 100..599

  std::unique_ptr<prometheus::Registry> registry_;
  CounterFamily* requests_family_ = nullptr;
  CounterFamily* http_requests_family_ = nullptr;
  CounterFamily* dropped_family_ = nullptr;
  std::array<std::array<std::atomic<prometheus::Counter*>, kNumCodes>, kNumRpcMethods>
      requests_{};
  std::array<std::array<std::atomic<prometheus::Counter*>, kNumHttpStatuses>, kNumHttpRoutes>
      http_requests_{};
  std::array<std::atomic<prometheus::Counter*>, kNumCodes> dropped_sequences_{};
  std::array<prometheus::Counter*, kNumHttpTransportErrors> http_transport_errors_{};
  std::array<prometheus::Histogram*, kNumRpcMethods> request_seconds_{};
  std::array<prometheus::Histogram*, kNumHttpRoutes> http_request_seconds_{};
  prometheus::Histogram* tokenize_seconds_ = nullptr;
  prometheus::Histogram* queue_seconds_ = nullptr;
  prometheus::Histogram* inference_seconds_ = nullptr;
  prometheus::Histogram* batch_backend_seconds_ = nullptr;
  prometheus::Histogram* batch_sequences_ = nullptr;
  prometheus::Histogram* batch_tokens_ = nullptr;
  prometheus::Histogram* batch_padded_tokens_ = nullptr;
  prometheus::Histogram* padding_ratio_ = nullptr;
  prometheus::Counter* tokens_total_ = nullptr;
  prometheus::Counter* batches_failed_ = nullptr;
  prometheus::Counter* stream_read_pauses_ = nullptr;
  prometheus::Gauge* queue_depth_ = nullptr;
};

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_METRICS_H_
