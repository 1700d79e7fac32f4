#include "embedserve/server/metrics.h"

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <vector>
#include <utility>

#include "absl/strings/str_cat.h"

namespace embedserve {
namespace {

// Seconds: 50 us .. 10 s.
std::vector<double> LatencyBounds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
}
std::vector<double> PowersOfTwo(double from, double to) {
  std::vector<double> b;
  for (double v = from; v <= to; v *= 2) b.push_back(v);
  return b;
}
std::vector<double> RatioBounds() {
  return {0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
}

std::string FormatDouble(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
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

void AddDouble(std::atomic<double>* a, double v) {
  double cur = a->load(std::memory_order_relaxed);
  while (!a->compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

void Header(const char* name, const char* type, const char* help, std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

// An unlabelled histogram with its HELP/TYPE header, the name written once.
void AppendHistogram(const char* name, const char* help, const Histogram& histogram,
                     std::string* out) {
  Header(name, "histogram", help, out);
  histogram.AppendTo(name, "", out);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  AddDouble(&sum_, value);
}

void Histogram::AppendTo(const std::string& name, const std::string& labels,
                         std::string* out) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const std::string le =
        i < bounds_.size() ? FormatDouble(bounds_[i]) : std::string("+Inf");
    absl::StrAppend(out, name, "_bucket{", labels, sep, "le=\"", le, "\"} ", cumulative,
                    "\n");
  }
  const std::string braces = labels.empty() ? "" : absl::StrCat("{", labels, "}");
  absl::StrAppend(out, name, "_sum", braces, " ", FormatDouble(sum()), "\n");
  // Count from the buckets so that the exposition is self-consistent.
  absl::StrAppend(out, name, "_count", braces, " ", cumulative, "\n");
}

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

ServerMetrics::ServerMetrics()
    : tokenize_seconds_(LatencyBounds()),
      queue_seconds_(LatencyBounds()),
      inference_seconds_(LatencyBounds()),
      batch_backend_seconds_(LatencyBounds()),
      batch_sequences_(PowersOfTwo(1, 4096)),
      batch_tokens_(PowersOfTwo(16, 1 << 20)),
      batch_padded_tokens_(PowersOfTwo(16, 1 << 20)),
      padding_ratio_(RatioBounds()) {
  for (auto& h : request_seconds_) h = std::make_unique<Histogram>(LatencyBounds());
  for (auto& h : http_request_seconds_) h = std::make_unique<Histogram>(LatencyBounds());
  for (auto& row : http_requests_) {
    for (auto& c : row) c.store(0);
  }
  for (auto& row : requests_) {
    for (auto& c : row) c.store(0);
  }
  for (auto& c : dropped_sequences_) c.store(0);
}

void ServerMetrics::OnRequest(RpcMethod method, int grpc_code, int64_t total_us) {
  const int m = static_cast<int>(method);
  const int code = grpc_code >= 0 && grpc_code < kNumCodes ? grpc_code : 2;  // UNKNOWN
  requests_[m][code].fetch_add(1, std::memory_order_relaxed);
  request_seconds_[m]->Observe(static_cast<double>(total_us) * 1e-6);
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

void ServerMetrics::OnHttpRequest(HttpRoute route, int http_status, int64_t total_us) {
  const int r = static_cast<int>(route);
  const int s = http_status >= 100 && http_status <= 599 ? http_status - 100 : 500 - 100;
  http_requests_[r][s].fetch_add(1, std::memory_order_relaxed);
  http_request_seconds_[r]->Observe(static_cast<double>(total_us) * 1e-6);
}

uint64_t ServerMetrics::http_requests(HttpRoute route, int http_status) const {
  if (http_status < 100 || http_status > 599) return 0;
  return http_requests_[static_cast<int>(route)][http_status - 100].load(std::memory_order_relaxed);
}

void ServerMetrics::OnTokenize(int64_t tokenize_us, int64_t tokens) {
  tokenize_seconds_.Observe(static_cast<double>(tokenize_us) * 1e-6);
  tokens_total_.fetch_add(static_cast<uint64_t>(tokens), std::memory_order_relaxed);
}

void ServerMetrics::OnQueueAndInference(int64_t queue_us, int64_t inference_us) {
  queue_seconds_.Observe(static_cast<double>(queue_us) * 1e-6);
  inference_seconds_.Observe(static_cast<double>(inference_us) * 1e-6);
}

void ServerMetrics::OnBatch(const BatchStats& stats) {
  batch_backend_seconds_.Observe(static_cast<double>(stats.backend_us) * 1e-6);
  batch_sequences_.Observe(stats.sequences);
  batch_tokens_.Observe(static_cast<double>(stats.tokens));
  batch_padded_tokens_.Observe(static_cast<double>(stats.padded_tokens));
  padding_ratio_.Observe(stats.padding_ratio());
  if (!stats.status.ok()) batches_failed_.fetch_add(1, std::memory_order_relaxed);
}

void ServerMetrics::OnQueueDepth(int64_t sequences) {
  queue_depth_.store(sequences, std::memory_order_relaxed);
}

void ServerMetrics::OnDropped(absl::StatusCode code, int32_t sequences) {
  const int c = static_cast<int>(code);
  if (c >= 0 && c < kNumCodes) {
    dropped_sequences_[c].fetch_add(static_cast<uint64_t>(sequences),
                                    std::memory_order_relaxed);
  }
}

uint64_t ServerMetrics::requests(RpcMethod method, int grpc_code) const {
  if (grpc_code < 0 || grpc_code >= kNumCodes) return 0;
  return requests_[static_cast<int>(method)][grpc_code].load(std::memory_order_relaxed);
}

std::string ServerMetrics::RenderPrometheus() const {
  std::string out;
  Header("embedserve_requests_total", "counter",
         "Requests answered, by RPC method and gRPC status code (EmbedStream: per message).",
         &out);
  for (int m = 0; m < kNumRpcMethods; ++m) {
    for (int c = 0; c < kNumCodes; ++c) {
      const uint64_t v = requests_[m][c].load(std::memory_order_relaxed);
      if (v == 0 && c != 0) continue;  // always show OK, others once seen
      absl::StrAppend(&out, "embedserve_requests_total{method=\"",
                      RpcMethodName(static_cast<RpcMethod>(m)), "\",code=\"", CodeName(c),
                      "\"} ", v, "\n");
    }
  }
  Header("embedserve_http_requests_total", "counter",
         "HTTP requests answered by a route, by route and HTTP status.", &out);
  for (int r = 0; r < kNumHttpRoutes; ++r) {
    for (int s = 0; s < kNumHttpStatuses; ++s) {
      const uint64_t v = http_requests_[r][s].load(std::memory_order_relaxed);
      if (v == 0) continue;
      absl::StrAppend(&out, "embedserve_http_requests_total{route=\"",
                      HttpRouteName(static_cast<HttpRoute>(r)), "\",status=\"", s + 100,
                      "\"} ", v, "\n");
    }
  }
  Header("embedserve_http_request_duration_seconds", "histogram",
         "HTTP request fully read to answer ready, by route.", &out);
  for (int r = 0; r < kNumHttpRoutes; ++r) {
    http_request_seconds_[r]->AppendTo(
        "embedserve_http_request_duration_seconds",
        absl::StrCat("route=\"", HttpRouteName(static_cast<HttpRoute>(r)), "\""), &out);
  }
  Header("embedserve_request_duration_seconds", "histogram",
         "Handler entry to reply ready, by RPC method.", &out);
  for (int m = 0; m < kNumRpcMethods; ++m) {
    request_seconds_[m]->AppendTo(
        "embedserve_request_duration_seconds",
        absl::StrCat("method=\"", RpcMethodName(static_cast<RpcMethod>(m)), "\""), &out);
  }
  AppendHistogram("embedserve_tokenize_duration_seconds",
                  "Tokenization time of one request.",
                  tokenize_seconds_, &out);
  AppendHistogram("embedserve_queue_duration_seconds",
                  "Enqueue until the request's last batch started.",
                  queue_seconds_, &out);
  AppendHistogram("embedserve_inference_duration_seconds",
                  "Forward + pooling time of the batches that held a request's texts.",
                  inference_seconds_, &out);
  AppendHistogram("embedserve_batch_inference_duration_seconds",
                  "Backend time of one batch.",
                  batch_backend_seconds_, &out);
  AppendHistogram("embedserve_batch_size_sequences",
                  "Sequences per batch.",
                  batch_sequences_, &out);
  AppendHistogram("embedserve_batch_size_tokens",
                  "Real (unpadded) tokens per batch.",
                  batch_tokens_, &out);
  AppendHistogram("embedserve_batch_padded_tokens",
                  "Longest sequence x sequences per batch (what a padding backend computes).",
                  batch_padded_tokens_, &out);
  AppendHistogram("embedserve_batch_padding_ratio",
                  "Share of a batch's padded tokens that is padding.",
                  padding_ratio_, &out);
  Header("embedserve_batches_failed_total", "counter", "Batches the backend failed.", &out);
  absl::StrAppend(&out, "embedserve_batches_failed_total ",
                  batches_failed_.load(std::memory_order_relaxed), "\n");
  Header("embedserve_queue_depth", "gauge", "Sequences waiting in the batcher's queue.",
         &out);
  absl::StrAppend(&out, "embedserve_queue_depth ",
                  queue_depth_.load(std::memory_order_relaxed), "\n");
  Header("embedserve_tokens_total", "counter",
         "Tokens sent to the model ([CLS]/[SEP] included, after truncation).", &out);
  absl::StrAppend(&out, "embedserve_tokens_total ",
                  tokens_total_.load(std::memory_order_relaxed), "\n");
  Header("embedserve_dropped_sequences_total", "counter",
         "Queued sequences dropped before they ran, by reason.", &out);
  for (int c = 0; c < kNumCodes; ++c) {
    const uint64_t v = dropped_sequences_[c].load(std::memory_order_relaxed);
    if (v == 0) continue;
    absl::StrAppend(&out, "embedserve_dropped_sequences_total{code=\"", CodeName(c), "\"} ",
                    v, "\n");
  }
  return out;
}

}  // namespace embedserve
