#include "http/http_front_door.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "embedserve/batching/clock.h"
#include "embedserve/server/metrics.h"
#include "http/http_api.h"
#include "pipeline/embedding_pipeline.h"

namespace embedserve {
namespace {

constexpr char kJson[] = "application/json";

// OpenAI-shaped error answer for `status` (an HTTP status) or a pipeline status.
void OpenAiFail(const HttpResponder& respond, int http_status, absl::string_view message,
                absl::string_view code = "") {
  respond(http_status, kJson,
          http_api::OpenAiError(message, http_api::OpenAiErrorType(http_status), code));
}
void OpenAiFail(const HttpResponder& respond, const absl::Status& s) {
  OpenAiFail(respond, http_api::HttpStatusOf(s.code()), s.message());
}
void TeiFail(const HttpResponder& respond, const absl::Status& s) {
  const int status = http_api::HttpStatusOf(s.code());
  const char* type = status == 429   ? "overloaded"
                     : status == 503 ? "unhealthy"
                     : status < 500  ? "validation"
                                     : "backend";
  respond(status, kJson, http_api::TeiError(s.message(), type));
}

std::vector<absl::string_view> Views(const std::vector<std::string>& texts) {
  return std::vector<absl::string_view>(texts.begin(), texts.end());
}

CallControl ControlOf(const std::shared_ptr<const std::atomic<bool>>& cancelled) {
  CallControl control;
  control.is_cancelled = [cancelled] { return cancelled->load(std::memory_order_relaxed); };
  return control;
}

// The model names a client may ask for: the served name, or its last path part
// ("all-MiniLM-L6-v2" for "sentence-transformers/all-MiniLM-L6-v2").
bool ServesModel(const PipelineModel& m, const std::string& asked) {
  if (asked.empty() || asked == m.name) return true;
  const size_t slash = m.name.rfind('/');
  return slash != std::string::npos && asked == m.name.substr(slash + 1);
}

void OpenAiEmbeddings(EmbeddingPipeline* pipeline, const HttpRequest& request,
                      CallControl control, HttpResponder respond) {
  auto parsed = http_api::ParseOpenAiEmbeddingsRequest(request.body);
  if (!parsed.ok()) return OpenAiFail(respond, parsed.status());
  const PipelineModel* model = pipeline->model();
  if (model == nullptr || !pipeline->serving()) return OpenAiFail(respond, NotServingError());
  if (!ServesModel(*model, parsed->model)) {
    return OpenAiFail(respond, 404,
                      absl::StrCat("The model '", parsed->model, "' does not exist; this server "
                                   "serves '", model->name, "'"),
                      "model_not_found");
  }
  if (parsed->dimensions.has_value() && *parsed->dimensions != model->backend.dimension) {
    return OpenAiFail(respond, 400,
                      absl::StrCat("dimensions must equal the model's ", model->backend.dimension,
                                   " (this model cannot shorten its vectors); was ",
                                   *parsed->dimensions));
  }
  RequestOptions options;
  options.list_name = "input";
  const bool base64 = parsed->base64;
  std::string name = model->name;
  auto done = [respond, base64, name = std::move(name)](EmbedResult r) {
    if (!r.status.ok()) return OpenAiFail(respond, r.status);
    // Runs on a batcher worker: the JSON is written on the I/O thread instead.
    auto result = std::make_shared<EmbedResult>(std::move(r));
    respond.Deferred(200, kJson, [result, base64, name] {
      const EmbeddingMatrix& m = result->embeddings;
      return http_api::OpenAiEmbeddingsResponse(m.values.data(), m.rows, m.dim, base64, name,
                                                result->prompt_tokens);
    });
  };
  if (!parsed->token_ids.empty()) {
    pipeline->EmbedTokens(std::move(parsed->token_ids), options, std::move(control),
                          std::move(done));
  } else {
    pipeline->Embed(Views(parsed->texts), options, std::move(control), std::move(done));
  }
}

void TeiEmbed(EmbeddingPipeline* pipeline, const HttpRequest& request, CallControl control,
              HttpResponder respond) {
  auto parsed = http_api::ParseTeiInputsRequest(request.body);
  if (!parsed.ok()) return TeiFail(respond, parsed.status());
  RequestOptions options;
  options.list_name = "inputs";
  options.normalize = parsed->normalize;
  options.truncate = parsed->truncate.value_or(true);
  pipeline->Embed(Views(parsed->inputs), options, std::move(control), [respond](EmbedResult r) {
    if (!r.status.ok()) return TeiFail(respond, r.status);
    auto m = std::make_shared<EmbeddingMatrix>(std::move(r.embeddings));
    respond.Deferred(200, kJson,
                     [m] { return http_api::TeiEmbedResponse(m->values.data(), m->rows, m->dim); });
  });
}

void TeiSimilarity(EmbeddingPipeline* pipeline, const HttpRequest& request, CallControl control,
                   HttpResponder respond) {
  auto parsed = http_api::ParseTeiSimilarityRequest(request.body);
  if (!parsed.ok()) return TeiFail(respond, parsed.status());
  std::vector<std::pair<absl::string_view, absl::string_view>> pairs;
  pairs.reserve(parsed->sentences.size());
  for (const std::string& s : parsed->sentences) pairs.emplace_back(parsed->source_sentence, s);
  RequestOptions options;
  options.truncate = parsed->truncate.value_or(true);
  pipeline->Similarity(pairs, options, std::move(control), [respond](SimilarityResult r) {
    if (!r.status.ok()) return TeiFail(respond, r.status);
    respond(200, kJson,
            http_api::FloatArray(r.scores.data(), static_cast<int64_t>(r.scores.size())));
  });
}

void TeiTokenize(EmbeddingPipeline* pipeline, const HttpRequest& request,
                 const CallControl& control, const HttpResponder& respond) {
  auto parsed = http_api::ParseTeiInputsRequest(request.body);
  if (!parsed.ok()) return TeiFail(respond, parsed.status());
  RequestOptions options;
  options.list_name = "inputs";
  options.truncate = parsed->truncate.value_or(true);
  const TokenizeResult r = pipeline->Tokenize(Views(parsed->inputs), options, control);
  if (!r.status.ok()) return TeiFail(respond, r.status);
  const PipelineModel* model = pipeline->model();
  respond(200, kJson, http_api::TeiTokenizeResponse(r.tokens, model->cls_id, model->sep_id));
}

void CountTransportError(ServerMetrics* metrics, HttpTransportError error) {
  if (metrics != nullptr) metrics->OnHttpTransportError(error);
}

// GET /metrics: the Prometheus text format (prometheus-cpp's TextSerializer).
void AnswerMetrics(const ServerMetrics* metrics, const HttpResponder& respond) {
  respond(200, "text/plain; version=0.0.4",
          metrics == nullptr ? std::string() : metrics->RenderPrometheus());
}

// The API-key check of `keys` (null: none) for `path`: OK, or UNAUTHENTICATED.
absl::Status Authenticate(const ApiKeys* keys, absl::string_view path,
                          const HttpRequest& request) {
  if (keys == nullptr ||
      (keys->exempt_health_and_metrics() && ApiKeys::IsHealthOrMetricsPath(path))) {
    return absl::OkStatus();
  }
  return keys->Check(request.authorization, request.x_api_key);
}

HttpRoute RouteOf(absl::string_view path) {
  if (path == "/v1/embeddings") return HttpRoute::kOpenAiEmbeddings;
  if (path == "/embed" || path == "/") return HttpRoute::kEmbed;
  if (path == "/similarity") return HttpRoute::kSimilarity;
  if (path == "/tokenize") return HttpRoute::kTokenize;
  if (path == "/info") return HttpRoute::kInfo;
  if (path == "/health") return HttpRoute::kHealth;
  if (path == "/metrics") return HttpRoute::kMetrics;
  return HttpRoute::kOther;
}

}  // namespace

HttpFrontDoor::HttpFrontDoor(const Options& options, EmbeddingPipeline* pipeline,
                             ServerMetrics* metrics)
    : options_(options), pipeline_(pipeline), metrics_(metrics) {}

void HttpFrontDoor::Handle(const HttpRequest& request,
                           std::shared_ptr<const std::atomic<bool>> cancelled,
                           HttpResponder answer) {
  const absl::string_view path =
      absl::string_view(request.target).substr(0, request.target.find('?'));
  // Every answer is counted by route and status.
  const Clock* clock = pipeline_->clock();
  HttpResponder respond([answer = std::move(answer), metrics = metrics_, route = RouteOf(path),
                         clock, start_us = clock->NowMicros()](
                            int status, std::string type, std::function<std::string()> make) {
    if (metrics != nullptr) metrics->OnHttpRequest(route, status, clock->NowMicros() - start_us);
    answer.Deferred(status, type, std::move(make));
  });
  const bool post = request.method == "POST";
  const bool get = request.method == "GET";
  auto wrong_method = [&](const char* allowed) {
    OpenAiFail(respond, 405, absl::StrCat(request.method, " ", path, " is not supported; use ",
                                          allowed));
  };
  if (absl::Status s = Authenticate(options_.api_keys.get(), path, request); !s.ok()) {
    // OpenAI's error object under /v1/, TEI's elsewhere.
    if (absl::StartsWith(path, "/v1/")) return OpenAiFail(respond, 401, s.message(), "invalid_api_key");
    return respond(401, kJson, http_api::TeiError(s.message(), "unauthorized"));
  }
  if (path == "/v1/embeddings") {
    if (!post) return wrong_method("POST");
    return OpenAiEmbeddings(pipeline_, request, ControlOf(cancelled), std::move(respond));
  }
  if (path == "/embed" || path == "/") {
    if (!post) return wrong_method("POST");
    return TeiEmbed(pipeline_, request, ControlOf(cancelled), std::move(respond));
  }
  if (path == "/similarity") {
    if (!post) return wrong_method("POST");
    return TeiSimilarity(pipeline_, request, ControlOf(cancelled), std::move(respond));
  }
  if (path == "/tokenize") {
    if (!post) return wrong_method("POST");
    return TeiTokenize(pipeline_, request, ControlOf(cancelled), respond);
  }
  if (path == "/health") {
    if (!get) return wrong_method("GET");
    const bool ok = healthy_.load(std::memory_order_acquire) && pipeline_->serving();
    return respond(ok ? 200 : 503, kJson,
                   ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}");
  }
  if (path == "/metrics") {
    if (!get) return wrong_method("GET");
    return AnswerMetrics(metrics_, respond);
  }
  if (path == "/info") {
    if (!get) return wrong_method("GET");
    const PipelineModel* m = pipeline_->model();
    if (m == nullptr) return TeiFail(respond, NotServingError());
    const nlohmann::json info = {
        {"model_id", m->name},
        {"model_dtype", m->backend.precision == "fp16"   ? "float16"
                        : m->backend.precision == "bf16" ? "bfloat16"
                                                         : "float32"},
        {"model_type", {{"embedding", {{"pooling", m->backend.pooling}}}}},
        {"dimension", m->backend.dimension},
        {"max_concurrent_requests", options_.max_concurrent_requests},
        {"max_input_length", m->max_seq_length},
        {"max_batch_tokens", options_.max_batch_tokens},
        {"max_client_batch_size", pipeline_->options().max_texts_per_request},
        {"normalize", m->backend.normalize},
        {"device", m->backend.device},
        {"version", options_.version},
    };
    return respond(200, kJson, info.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  OpenAiFail(respond, 404, absl::StrCat("no route for ", request.method, " ", path), "not_found");
}

void HttpFrontDoor::OnTransportError(HttpTransportError error) {
  CountTransportError(metrics_, error);
}

void MetricsHandler::OnTransportError(HttpTransportError error) {
  CountTransportError(metrics_, error);
}

void MetricsHandler::Handle(const HttpRequest& request,
                            std::shared_ptr<const std::atomic<bool>> /*cancelled*/,
                            HttpResponder respond) {
  const absl::string_view path =
      absl::string_view(request.target).substr(0, request.target.find('?'));
  if (absl::Status s = Authenticate(api_keys_.get(), path, request); !s.ok()) {
    return respond(401, "text/plain", absl::StrCat(s.message(), "\n"));
  }
  if (path == "/metrics") {
    return AnswerMetrics(metrics_, respond);
  }
  if (path == "/healthz") return respond(200, "text/plain", "ok\n");
  respond(404, "text/plain", "not found\n");
}

}  // namespace embedserve
