// The load generator of embedserve-bench: drives an EmbeddingService over gRPC with
// Similarity or Embed requests, closed loop (a fixed number of requests in flight) or
// open loop (a fixed arrival rate), and measures one GridPoint at a time. Uses the gRPC
// callback API, so completions run on gRPC's few threads and the client stays cheap
// next to a server on the same cores.
// Thread-safety: one RunPoint() at a time per LoadGenerator (it is not reentrant);
// the other methods are safe from any thread.
#ifndef EMBEDSERVE_CLIENT_LOAD_GENERATOR_H_
#define EMBEDSERVE_CLIENT_LOAD_GENERATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "embedserve/client/benchmark_plan.h"
#include "embedserve/client/point_result.h"
#include "embedserve/client/result_writer.h"
#include "embedserve/client/sentence_generator.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace embedserve {
namespace client {

class LoadGenerator {
 public:
  static constexpr int32_t kMaxChannels = 256;

  struct Options {
    // host:port of the server (any gRPC target string).
    std::string target = "127.0.0.1:50051";
    // gRPC channels, each with its own HTTP/2 connection; calls go round-robin over
    // them. One connection is one transport on each side, whose reads and writes run one
    // at a time: small calls at high concurrency need several (docs/benchmarking.md).
    int32_t channels = 1;

    absl::Status Validate() const;
  };

  // Connects lazily (the first RPC or WaitReady dials). INVALID_ARGUMENT for an empty
  // target.
  static absl::StatusOr<std::unique_ptr<LoadGenerator>> Create(const Options& options);
  // Over an existing channel, e.g. an in-process server's InProcessChannel (tests).
  static absl::StatusOr<std::unique_ptr<LoadGenerator>> CreateWithChannel(
      std::shared_ptr<grpc::Channel> channel);
  // Over several channels (calls round-robin); INVALID_ARGUMENT for none or a null one.
  static absl::StatusOr<std::unique_ptr<LoadGenerator>> CreateWithChannels(
      std::vector<std::shared_ptr<grpc::Channel>> channels);

  // How many channels the calls are spread over.
  int32_t channels() const;

  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Polls the standard health service (grpc.health.v1.Health/Check, service "")
  // until it answers SERVING; a server without the health service counts as ready
  // once GetModelInfo succeeds. DEADLINE_EXCEEDED (with the last status seen) after
  // `timeout_s` seconds.
  absl::Status WaitReady(double timeout_s);

  // GetModelInfo flattened to strings: model.name, model.device, model.precision,
  // batching.enabled, versions.<name>, ...; the RPC's status on failure.
  absl::StatusOr<RunInfo> GetModelInfo();

  // Runs one point of `plan` (its method, warm-up, duration or request count,
  // timeout) with requests built round-robin from `data` (Embed sends text_a and
  // text_b as separate texts). At most plan.pool_requests distinct requests are built.
  // Failed RPCs are counted in the result, not returned as errors; INVALID_ARGUMENT
  // only for an empty `data` or a bad point.
  absl::StatusOr<PointResult> RunPoint(const BenchmarkPlan& plan, const GridPoint& point,
                                       const std::vector<SentencePair>& data);

  // Implementation details below.
  struct Impl;

 private:
  explicit LoadGenerator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// gRPC status code name: "OK", "CANCELLED", ..., "UNAUTHENTICATED"; "CODE_<n>" for
// an unknown value.
std::string StatusCodeName(int code);

}  // namespace client
}  // namespace embedserve

#endif  // EMBEDSERVE_CLIENT_LOAD_GENERATOR_H_
