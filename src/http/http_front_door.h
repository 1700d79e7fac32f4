// The HTTP front door of the EmbeddingPipeline: OpenAI's POST /v1/embeddings and
// text-embeddings-inference's POST /embed, /similarity, /tokenize, GET /info, /health and
// /metrics, each a thin adapter (JSON codec in http_api.h) around the same pipeline the
// gRPC service calls. MetricsHandler serves the metrics listener (GET /metrics only).
// Thread-safe: Handle is called from the HTTP server's I/O threads.
#ifndef EMBEDSERVE_HTTP_HTTP_FRONT_DOOR_H_
#define EMBEDSERVE_HTTP_HTTP_FRONT_DOOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "http/http_server.h"
#include "security/api_keys.h"

namespace embedserve {

class EmbeddingPipeline;
class ServerMetrics;

class HttpFrontDoor final : public HttpHandler {
 public:
  struct Options {
    // Set: every route needs an API key (else 401), except /health and /metrics when
    // api_keys->exempt_health_and_metrics(). Null: no key needed.
    std::shared_ptr<const ApiKeys> api_keys;
    // Reported by GET /info.
    std::string version;
    int64_t max_batch_tokens = 0;
    int32_t max_concurrent_requests = 0;  // the queue bound, in sequences
  };
  // `pipeline` and `metrics` (may be null; counts every answer by route and status, and
  // the transport errors) must outlive the front door.
  HttpFrontDoor(const Options& options, EmbeddingPipeline* pipeline, ServerMetrics* metrics);

  void Handle(const HttpRequest& request, std::shared_ptr<const std::atomic<bool>> cancelled,
              HttpResponder respond) override;
  // Counted in embedserve_http_transport_errors_total.
  void OnTransportError(HttpTransportError error) override;

  // GET /health answers 200 only while this is true (default) and the pipeline serves:
  // false during the shutdown delay, so HTTP probes see the drain before it refuses calls.
  void SetHealthy(bool healthy) { healthy_.store(healthy, std::memory_order_release); }

 private:
  std::atomic<bool> healthy_{true};
  const Options options_;
  EmbeddingPipeline* const pipeline_;
  ServerMetrics* const metrics_;
};

// GET /metrics (Prometheus text) and GET /healthz; 404 for anything else. `api_keys`
// (null: none) as HttpFrontDoor::Options::api_keys.
class MetricsHandler final : public HttpHandler {
 public:
  // `metrics` (may be null) must outlive the handler; it also counts this listener's
  // transport errors.
  MetricsHandler(ServerMetrics* metrics, std::shared_ptr<const ApiKeys> api_keys)
      : metrics_(metrics), api_keys_(std::move(api_keys)) {}
  void Handle(const HttpRequest& request, std::shared_ptr<const std::atomic<bool>> cancelled,
              HttpResponder respond) override;
  void OnTransportError(HttpTransportError error) override;

 private:
  ServerMetrics* const metrics_;
  const std::shared_ptr<const ApiKeys> api_keys_;
};

}  // namespace embedserve

#endif  // EMBEDSERVE_HTTP_HTTP_FRONT_DOOR_H_
