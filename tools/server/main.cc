// embedserve: the gRPC sentence-embedding server.
//   embedserve --config experiments/minilm_batching.yaml [--port 50051] [--model DIR] ...
// Validates the config, starts gRPC (health NOT_SERVING), loads and warms up the model,
// turns SERVING, and serves until SIGINT/SIGTERM; then refuses new calls, answers the
// accepted ones within server.shutdown_grace_ms and exits 0. A SIGINT/SIGTERM before
// SERVING (config, loading, warm-up) exits 0 at once: nothing has been accepted.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "embedserve/common/mutex.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/config/server_config.h"
#include "embedserve/model/backend_pool.h"
#include "embedserve/model/cpu_environment.h"
#include "embedserve/model/model_loader.h"
#include "embedserve/model/model_options.h"
#include "embedserve/server/server.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace embedserve {
namespace {

sigset_t StopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

// SIGINT/SIGTERM are taken by sigwait on one thread (StopSignalHandler). Blocked from
// .preinit_array, i.e. once the dynamic loader has mapped the libraries and before any
// library's initializers (LibTorch's take seconds on a busy machine) or main run, and
// so before any thread starts: every thread inherits the mask, and a SIGTERM from then
// on never takes the default action (death by signal 15).
void BlockStopSignals(int /*argc*/, char** /*argv*/, char** /*envp*/) {
  const sigset_t signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}
__attribute__((section(".preinit_array"), used)) void (*const kBlockStopSignals)(
    int, char**, char**) = BlockStopSignals;

// Where the process stands for SIGINT/SIGTERM: before SERVING it exits at once (nothing
// accepted); after, main shuts the server down.
class StopSignalHandler {
 public:
  // Starts the thread that waits for the signals.
  StopSignalHandler() {
    std::thread([this] {
      const sigset_t signals = StopSignals();
      int signal_number = 0;
      sigwait(&signals, &signal_number);
      MutexLock lock(&mu_);
      if (!serving_) {
        std::fprintf(stderr, "embedserve: received %s before serving (nothing accepted): exit 0\n",
                     Name(signal_number));
        std::fflush(stderr);
        std::_Exit(0);
      }
      signal_ = signal_number;
      cv_.NotifyAll();
    }).detach();
  }

  // The server's ServeGate: from now on a signal means a graceful shutdown.
  bool TurnServing() {
    MutexLock lock(&mu_);
    serving_ = true;
    return true;
  }

  // Blocks until SIGINT or SIGTERM arrives once serving; returns its name.
  const char* Wait() {
    MutexLock lock(&mu_);
    while (signal_ == 0) cv_.Wait(&mu_);
    return Name(signal_);
  }

 private:
  static const char* Name(int signal_number) {
    return signal_number == SIGINT ? "SIGINT" : "SIGTERM";
  }

  Mutex mu_;
  CondVar cv_;  // signal_ set
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  int signal_ ABSL_GUARDED_BY(mu_) = 0;
};

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
  options.cuda_graph_max_batch = config.model.cuda_graph_max_batch;
  options.tf32 = config.model.tf32;
  options.cpu_nice = config.model.cpu_nice;
  options.cpu_pin_threads = config.model.cpu_pin_threads;
  options.cpu_sched_idle = config.model.cpu_sched_idle;
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

// Hands freed heap memory back to the kernel every 10 s (glibc's malloc_trim), so that a
// burst (64 streams' buffers, a large request) does not leave its peak resident for good:
// glibc returns freed memory in its per-thread arenas only when asked. Each call takes
// the arenas' locks briefly; once per 10 s it costs nothing measurable.
class MemoryTrimmer {
 public:
  MemoryTrimmer() : thread_([this] { Loop(); }) {}
  ~MemoryTrimmer() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.NotifyAll();
    thread_.join();
  }

 private:
  void Loop() {
    MutexLock lock(&mu_);
    while (!stop_) {
      cv_.WaitFor(&mu_, 10'000'000);
      if (stop_) break;
      mu_.Unlock();
      malloc_trim(0);
      mu_.Lock();
    }
  }
  Mutex mu_;
  CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

int Run(int argc, char** argv) {
  BlockStopSignals(argc, argv, nullptr);  // again, in case .preinit_array did not run
  // Lives as long as the process: its thread may take a signal while exit() runs.
  auto& stop_signals = *new StopSignalHandler();
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

  spdlog::info("embedserve {} starting: config {}", EMBEDSERVE_VERSION_STRING,
               f.config_path.empty() ? "(defaults)" : f.config_path);
  // Before any server thread exists: gRPC's, HTTP's and the batcher's threads, and the
  // model's OpenMP teams, inherit the slice from this one.
  if (config.server.cpu_slice_us != 0) {
    if (absl::Status s = SetThreadSchedSlice(config.server.cpu_slice_us); s.ok()) {
      spdlog::info("scheduler slice {} us for the server's threads (server.cpu_slice_us)",
                   config.server.cpu_slice_us);
    } else {
      spdlog::info("server.cpu_slice_us {} not applied: {}", config.server.cpu_slice_us,
                   std::string(s.message()));
    }
  }
  auto server = EmbedServer::Start(
      config, [&config] { return LoadServingModel(config); }, /*clock=*/nullptr,
      [&stop_signals] { return stop_signals.TurnServing(); });
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

  MemoryTrimmer trimmer;
  const char* signal_name = stop_signals.Wait();
  spdlog::info("received {}: NOT_SERVING, answering accepted calls (grace {} ms)", signal_name,
               config.server.shutdown_grace_ms);
  (*server)->Shutdown(config.server.shutdown_grace_ms * 1000);
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace embedserve

// The CPU math libraries read their settings once, as they load, before main
// (cpu_environment.h): the server sets what is unset and runs itself again, once.
// LibTorch's OpenMP threads (libgomp) wait for the next parallel region by spinning for
// a while (libgomp's default: ~300,000 rounds, ~9 ms on the 2-vCPU Xeon) and then
// sleeping. Spinning long takes the cores from gRPC's threads and from refusing calls
// under overload (the overload test's capacity on a shared 2-core machine was ~4 heavy
// calls/s with OMP_WAIT_POLICY=ACTIVE, ~53/s PASSIVE); sleeping at once
// (PASSIVE) makes every one of a forward's ~30 parallel regions wake a thread through the
// hypervisor (~0.15 ms each: batch-1 fp32 forward 6-9 ms passive, 2-3 ms spinning,
// docs/results/cpu-peers). So unless the caller chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT
// set), the server spins for GOMP_SPINCOUNT=10000 rounds (~0.5 ms, longer than the gaps
// inside one forward, short against the gaps between requests) and then sleeps. And an
// OpenBLAS that does not know the CPU gets the AVX2/AVX-512 kernels named.
//
// gRPC 1.51's locks are absl::Mutex, and Debian builds abseil without NDEBUG, so every
// lock would also run absl's deadlock detector: a process-wide spin lock, a lookup in a
// global lock graph and, for a new lock order, a stack trace. That is a debugging aid
// (a few percent of the gRPC threads' CPU per call, and a lock all of them share); the
// server's own code locks std::mutex (common/mutex.h), so nothing of ours is unchecked.
int main(int argc, char** argv) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  embedserve::CpuEnvironmentOptions env;
  env.brief_omp_spin = true;
  embedserve::ReexecWithCpuEnvironment(argv, env);
  return embedserve::Run(argc, argv);
}
