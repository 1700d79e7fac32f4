#include "embedserve/server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "embedserve/batching/batcher.h"
#include "embedserve/common/mutex.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/model/backend.h"
#include "embedserve/server/embedding_service.h"
#include "embedserve/server/metrics.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "config/to_options.h"
#include "embedserve/batching/clock.h"
#include "http/http_front_door.h"
#include "http/http_server.h"
#include "pipeline/embedding_pipeline.h"
#include "security/api_keys.h"
#include "security/grpc_credentials.h"
#include "security/tls_files.h"

namespace embedserve {

ServingModel::ServingModel() = default;
ServingModel::ServingModel(std::unique_ptr<Tokenizer> t, std::unique_ptr<Backend> b)
    : tokenizer(std::move(t)), backend(std::move(b)) {}
ServingModel::ServingModel(ServingModel&&) noexcept = default;
ServingModel& ServingModel::operator=(ServingModel&&) noexcept = default;
ServingModel::~ServingModel() = default;

namespace {

constexpr char kServiceName[] = "embedserve.v1.EmbeddingService";
// Largest request metadata (headers) gRPC accepts; see Start.
constexpr int kMaxMetadataBytes = 64 << 10;
// At shutdown, how long no new call must arrive before gRPC is stopped; see StopGrpc.
constexpr std::chrono::milliseconds kQuietBeforeStop(100);

std::string HostPort(const std::string& host, int port) {
  // IPv6 literals need brackets.
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

class EmbedServer::Impl {
 public:
  Impl(const ServerConfig& config, Clock* clock)
      : config_(config), clock_(clock == nullptr ? RealClock() : clock) {}

  ~Impl() { Shutdown(0); }

  absl::Status Start(ModelFactory load_model, const ServeGate& serve_gate) {
    ES_RETURN_IF_ERROR(config_.Validate());
    // Security files and keys first: a bad one stops the start before anything listens.
    std::unique_ptr<TlsMaterial> tls;
    if (config_.server.tls.enabled()) {
      ES_ASSIGN_OR_RETURN(TlsMaterial material, LoadTlsMaterial(config_.server.tls));
      tls = std::make_unique<TlsMaterial>(std::move(material));
    }
    ES_ASSIGN_OR_RETURN(std::shared_ptr<const ApiKeys> api_keys,
                        ApiKeys::Load(config_.server.auth, &std::getenv));
    LogSecurity(api_keys.get());
    metrics_ = std::make_unique<ServerMetrics>();

    ES_ASSIGN_OR_RETURN(pipeline_, EmbeddingPipeline::Create(ToPipelineOptions(config_),
                                                              metrics_.get(), clock_));

    EmbeddingService::Options so;
    so.max_stream_backlog = config_.server.max_stream_backlog;
    so.max_stream_backlog_bytes = config_.server.max_stream_backlog_bytes;
    so.max_stream_sequences = std::max(1, config_.batching.max_queue_sequences / 2);
    so.stream_queue_percent = config_.server.stream_queue_percent;
    so.max_message_bytes = config_.server.max_message_bytes;
    so.grpc_queues = config_.server.grpc_queues;
    so.versions = {{"embedserve", EMBEDSERVE_VERSION_STRING},
                   {"grpc", grpc::Version()}};
    v1::BatchingInfo& bi = so.batching_info;
    bi.set_enabled(config_.batching.enabled);
    bi.set_max_batch_size(config_.batching.max_batch_size);
    bi.set_max_batch_tokens(config_.batching.max_batch_tokens);
    bi.set_max_queue_delay_us(config_.batching.max_queue_delay_us);
    bi.set_max_queue_sequences(config_.batching.max_queue_sequences);
    bi.set_workers(ToBatcherOptions(config_, BackendInfo()).num_workers);  // all instances
    ES_ASSIGN_OR_RETURN(service_, EmbeddingService::Create(so, pipeline_.get(), metrics_.get()));

    // gRPC: the service, health (NOT_SERVING until warmed up) and reflection.
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    const std::string address = HostPort(config_.server.host, config_.server.port);
    builder.AddListeningPort(address, MakeGrpcServerCredentials(tls.get(), api_keys), &port_);
    builder.RegisterService(service_.get());
    service_->AddQueues(&builder);
    builder.SetMaxReceiveMessageSize(static_cast<int>(config_.server.max_message_bytes));
    builder.SetMaxSendMessageSize(static_cast<int>(config_.server.max_message_bytes));
    // Compressed requests are refused (UNIMPLEMENTED, "Compression algorithm 'gzip' is
    // disabled") when their headers arrive, before the body is read: gRPC 1.51 checks
    // max_message_bytes against the compressed size only and inflates without a bound,
    // so a 1.5 MB gzip body could inflate to gigabytes. Replies are never compressed.
    builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
    builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
    // A second server on a busy port fails to start instead of sharing the port
    // (gRPC's default SO_REUSEPORT would split new connections between the two).
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    // Request headers (metadata) up to kMaxMetadataBytes. Past gRPC 1.51's limit the
    // transport fails the whole connection, every call on it included, so the limit is
    // set well above what a client sends (gRPC's default is 8 KiB).
    builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, kMaxMetadataBytes);
    if (config_.server.threads > 0) {
      grpc::ResourceQuota quota("embedserve");
      quota.SetMaxThreads(config_.server.threads);
      builder.SetResourceQuota(quota);
    }
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      server_.reset();
      service_->StopQueues();
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on ", address,
          " (port in use or address not local?); set server.port / --port to a free "
          "port, or 0 for any"));
    }
    service_->StartQueues();
    health_ = server_->GetHealthCheckService();
    SetHealth(false);
    // HTTP: the API port (OpenAI and TEI routes, /health, /metrics) and the metrics
    // port (/metrics only), two listeners of one server.
    std::vector<HttpServer::Listener> listeners;
    if (config_.server.http_port >= 0) {
      HttpFrontDoor::Options fo;
      fo.api_keys = api_keys;
      fo.version = EMBEDSERVE_VERSION_STRING;
      fo.max_batch_tokens = config_.batching.max_batch_tokens;
      fo.max_concurrent_requests = config_.batching.max_queue_sequences;
      front_door_ = std::make_unique<HttpFrontDoor>(fo, pipeline_.get(), metrics_.get());
      http_index_ = static_cast<int>(listeners.size());
      listeners.push_back({config_.server.http_port, front_door_.get()});
    }
    if (config_.server.metrics_port >= 0) {
      metrics_handler_ = std::make_unique<MetricsHandler>(metrics_.get(), api_keys);
      metrics_index_ = static_cast<int>(listeners.size());
      listeners.push_back({config_.server.metrics_port, metrics_handler_.get()});
    }
    if (!listeners.empty()) {
      auto http = HttpServer::Start(ToHttpServerOptions(config_, tls.get()), listeners);
      if (!http.ok()) {
        StopGrpc(std::chrono::steady_clock::now());
        service_->StopQueues();
        return http.status();
      }
      http_ = *std::move(http);
    }

    // The model (gRPC answers NOT_SERVING / UNAVAILABLE meanwhile); should it fail,
    // everything started above stops again.
    if (absl::Status s = LoadModelAndServe(load_model, serve_gate); !s.ok()) {
      StopAll(0);
      return s;
    }
    return absl::OkStatus();
  }

  // Start's second half: loads the model, attaches it to the pipeline, warms it up and
  // opens the doors. The caller stops everything when it fails.
  absl::Status LoadModelAndServe(const ModelFactory& load_model, const ServeGate& serve_gate) {
    ES_ASSIGN_OR_RETURN(model_, load_model());
    if (model_.tokenizer == nullptr || model_.backend == nullptr) {
      return absl::InvalidArgumentError("the model factory returned no tokenizer or backend");
    }
    const BackendInfo& info = model_.backend->Info();
    const Batcher::Options bo = ToBatcherOptions(config_, info);
    const int64_t seq_len = config_.model.max_seq_length > 0 ? config_.model.max_seq_length
                                                             : info.max_seq_length;
    if (bo.max_batch_tokens < seq_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batching.max_batch_tokens must be >= max_seq_length (", seq_len,
          ") so that every text fits in a batch; was ", bo.max_batch_tokens));
    }
    ES_ASSIGN_OR_RETURN(batcher_,
                        Batcher::Create(bo, model_.backend.get(), metrics_.get(), clock_));
    ES_RETURN_IF_ERROR(
        pipeline_->AttachModel(model_.tokenizer.get(), model_.backend.get(), batcher_.get()));
    if (config_.server.warmup) {
      if (absl::Status s = Warmup(); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("warm-up failed: ", s.message()));
      }
    }
    summary_ = MakeSummary(info, seq_len);
    if (serve_gate && !serve_gate()) {
      return absl::CancelledError("stopped before serving (the start was called off)");
    }
    service_->SetServing(true);
    SetHealth(true);
    return absl::OkStatus();
  }

  void Shutdown(int64_t grace_us) {
    {
      MutexLock lock(&mu_);
      if (shut_down_ || shutting_down_) {
        while (!shut_down_) shut_down_cv_.Wait(&mu_);
        return;
      }
      shutting_down_ = true;
    }
    StopAll(grace_us);
    {
      MutexLock lock(&mu_);
      shut_down_ = true;
    }
    shut_down_cv_.NotifyAll();
  }

  void Wait() {
    MutexLock lock(&mu_);
    while (!shut_down_) shut_down_cv_.Wait(&mu_);
  }

  int port() const { return port_; }
  int metrics_port() const { return metrics_index_ >= 0 ? http_->port(metrics_index_) : -1; }
  int http_port() const { return http_index_ >= 0 ? http_->port(http_index_) : -1; }
  const ServerConfig& config() const { return config_; }
  const ServerMetrics& metrics() const { return *metrics_; }
  const std::string& summary() const { return summary_; }

 private:
  // One line on what guards the ports; names files and variables, never a key.
  void LogSecurity(const ApiKeys* api_keys) const {
    const TlsSection& t = config_.server.tls;
    spdlog::info(
        "security: {}; {}",
        !t.enabled() ? std::string("plaintext (no server.tls)")
        : t.client_ca_file.empty()
            ? absl::StrCat("TLS on every port (", t.cert_file, ")")
            : absl::StrCat("mTLS on every port (", t.cert_file, ", client CA ", t.client_ca_file, ")"),
        api_keys == nullptr
            ? std::string("no API key needed (no server.auth)")
            : absl::StrCat("API keys: ", api_keys->origin(),
                           api_keys->exempt_health_and_metrics()
                               ? "; health and metrics need none"
                               : "; health and metrics need one too"));
  }

  void SetHealth(bool serving) {
    if (front_door_ != nullptr) front_door_->SetHealthy(serving);
    if (health_ == nullptr) return;
    health_->SetServingStatus(serving);  // "" (the whole server) and every service
    health_->SetServingStatus(kServiceName, serving);
  }

  // Stops gRPC once every accepted call is answered, or at `deadline`.
  void StopGrpc(std::chrono::steady_clock::time_point deadline) {
    if (server_ == nullptr) return;
    // gRPC keeps running while the service answers the calls it has accepted (the
    // batcher keeps running): a call that arrives meanwhile gets UNAVAILABLE from the
    // service, a health Check NOT_SERVING. gRPC's own Shutdown comes only when no call is
    // left and none has arrived for kQuietBeforeStop, because it cancels (CANCELLED)
    // every call that reaches the server after it began and before its GOAWAY reached
    // the client; a client just answered thus gets its next call's UNAVAILABLE first.
    // It gets no grace: what is left (health Watch streams, calls past the grace) ends at
    // once, so idle connections and watches never hold the exit.
    if (service_ != nullptr) service_->WaitForCalls(deadline, kQuietBeforeStop);
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }

  void StopAll(int64_t grace_us) {
    SetHealth(false);
    // server.shutdown_delay_ms: health says NOT_SERVING while calls are still served, so
    // probes and load balancers take this replica out before it refuses anything.
    if (config_.server.shutdown_delay_ms > 0 && server_ != nullptr) {
      std::this_thread::sleep_for(std::chrono::milliseconds(config_.server.shutdown_delay_ms));
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(grace_us);
    // New calls get UNAVAILABLE (HTTP 503) from now on; open streams drain.
    if (service_ != nullptr) service_->SetServing(false);
    if (http_ != nullptr) http_->StopAccepting();
    StopGrpc(deadline);
    if (batcher_ != nullptr) {
      batcher_->Shutdown(std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::microseconds>(
                 deadline - std::chrono::steady_clock::now())
                 .count()));
    }
    // Every accepted call has been answered (the batcher flushed): close what is left.
    if (service_ != nullptr) service_->StopQueues();
    if (http_ != nullptr) http_->Stop();
  }

  absl::Status Warmup() {
    // One batch of a few short sequences through the whole batcher path.
    const Tokenizer& tok = *model_.tokenizer;
    BatchRequest request;
    for (const char* text : {"warm up", "embedserve warm-up sentence", ""}) {
      auto enc = tok.Encode(text, 64);
      if (!enc.ok()) return enc.status();
      request.sequences.push_back(std::move(enc->ids));
    }
    absl::Notification done;
    absl::Status result;
    request.done = [&](absl::StatusOr<EmbeddingMatrix> m, const RequestTimings&) {
      result = m.status();
      done.Notify();
    };
    ES_RETURN_IF_ERROR(batcher_->Submit(std::move(request)));
    done.WaitForNotification();
    return result;
  }

  std::string MakeSummary(const BackendInfo& info, int64_t seq_len) const {
    const auto& b = config_.batching;
    const Batcher::Options bo = ToBatcherOptions(config_, info);
    const int32_t workers = bo.num_workers;
    std::string batching =
        b.enabled
            ? absl::StrCat("batching on (max ", b.max_batch_size, " seqs, ",
                           b.max_batch_tokens, " tokens, ",
                           static_cast<double>(b.max_queue_delay_us) / 1000.0, " ms, ",
                           workers, workers == 1 ? " worker" : " workers",
                           bo.express_max_tokens > 0
                               ? absl::StrCat(", express lane <= ", bo.express_max_tokens,
                                              " tokens)")
                               : ")")
            : absl::StrCat("batching off (one request per forward, ", workers,
                           workers == 1 ? " worker)" : " workers)");
    const std::string& name =
        !config_.model.name.empty() ? config_.model.name : info.model_name;
    return absl::StrCat("Loaded ", name.empty() ? "model" : name, " (",
                        info.synthetic ? "synthetic weights" : "pretrained weights", ", ",
                        info.model_path, ") on ", info.device, ", ", Upper(info.precision),
                        ", ", info.dimension, " dims, max ", seq_len, " tokens, ", batching);
  }

  const ServerConfig config_;
  Clock* const clock_;  // the pipeline's and the batcher's time line
  // Destruction order matters: gRPC first, then the batcher, then the model.
  ServingModel model_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<EmbeddingPipeline> pipeline_;
  std::unique_ptr<EmbeddingService> service_;
  std::unique_ptr<HttpFrontDoor> front_door_;
  std::unique_ptr<MetricsHandler> metrics_handler_;
  std::unique_ptr<HttpServer> http_;
  int http_index_ = -1;     // listener of http_port in http_, -1 off
  int metrics_index_ = -1;  // listener of metrics_port in http_, -1 off
  std::unique_ptr<grpc::Server> server_;
  grpc::HealthCheckServiceInterface* health_ = nullptr;
  int port_ = 0;
  std::string summary_;

  Mutex mu_;
  CondVar shut_down_cv_;  // shut_down_ turned true
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<EmbedServer>> EmbedServer::Start(const ServerConfig& config,
                                                                ModelFactory load_model,
                                                                Clock* clock,
                                                                ServeGate serve_gate) {
  auto impl = std::make_unique<Impl>(config, clock);
  ES_RETURN_IF_ERROR(impl->Start(std::move(load_model), serve_gate));
  return std::unique_ptr<EmbedServer>(new EmbedServer(std::move(impl)));
}

EmbedServer::EmbedServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EmbedServer::~EmbedServer() = default;

int EmbedServer::port() const { return impl_->port(); }
int EmbedServer::metrics_port() const { return impl_->metrics_port(); }
int EmbedServer::http_port() const { return impl_->http_port(); }
std::string EmbedServer::address() const {
  return HostPort(impl_->config().server.host, impl_->port());
}
const ServerConfig& EmbedServer::config() const { return impl_->config(); }
const ServerMetrics& EmbedServer::metrics() const { return impl_->metrics(); }
std::string EmbedServer::Summary() const { return impl_->summary(); }
void EmbedServer::Shutdown(int64_t grace_us) { impl_->Shutdown(grace_us); }
void EmbedServer::Wait() { impl_->Wait(); }

absl::StatusOr<std::unique_ptr<EmbedServer>> StartServer(const ServerConfig& config,
                                                         ServingModel model, Clock* clock) {
  auto holder = std::make_shared<ServingModel>(std::move(model));
  return EmbedServer::Start(
      config, [holder]() -> absl::StatusOr<ServingModel> { return std::move(*holder); }, clock);
}

}  // namespace embedserve
