// The whole in-process server: gRPC (EmbeddingService + grpc.health.v1 + reflection)
// and HTTP (OpenAI / TEI JSON API, /metrics) front doors onto one EmbeddingPipeline, the
// Batcher in front of a Backend. Used by the
// `embedserve` binary, the end-to-end tests and the benchmarks (with a fake backend).
// Thread-safe: Shutdown() and Wait() may be called from any thread.
#ifndef EMBEDSERVE_SERVER_SERVER_H_
#define EMBEDSERVE_SERVER_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/config/server_config.h"

namespace embedserve {

class Backend;
class Clock;
class ServerMetrics;
class Tokenizer;

// What the server serves. Owned by the server once started.
struct ServingModel {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Backend> backend;

  ServingModel();
  ServingModel(std::unique_ptr<Tokenizer> tokenizer, std::unique_ptr<Backend> backend);
  ServingModel(ServingModel&&) noexcept;
  ServingModel& operator=(ServingModel&&) noexcept;
  ~ServingModel();
};

// Loads the model; called by EmbedServer::Start after gRPC listens (health
// NOT_SERVING meanwhile).
using ModelFactory = std::function<absl::StatusOr<ServingModel>()>;

// Asked once, after loading and warm-up, just before the server turns SERVING: false
// calls the start off (Start releases the ports and returns CANCELLED). The binary's
// SIGTERM handling uses it to tell "nothing accepted yet" from "serving".
using ServeGate = std::function<bool()>;

class EmbedServer {
 public:
  // Binds config.server.host:port (port 0 = a free one), the HTTP and metrics ports, answers
  // health NOT_SERVING and UNAVAILABLE while `load_model` runs, builds the Batcher from
  // config.batching, warms up (config.server.warmup), then turns SERVING and returns.
  // server.tls's files and server.auth's keys are read first: one that cannot be read or
  // used fails the start before anything listens (docs/security.md). Fails (and releases
  // the ports) on an invalid config, a bind failure or a model load failure. `clock` (null: the real clock; else it must outlive the server) is the
  // time line of deadlines, queue delays and per-stage timings (tests pass a FakeClock).
  // `serve_gate` (may be empty): see ServeGate.
  static absl::StatusOr<std::unique_ptr<EmbedServer>> Start(const ServerConfig& config,
                                                            ModelFactory load_model,
                                                            Clock* clock = nullptr,
                                                            ServeGate serve_gate = {});

  ~EmbedServer();  // Shutdown(0) if not done yet
  EmbedServer(const EmbedServer&) = delete;
  EmbedServer& operator=(const EmbedServer&) = delete;

  int port() const;          // the bound gRPC port
  int metrics_port() const;  // the bound metrics port, -1 when off
  int http_port() const;     // the bound HTTP API port, -1 when off
  std::string address() const;  // host:port
  const ServerConfig& config() const;
  // What /metrics renders, read in memory (tests, logs). Valid for the server's life.
  const ServerMetrics& metrics() const;
  // The one-line startup summary ("Loaded ... on cpu, FP32, 384 dims, batching on ...").
  std::string Summary() const;

  // Health NOT_SERVING (for server.shutdown_delay_ms while still serving), then refuse
  // new calls (UNAVAILABLE; health Check still answers NOT_SERVING), answer every
  // accepted call within `grace_us` (after that they are cancelled), stop gRPC, the
  // batcher and the HTTP server. Returns as soon as the accepted calls are answered:
  // idle connections and health Watch streams do not hold it. Idempotent; blocks until
  // done.
  void Shutdown(int64_t grace_us);

  // Blocks until Shutdown() has finished.
  void Wait();

  // Implementation details below.
  class Impl;

 private:
  explicit EmbedServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Same as EmbedServer::Start with an already loaded model (tests, benchmarks with a
// fake backend).
absl::StatusOr<std::unique_ptr<EmbedServer>> StartServer(const ServerConfig& config,
                                                         ServingModel model,
                                                         Clock* clock = nullptr);

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_SERVER_H_
