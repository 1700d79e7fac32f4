#include "embedserve/server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <string>
#include <utility>
#include <vector>

namespace embedserve {
namespace {

using prometheus::Histogram;

// Seconds: 50 us .. 10 s.
Histogram::BucketBoundaries LatencyBounds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
}
Histogram::BucketBoundaries PowersOfTwo(double from, double to) {
  Histogram::BucketBoundaries b;
  for (double v = from; v <= to; v *= 2) b.push_back(v);
  return b;
}
Histogram::BucketBoundaries RatioBounds() {
  return {0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
}

const char* CodeName(int code) {
  static const char* kNames[] = {
      "OK",        "CANCELLED",          "UNKNOWN",          "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",   "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",      "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? kNames[code] : "UNKNOWN";
}

// The HTTP status values as label strings, made once.
const std::string& StatusLabel(int http_status) {
  static const std::vector<std::string>* kLabels = [] {
    auto* labels = new std::vector<std::string>();
    for (int s = 100; s <= 599; ++s) labels->push_back(std::to_string(s));
    return labels;
  }();
  return (*kLabels)[static_cast<size_t>(http_status - 100)];
}

double Seconds(int64_t us) { return static_cast<double>(us) * 1e-6; }

Histogram* AddHistogram(prometheus::Registry* registry, const char* name, const char* help,
                        Histogram::BucketBoundaries bounds) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(*registry).Add(
      {}, std::move(bounds));
}

// One latency histogram of `name` per value of `label`: (*out)[i] has label_of(i).
template <size_t N, typename LabelOf>
void AddLatencyHistograms(prometheus::Registry* registry, const char* name, const char* help,
                          const char* label, LabelOf label_of, std::array<Histogram*, N>* out) {
  auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(*registry);
  for (size_t i = 0; i < N; ++i) {
    (*out)[i] = &family.Add({{label, label_of(static_cast<int>(i))}}, LatencyBounds());
  }
}

}  // namespace

const char* RpcMethodName(RpcMethod method) {
  switch (method) {
    case RpcMethod::kEmbed: return "Embed";
    case RpcMethod::kEmbedStream: return "EmbedStream";
    case RpcMethod::kSimilarity: return "Similarity";
    case RpcMethod::kTokenize: return "Tokenize";
    case RpcMethod::kGetModelInfo: return "GetModelInfo";
  }
  return "Unknown";
}

const char* HttpRouteName(HttpRoute route) {
  switch (route) {
    case HttpRoute::kOpenAiEmbeddings: return "/v1/embeddings";
    case HttpRoute::kEmbed: return "/embed";
    case HttpRoute::kSimilarity: return "/similarity";
    case HttpRoute::kTokenize: return "/tokenize";
    case HttpRoute::kInfo: return "/info";
    case HttpRoute::kHealth: return "/health";
    case HttpRoute::kMetrics: return "/metrics";
    case HttpRoute::kOther: return "other";
  }
  return "other";
}

const char* HttpTransportErrorName(HttpTransportError error) {
  switch (error) {
    case HttpTransportError::kMalformed: return "malformed";
    case HttpTransportError::kBodyTooLarge: return "body_too_large";
    case HttpTransportError::kUrlTooLong: return "url_too_long";
    case HttpTransportError::kHeadersTooLarge: return "headers_too_large";
    case HttpTransportError::kHeaderTimeout: return "header_timeout";
    case HttpTransportError::kBodyTimeout: return "body_timeout";
    case HttpTransportError::kWriteTimeout: return "write_timeout";
  }
  return "malformed";
}

ServerMetrics::ServerMetrics() : registry_(std::make_unique<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  requests_family_ =
      &prometheus::BuildCounter()
           .Name("embedserve_requests_total")
           .Help("Requests answered, by RPC method and gRPC status code (EmbedStream: per "
                 "message).")
           .Register(r);
  // OK is always shown; other codes once seen.
  for (int m = 0; m < kNumRpcMethods; ++m) {
    LazyChild(requests_family_, &requests_[m][0], "method",
              RpcMethodName(static_cast<RpcMethod>(m)), "code", CodeName(0));
  }
  AddLatencyHistograms(&r, "embedserve_request_duration_seconds",
                       "Handler entry to reply ready, by RPC method.", "method",
                       [](int m) { return RpcMethodName(static_cast<RpcMethod>(m)); },
                       &request_seconds_);
  http_requests_family_ = &prometheus::BuildCounter()
                               .Name("embedserve_http_requests_total")
                               .Help("HTTP requests answered by a route, by route and HTTP "
                                     "status.")
                               .Register(r);
  AddLatencyHistograms(&r, "embedserve_http_request_duration_seconds",
                       "HTTP request fully read to answer ready, by route.", "route",
                       [](int route) { return HttpRouteName(static_cast<HttpRoute>(route)); },
                       &http_request_seconds_);
  auto& transport = prometheus::BuildCounter()
                        .Name("embedserve_http_transport_errors_total")
                        .Help("HTTP requests the server refused (400, 413, 414, 431) or "
                              "dropped (timeouts) before a route saw them, by reason.")
                        .Register(r);
  for (int e = 0; e < kNumHttpTransportErrors; ++e) {
    http_transport_errors_[e] =
        &transport.Add({{"reason", HttpTransportErrorName(static_cast<HttpTransportError>(e))}});
  }
  tokenize_seconds_ = AddHistogram(&r, "embedserve_tokenize_duration_seconds",
                                   "Tokenization time of one request.", LatencyBounds());
  queue_seconds_ = AddHistogram(&r, "embedserve_queue_duration_seconds",
                                "Enqueue until the request's last batch started.",
                                LatencyBounds());
  inference_seconds_ =
      AddHistogram(&r, "embedserve_inference_duration_seconds",
                   "Forward + pooling time of the batches that held a request's texts.",
                   LatencyBounds());
  batch_backend_seconds_ = AddHistogram(&r, "embedserve_batch_inference_duration_seconds",
                                        "Backend time of one batch.", LatencyBounds());
  batch_sequences_ = AddHistogram(&r, "embedserve_batch_size_sequences",
                                  "Sequences per batch.", PowersOfTwo(1, 4096));
  batch_tokens_ = AddHistogram(&r, "embedserve_batch_size_tokens",
                               "Real (unpadded) tokens per batch.", PowersOfTwo(16, 1 << 20));
  batch_padded_tokens_ =
      AddHistogram(&r, "embedserve_batch_padded_tokens",
                   "Longest sequence x sequences per batch (what a padding backend computes).",
                   PowersOfTwo(16, 1 << 20));
  padding_ratio_ = AddHistogram(&r, "embedserve_batch_padding_ratio",
                                "Share of a batch's padded tokens that is padding.",
                                RatioBounds());
  batches_failed_ = &prometheus::BuildCounter()
                         .Name("embedserve_batches_failed_total")
                         .Help("Batches the backend failed.")
                         .Register(r)
                         .Add({});
  stream_read_pauses_ = &prometheus::BuildCounter()
                             .Name("embedserve_stream_read_pauses_total")
                             .Help("Times an EmbedStream stopped reading until its replies "
                                   "drained (server.max_stream_backlog and related bounds).")
                             .Register(r)
                             .Add({});
  queue_depth_ = &prometheus::BuildGauge()
                      .Name("embedserve_queue_depth")
                      .Help("Sequences waiting in the batcher's queue.")
                      .Register(r)
                      .Add({});
  tokens_total_ = &prometheus::BuildCounter()
                       .Name("embedserve_tokens_total")
                       .Help("Tokens sent to the model ([CLS]/[SEP] included, after "
                             "truncation).")
                       .Register(r)
                       .Add({});
  dropped_family_ = &prometheus::BuildCounter()
                         .Name("embedserve_dropped_sequences_total")
                         .Help("Queued sequences dropped before they ran, by reason.")
                         .Register(r);
}

ServerMetrics::~ServerMetrics() = default;

prometheus::Counter& ServerMetrics::LazyChild(CounterFamily* family,
                                              std::atomic<prometheus::Counter*>* slot,
                                              const char* name1, const char* value1,
                                              const char* name2, const char* value2) {
  prometheus::Counter* c = slot->load(std::memory_order_acquire);
  if (c != nullptr) return *c;
  prometheus::Labels labels = {{name1, value1}};
  if (name2 != nullptr) labels.emplace(name2, value2);
  // Two threads may get here at once: Family::Add returns the existing child for labels
  // it already holds, so both store the same pointer.
  c = &family->Add(labels);
  slot->store(c, std::memory_order_release);
  return *c;
}

uint64_t ServerMetrics::ValueOf(const std::atomic<prometheus::Counter*>& slot) {
  const prometheus::Counter* c = slot.load(std::memory_order_acquire);
  return c == nullptr ? 0 : static_cast<uint64_t>(c->Value());
}

void ServerMetrics::OnRequest(RpcMethod method, int grpc_code, int64_t total_us) {
  const int m = static_cast<int>(method);
  const int code = grpc_code >= 0 && grpc_code < kNumCodes ? grpc_code : 2;  // UNKNOWN
  LazyChild(requests_family_, &requests_[m][code], "method", RpcMethodName(method), "code",
            CodeName(code))
      .Increment();
  request_seconds_[m]->Observe(Seconds(total_us));
}

void ServerMetrics::OnHttpRequest(HttpRoute route, int http_status, int64_t total_us) {
  const int r = static_cast<int>(route);
  const int status = http_status >= 100 && http_status <= 599 ? http_status : 500;
  LazyChild(http_requests_family_, &http_requests_[r][status - 100], "route",
            HttpRouteName(route), "status", StatusLabel(status).c_str())
      .Increment();
  http_request_seconds_[r]->Observe(Seconds(total_us));
}

void ServerMetrics::OnHttpTransportError(HttpTransportError error) {
  http_transport_errors_[static_cast<int>(error)]->Increment();
}

void ServerMetrics::OnStreamReadPaused() { stream_read_pauses_->Increment(); }

void ServerMetrics::OnTokenize(int64_t tokenize_us, int64_t tokens) {
  tokenize_seconds_->Observe(Seconds(tokenize_us));
  tokens_total_->Increment(static_cast<double>(tokens));
}

void ServerMetrics::OnQueueAndInference(int64_t queue_us, int64_t inference_us) {
  queue_seconds_->Observe(Seconds(queue_us));
  inference_seconds_->Observe(Seconds(inference_us));
}

void ServerMetrics::OnBatch(const BatchStats& stats) {
  batch_backend_seconds_->Observe(Seconds(stats.backend_us));
  batch_sequences_->Observe(stats.sequences);
  batch_tokens_->Observe(static_cast<double>(stats.tokens));
  batch_padded_tokens_->Observe(static_cast<double>(stats.padded_tokens));
  padding_ratio_->Observe(stats.padding_ratio());
  if (!stats.status.ok()) batches_failed_->Increment();
}

void ServerMetrics::OnQueueDepth(int64_t sequences) {
  queue_depth_->Set(static_cast<double>(sequences));
}

void ServerMetrics::OnDropped(absl::StatusCode code, int32_t sequences) {
  const int c = static_cast<int>(code);
  if (c < 0 || c >= kNumCodes) return;
  LazyChild(dropped_family_, &dropped_sequences_[c], "code", CodeName(c))
      .Increment(static_cast<double>(sequences));
}

uint64_t ServerMetrics::requests(RpcMethod method, int grpc_code) const {
  if (grpc_code < 0 || grpc_code >= kNumCodes) return 0;
  return ValueOf(requests_[static_cast<int>(method)][grpc_code]);
}

uint64_t ServerMetrics::http_requests(HttpRoute route, int http_status) const {
  if (http_status < 100 || http_status > 599) return 0;
  return ValueOf(http_requests_[static_cast<int>(route)][http_status - 100]);
}

uint64_t ServerMetrics::http_transport_errors(HttpTransportError error) const {
  return static_cast<uint64_t>(http_transport_errors_[static_cast<int>(error)]->Value());
}

uint64_t ServerMetrics::tokenized_requests() const {
  return tokenize_seconds_->Collect().histogram.sample_count;
}

uint64_t ServerMetrics::stream_read_pauses() const {
  return static_cast<uint64_t>(stream_read_pauses_->Value());
}

std::string ServerMetrics::RenderPrometheus() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace embedserve
