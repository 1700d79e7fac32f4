// Server metrics in the Prometheus text format: requests by method and status code,
// per-stage duration histograms (tokenize, queue, inference, total), batch size in
// sequences and tokens, queue depth and padding ratio. Fed by the front doors (per
// request), the pipeline (per stage) and the Batcher (BatchObserver, per batch); served
// on GET /metrics by the HTTP server (src/http/). Thread-safe: every method may be
// called from any thread (lock-free counters).
#ifndef EMBEDSERVE_SERVER_METRICS_H_
#define EMBEDSERVE_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/batching/batcher.h"

namespace embedserve {

// A Prometheus histogram with fixed upper bounds (plus +Inf). Thread-safe.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  // Appends the _bucket/_sum/_count lines of `name` with extra `labels` (e.g.
  // `method="Embed"`, or "").
  void AppendTo(const std::string& name, const std::string& labels, std::string* out) const;
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 (+Inf)
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

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

class ServerMetrics final : public BatchObserver {
 public:
  ServerMetrics();

  // One answered request (an EmbedStream message counts as one request of
  // kEmbedStream). `grpc_code` is the grpc::StatusCode value (0..16).
  void OnRequest(RpcMethod method, int grpc_code, int64_t total_us);
  // Stage times of one successful or failed request that reached that stage.
  void OnTokenize(int64_t tokenize_us, int64_t tokens);
  void OnQueueAndInference(int64_t queue_us, int64_t inference_us);
  // One answered HTTP request that reached a route (transport errors such as 413 or a
  // timeout are not counted). `http_status` 100..599.
  void OnHttpRequest(HttpRoute route, int http_status, int64_t total_us);

  // BatchObserver.
  void OnBatch(const BatchStats& stats) override;
  void OnQueueDepth(int64_t sequences) override;
  void OnDropped(absl::StatusCode code, int32_t sequences) override;

  // Everything, Prometheus text exposition format 0.0.4.
  std::string RenderPrometheus() const;

  uint64_t requests(RpcMethod method, int grpc_code) const;
  uint64_t http_requests(HttpRoute route, int http_status) const;

 private:
  static constexpr int kNumCodes = 17;
  std::array<std::array<std::atomic<uint64_t>, kNumCodes>, kNumRpcMethods> requests_{};
  std::array<std::unique_ptr<Histogram>, kNumRpcMethods> request_seconds_;
  static constexpr int kNumHttpStatuses = 500;  // 100..599
  std::array<std::array<std::atomic<uint64_t>, kNumHttpStatuses>, kNumHttpRoutes> http_requests_{};
  std::array<std::unique_ptr<Histogram>, kNumHttpRoutes> http_request_seconds_;
  Histogram tokenize_seconds_;
  Histogram queue_seconds_;
  Histogram inference_seconds_;
  Histogram batch_backend_seconds_;
  Histogram batch_sequences_;
  Histogram batch_tokens_;
  Histogram batch_padded_tokens_;
  Histogram padding_ratio_;
  std::atomic<uint64_t> tokens_total_{0};
  std::atomic<uint64_t> batches_failed_{0};
  std::atomic<int64_t> queue_depth_{0};
  std::array<std::atomic<uint64_t>, kNumCodes> dropped_sequences_{};
};

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_METRICS_H_
