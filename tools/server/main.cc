// embedserve: the gRPC sentence-embedding server.
//   embedserve --config experiments/minilm_batching.yaml [--port 50051] [--model DIR] ...
// Validates the config, starts gRPC (health NOT_SERVING), loads and warms up the model,
// turns SERVING, and serves until SIGINT/SIGTERM; then refuses new calls, answers the
// accepted ones within server.shutdown_grace_ms and exits 0.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/config/server_config.h"
#include "embedserve/model/backend_pool.h"
#include "embedserve/model/model_loader.h"
#include "embedserve/model/model_options.h"
#include "embedserve/server/server.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace embedserve {
namespace {

struct Flags {
  std::string config_path;
  std::string host, model, device, precision, log_level;
  int port = -2, metrics_port = -2, http_port = -2;
  bool print_config = false;
};

absl::StatusOr<ServingModel> LoadServingModel(const ServerConfig& config) {
  ES_ASSIGN_OR_RETURN(std::string path,
                      ResolveModelPath(config.model, ModelLocatorEnv::FromEnvironment()));
  if (config.model.path.empty() && !config.model.name.empty() &&
      path == config.model.fallback_path) {
    spdlog::warn("{} is not in the Hugging Face cache; serving model.fallback_path {} instead",
                 config.model.name, path);
  }
  const std::vector<std::string> devices = config.model.InstanceDevices();
  ModelOptions options;
  options.path = path;
  // A precision this machine cannot run falls back (with a warning), never a failed start.
  // Validate() keeps model.devices all CPU or all GPU, so the first device decides.
  const PrecisionChoice precision =
      ChoosePrecision(devices[0], config.model.precision, config.model.quantized);
  options.precision = precision.precision;
  if (!precision.fallback_reason.empty()) {
    spdlog::warn("{}", precision.fallback_reason);
  } else if (config.model.quantized) {
    spdlog::info("quantized: true -> {}", options.precision);
  }
  options.num_threads = config.model.threads;
  options.max_seq_length = config.model.max_seq_length;
  options.cuda_graphs = config.model.cuda_graphs;
  options.tf32 = config.model.tf32;
  if (devices.size() == 1) {
    options.device = devices[0];
    spdlog::info("loading {} on {} ({})", path, options.device, options.precision);
    ES_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options));
    return ServingModel(std::move(loaded.tokenizer), std::move(loaded.backend));
  }
  // model.devices / instances_per_device: one copy per instance, one batcher for all.
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<std::unique_ptr<Backend>> instances;
  for (size_t i = 0; i < devices.size(); ++i) {
    options.device = devices[i];
    spdlog::info("loading {} on {} ({}), instance {} of {}", path, options.device,
                 options.precision, i + 1, devices.size());
    ES_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options));
    if (tokenizer == nullptr) tokenizer = std::move(loaded.tokenizer);
    instances.push_back(std::move(loaded.backend));
  }
  ES_ASSIGN_OR_RETURN(std::unique_ptr<BackendPool> pool, BackendPool::Create(std::move(instances)));
  return ServingModel(std::move(tokenizer), std::move(pool));
}

int Run(int argc, char** argv) {
  CLI::App app{
      "embedserve: gRPC sentence-embedding server (embedserve.v1.EmbeddingService, "
      "grpc.health.v1, reflection; Prometheus /metrics). Flags override the config file."};
  Flags f;
  app.add_option("--config,-c", f.config_path,
                 "Experiment YAML (e.g. experiments/minilm_batching.yaml); defaults apply "
                 "when omitted");
  app.add_option("--host", f.host, "Bind address (server.host)");
  app.add_option("--port", f.port, "gRPC port, 0 = any free port (server.port)");
  app.add_option("--metrics-port", f.metrics_port,
                 "Prometheus port, 0 = any, -1 = off (server.metrics_port)");
  app.add_option("--http-port", f.http_port,
                 "HTTP/JSON API port (OpenAI, TEI), 0 = any, -1 = off (server.http_port)");
  app.add_option("--model", f.model, "Model folder (model.path)");
  app.add_option("--device", f.device, "auto, cpu, cuda, cuda:N (model.device)");
  app.add_option("--precision", f.precision, "fp32, fp16, bf16, int8 (model.precision)");
  app.add_option("--log-level", f.log_level,
                 "trace, debug, info, warn, error, critical, off (logging.level)");
  app.add_flag("--print-config", f.print_config, "Print the effective config and exit");
  CLI11_PARSE(app, argc, argv);

  ServerConfig config;
  if (!f.config_path.empty()) {
    auto loaded = LoadServerConfigFile(f.config_path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "embedserve: %s\n", std::string(loaded.status().message()).c_str());
      return 2;
    }
    config = *std::move(loaded);
  }
  if (!f.host.empty()) config.server.host = f.host;
  if (f.port != -2) config.server.port = f.port;
  if (f.metrics_port != -2) config.server.metrics_port = f.metrics_port;
  if (f.http_port != -2) config.server.http_port = f.http_port;
  if (!f.model.empty()) config.model.path = f.model;
  if (!f.device.empty()) config.model.device = f.device;
  if (!f.precision.empty()) {
    config.model.precision = f.precision;
    config.model.quantized = false;  // an explicit precision wins over `quantized`
  }
  if (!f.log_level.empty()) config.logging.level = f.log_level;
  if (absl::Status s = config.Validate(); !s.ok()) {
    std::fprintf(stderr, "embedserve: %s%s\n",
                 f.config_path.empty() ? "" : (f.config_path + " (with flags): ").c_str(),
                 std::string(s.message()).c_str());
    return 2;
  }
  if (f.print_config) {
    std::fputs(ServerConfigToYaml(config).c_str(), stdout);
    return 0;
  }

  auto logger = spdlog::stderr_color_mt("embedserve");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.logging.level));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");

  // SIGINT/SIGTERM are taken by sigwait on this thread: block them before any thread
  // (gRPC, batcher) starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  spdlog::info("embedserve {} starting: config {}", EMBEDSERVE_VERSION_STRING,
               f.config_path.empty() ? "(defaults)" : f.config_path);
  auto server = EmbedServer::Start(config, [&config] { return LoadServingModel(config); });
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  spdlog::info("{}", (*server)->Summary());
  const int mport = (*server)->metrics_port();
  const int hport = (*server)->http_port();
  const char* scheme = config.server.tls.enabled() ? "https://" : "http://";
  spdlog::info("listening on {} (gRPC{}: embedserve.v1.EmbeddingService, health, reflection){}{}",
               (*server)->address(), config.server.tls.enabled() ? " over TLS" : "",
               mport >= 0 ? absl::StrCat("; metrics on ", scheme, config.server.host, ":", mport,
                                         "/metrics")
                          : std::string(),
               hport >= 0 ? absl::StrCat("; HTTP API on ", scheme, config.server.host, ":", hport,
                                         " (/v1/embeddings, /embed, /similarity, /tokenize)")
                          : std::string());

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}: NOT_SERVING, answering accepted calls (grace {} ms)",
               signal_number == SIGINT ? "SIGINT" : "SIGTERM", config.server.shutdown_grace_ms);
  (*server)->Shutdown(config.server.shutdown_grace_ms * 1000);
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace embedserve

// LibTorch's OpenMP threads (libgomp) spin while they wait unless OMP_WAIT_POLICY says
// otherwise, and libgomp reads it once, as it loads, before main. Spinning threads take
// the cores from gRPC's threads, from refusing calls under overload and from whatever
// else runs on the machine: on the shared 2-core machine the overload test's capacity
// was ~4 heavy calls/s spinning and ~53/s passive (tiny-bert). So the server runs passive
// unless its caller chose a policy: it sets the variable and runs itself again, once.
int main(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") == nullptr &&
      setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) {
    execv("/proc/self/exe", argv);  // returns only when it failed: run as we are
  }
  return embedserve::Run(argc, argv);
}
