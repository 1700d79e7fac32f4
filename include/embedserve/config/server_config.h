// The experiment configuration: what `embedserve --config FILE` reads from YAML
// (experiments/*.yaml) and what the server, the model loader and the benchmark launcher
// are started with. Plain value types; loading is a pure function (safe from any thread).
#ifndef EMBEDSERVE_CONFIG_SERVER_CONFIG_H_
#define EMBEDSERVE_CONFIG_SERVER_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve {

// `server.tls:` TLS on every port the server opens (gRPC, HTTP, metrics), from PEM files
// read at start (docs/security.md). All empty: plaintext.
struct TlsSection {
  std::string cert_file;       // the server's certificate chain (PEM); needs key_file
  std::string key_file;        // its private key (PEM)
  std::string client_ca_file;  // set: mTLS, only clients with a certificate signed by
                               // one of these CAs (PEM) may connect

  bool enabled() const { return !cert_file.empty(); }
  absl::Status Validate() const;
};

// `server.auth:` API keys on gRPC and HTTP alike ("authorization: Bearer <key>" or
// "x-api-key: <key>"). The keys never sit in the config itself (it is printed and
// logged): they come from a file and/or an environment variable, read at start.
struct AuthSection {
  std::string api_keys_file;  // one key per line; blank lines and '#' comments skipped
  std::string api_keys_env;   // name of an environment variable holding keys (comma-separated)
  bool exempt_health_and_metrics = true;  // grpc.health.v1, GET /health, /metrics and
                                          // /healthz need no key (probes, scrapers)

  bool enabled() const { return !api_keys_file.empty() || !api_keys_env.empty(); }
  absl::Status Validate() const;
};

// `server:` section. Where and how the gRPC server listens.
struct ServerSection {
  std::string host = "127.0.0.1";     // bind address; 0.0.0.0 to listen on all interfaces
  int port = 50051;                   // gRPC port; 0 picks a free port (logged)
  int metrics_port = 9000;            // Prometheus /metrics; 0 picks a free port, -1 off
  int http_port = 8080;               // HTTP/JSON API (OpenAI, TEI); 0 any free port, -1 off
  int http_threads = 2;               // HTTP I/O threads (parse, route, write)
  int64_t http_max_body_bytes = 8 << 20;  // larger request bodies get 413
  int64_t http_header_timeout_ms = 10000;  // first byte to end of headers, else dropped
  int64_t http_idle_timeout_ms = 60000;    // keep-alive connection idle between requests
  int64_t max_message_bytes = 64 << 20;  // largest request/response message
  int stream_queue_percent = 50;  // share of the batch queue EmbedStream messages may fill
  int threads = 0;                    // most threads gRPC may use; 0 = gRPC's default
  int grpc_queues = 0;  // 0: every gRPC method on the callback API (gRPC's threads);
                        // N: Embed and Similarity on N completion queues, a thread each
  int max_texts_per_request = 256;    // texts (or pairs) per Embed/Similarity/Tokenize
  int max_stream_backlog = 1024;      // EmbedStream messages in work or unsent before
                                      // the server stops reading that stream
  int64_t max_stream_backlog_bytes = 2 << 20;  // EmbedStream reply bytes unsent before
                                               // the server stops reading that stream
  int64_t shutdown_grace_ms = 10000;  // on SIGTERM: time to answer accepted calls
  int64_t shutdown_delay_ms = 0;      // on SIGTERM: keep serving this long with health
                                      // NOT_SERVING first, so load balancers and
                                      // Kubernetes probes see it before calls are refused
  int cpu_slice_us = 100;  // the scheduler slice of every server thread (Linux >= 6.12):
                           // a woken gRPC/HTTP thread takes a CPU from busy model threads
                           // at once instead of at their next tick; 0 = the kernel's
  bool warmup = true;                 // run one batch through the model before SERVING
  TlsSection tls;                     // TLS / mTLS (server.tls.*)
  AuthSection auth;                   // API keys (server.auth.*)

  absl::Status Validate() const;
};

// `model:` section. Which model folder to load and how.
struct ModelSection {
  std::string name;           // Hugging Face id: looked up in the HF cache when `path` is
                              // unset; the name GetModelInfo and the log show
  std::string path;           // model folder; wins over `name` when set
  std::string fallback_path;  // used (with a warning) when `name` is not in the HF cache
  std::string device = "auto";     // auto, cpu, cuda, cuda:N
  // Several model copies: one per listed device (e.g. [cuda:0, cuda:1]), each device
  // holding instances_per_device copies, all fed by one batcher (BackendPool). Empty:
  // `device` alone. Exclusive with a `device` other than auto.
  std::vector<std::string> devices;
  int instances_per_device = 1;
  std::string precision = "fp32";  // fp32, fp16 or bf16 (see also `quantized`)
  bool quantized = false;          // seed key: true means fp16 on GPU, bf16 on CPU
  int64_t max_seq_length = 0;      // 0 = the folder's sentence_bert_config.json value
  int threads = 0;                 // intra-op CPU threads; 0 = LibTorch's default
  bool cuda_graphs = true;         // replay CUDA graphs for small batches (CUDA only)
  int cuda_graph_max_batch = 64;   // largest graph bucket in sequences (64..1024)
  bool tf32 = false;               // fp32 on CUDA: matmuls on TF32 tensor cores (opt-in)
  int cpu_nice = 0;                // CPU: niceness added to the model's threads (0..19)
  bool cpu_pin_threads = true;     // CPU: each OpenMP team thread on its own CPU
  bool cpu_sched_idle = false;     // CPU: the model's threads under SCHED_IDLE
  std::string backend = "libtorch";  // the only backend today

  // The device of each model instance, in load order: `devices` (or {device}), each
  // repeated instances_per_device times.
  std::vector<std::string> InstanceDevices() const;

  absl::Status Validate() const;
};

// `batching:` section. Dynamic batching (see include/embedserve/batching/batcher.h).
struct BatchingSection {
  bool enabled = true;               // false: one request per forward (the baseline)
  int max_batch_size = 64;           // most sequences per forward
  int64_t max_batch_tokens = 8192;   // most tokens per forward
  int64_t max_queue_delay_us = 0;    // wait this long for a batch to fill (seed: timeout_ms)
  int max_queue_sequences = 4096;    // queued sequences before RESOURCE_EXHAUSTED
  int64_t max_queue_wait_ms = 250;   // queued work, in time at the recent rate, before
                                     // RESOURCE_EXHAUSTED; 0 = off (Batcher::Options)
  int64_t overload_queue_wait_ms = 100;  // the same bound while the queue and the requests
                                         // it refused in the last second want more than
                                         // max_queue_wait_ms; 0 = max_queue_wait_ms
  int64_t max_request_tokens = 32768;  // tokens in one request (sum over its texts); more
                                       // is INVALID_ARGUMENT; 0 = no bound
  int workers = 1;                   // batches run at once (forward passes in parallel)
  int64_t idle_spin_us = 50;         // an idle worker polls this long before sleeping
                                     // (lower wake-up latency; 0 = sleep at once)
  int completion_threads = 0;        // threads that answer a finished batch's requests
                                     // (>= 16 of them) so the worker goes back to the
                                     // model; 0 = the worker answers (Batcher::Options)
  int64_t express_max_tokens = 0;    // the express lane: requests of at most this many
                                     // tokens run beside a busy worker's batch; 0 = off
                                     // (also off with batching off, on a GPU and with
                                     // several model copies: ToBatcherOptions)
  int express_cpu_threads = 1;       // its intra-op threads on a CPU (0 = model.threads)

  absl::Status Validate() const;
};

// `logging:` section.
struct LoggingSection {
  std::string level = "info";  // trace, debug, info, warn, error, off
  bool log_requests = false;   // one debug line per request

  absl::Status Validate() const;
};

// `benchmark:` section: the sweep the benchmark launcher runs against this config. The
// server itself ignores it.
struct BenchmarkSection {
  std::vector<int> batch_sizes = {1, 8, 32};     // texts per request
  std::vector<int> concurrencies = {1, 4, 16};   // requests in flight
  double duration_s = 10.0;                      // measured seconds per point
  double warmup_s = 2.0;                         // unmeasured seconds before each point
  std::string method = "embed";                  // embed or similarity
  // Further keys that embedserve-bench reads (extra_grids, rates_rps, max_outstanding,
  // requests, sentence_length, seed, timeout_ms, backoff_ms, pairs_file, pool_requests), kept as
  // flow-style YAML text in file order; the launcher checks their values.
  std::vector<std::pair<std::string, std::string>> launcher_options;

  absl::Status Validate() const;
};

struct ServerConfig {
  ServerSection server;
  ModelSection model;
  BatchingSection batching;
  LoggingSection logging;
  BenchmarkSection benchmark;
  std::string source;  // the file it came from ("" when built in code)

  // Validates every section; the first error names the field, the rule and the value.
  absl::Status Validate() const;
};

// Parses and validates a YAML experiment file. Unknown keys, wrong types and
// out-of-range values fail with INVALID_ARGUMENT naming the file, line, key and the
// allowed values; a missing or unreadable file is NOT_FOUND.
absl::StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path);

// As above from YAML text; `source_name` names it in error messages.
absl::StatusOr<ServerConfig> ParseServerConfig(absl::string_view yaml,
                                               absl::string_view source_name);

// The effective configuration as YAML that LoadServerConfigFile accepts back
// (`embedserve --print-config`).
std::string ServerConfigToYaml(const ServerConfig& config);

// Where model folders are looked up.
struct ModelLocatorEnv {
  std::string hf_hub_cache;  // $HF_HUB_CACHE
  std::string hf_home;       // $HF_HOME
  std::string home;          // $HOME
  std::string xdg_cache_home;  // $XDG_CACHE_HOME
  // The project's own model folders (scripts/setup.sh lays out models/all-MiniLM-L6-v2
  // there); relative paths are relative to the current directory.
  std::string models_dir = "models";

  static ModelLocatorEnv FromEnvironment();
};

// The folder to load: model.path when set; else model.name found in the Hugging Face
// hub cache (snapshot of refs/main, else the newest snapshot; a bare name such as
// all-MiniLM-L6-v2 is also tried under sentence-transformers/), then in
// <models_dir>/<the name's last part> (models/all-MiniLM-L6-v2); else
// model.fallback_path when set; else kDefaultModelPath when no name is given.
// NOT_FOUND says where it looked and how to fix it.
absl::StatusOr<std::string> ResolveModelPath(const ModelSection& model,
                                             const ModelLocatorEnv& env);

// The default model folder, relative to the current directory: the real
// sentence-transformers/all-MiniLM-L6-v2, which scripts/setup.sh (and so scripts/run.sh,
// which runs from the repository root) fetches and checks.
inline constexpr char kDefaultModelPath[] = "models/all-MiniLM-L6-v2";

}  // namespace embedserve

#endif  // EMBEDSERVE_CONFIG_SERVER_CONFIG_H_
