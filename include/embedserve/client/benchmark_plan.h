// What embedserve-bench sweeps: the grid of (batch size, concurrency) points and how
// each point runs (duration or request count, warm-up, method, sentence lengths),
// read from an experiment YAML's `benchmark:` section and/or command-line flags.
// Plain value types and pure functions; safe from any thread.
#ifndef EMBEDSERVE_CLIENT_BENCHMARK_PLAN_H_
#define EMBEDSERVE_CLIENT_BENCHMARK_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve {
namespace client {

enum class Method { kSimilarity, kEmbed };

// "similarity" or "embed" (case-insensitive); INVALID_ARGUMENT otherwise.
absl::StatusOr<Method> ParseMethod(absl::string_view text);
const char* MethodName(Method method);
// What one request item is: "pairs" (Similarity) or "texts" (Embed).
const char* ItemName(Method method);

// One point of the sweep.
struct GridPoint {
  int32_t batch_size = 1;   // pairs (Similarity) or texts (Embed) per request
  int32_t concurrency = 1;  // closed loop: requests in flight; open loop: the cap
  double rate_rps = 0;      // 0: closed loop; > 0: open loop at this arrival rate

  bool operator==(const GridPoint& o) const {
    return batch_size == o.batch_size && concurrency == o.concurrency &&
           rate_rps == o.rate_rps;
  }
};

// A batch_sizes x concurrencies grid.
struct Grid {
  std::vector<int32_t> batch_sizes;
  std::vector<int32_t> concurrencies;
};

struct BenchmarkPlan {
  // The main grid, swept batch-major: for each batch size, each concurrency.
  Grid grid{{1}, {1}};
  // More grids swept after the main one (YAML `extra_grids`), e.g. high concurrency
  // at batch 1 for dynamic batching; points already swept are skipped.
  std::vector<Grid> extra_grids;
  // Empty: closed loop. Otherwise open loop: each batch size at each arrival rate
  // (requests/s), with at most `max_outstanding` requests in flight.
  std::vector<double> rates_rps;
  int32_t max_outstanding = 1024;
  // Seconds measured per point after `warmup_s` seconds of unmeasured load. Ignored
  // when `requests` > 0 (then exactly that many requests are measured).
  double duration_s = 10;
  double warmup_s = 2;
  int64_t requests = 0;
  Method method = Method::kSimilarity;
  // Tokens per generated sentence with [CLS]/[SEP]: 0 = realistic short sentences
  // (mean ~14, p95 ~24); else fixed (long modes 128 and 256).
  int32_t sentence_tokens = 0;
  uint64_t seed = 42;
  // Per-request deadline; a request over it counts as a DEADLINE_EXCEEDED error.
  int64_t timeout_ms = 30000;
  // Closed loop: after a RESOURCE_EXHAUSTED or UNAVAILABLE answer a caller waits this
  // long and sends the refused request again, as clients that retry with backoff do (a
  // caller that resends at once turns a full queue into thousands of refused calls a
  // second, whose cost on a small machine slows the model). 0: at once.
  int64_t backoff_ms = 10;
  // Optional file of pairs (TSV or JSON Lines) used instead of the generator.
  std::string pairs_file;
  // Distinct requests prebuilt per point and sent round-robin.
  int32_t pool_requests = 64;

  // Validate() refuses grids naming more points than this: each point runs for
  // warmup_s + duration_s, so 10,000 at the defaults is already 33 hours.
  static constexpr uint64_t kMaxPoints = 10000;

  // Messages name the field, the rule and the value.
  absl::Status Validate() const;
  // Every point in sweep order, without duplicates.
  std::vector<GridPoint> Points() const;
};

// An experiment YAML as the bench sees it.
struct ExperimentFile {
  std::string name;        // the file name without directory and .yaml/.yml
  std::string host;        // server.host (a wildcard bind address becomes 127.0.0.1)
  int32_t port = 50051;    // server.port
  BenchmarkPlan plan;      // the `benchmark:` section over the defaults above
  std::vector<std::string> warnings;  // unknown keys in `benchmark:` (ignored)
};

// Reads `path`. Fails with NOT_FOUND when it cannot be read, INVALID_ARGUMENT (naming
// the key and value) for bad YAML or a bad `benchmark:` value or a missing
// `benchmark:` section.
absl::StatusOr<ExperimentFile> LoadExperimentFile(const std::string& path);

// The same from YAML text (`name` is used as the experiment name). For tests.
absl::StatusOr<ExperimentFile> ParseExperimentYaml(const std::string& yaml_text,
                                                   const std::string& name);

// "1,4,8" -> {1, 4, 8}; every value must be a positive integer. `field` names the
// option in error messages.
absl::StatusOr<std::vector<int32_t>> ParsePositiveIntList(absl::string_view text,
                                                          absl::string_view field);
// "10,20.5" -> {10, 20.5}; every value must be > 0.
absl::StatusOr<std::vector<double>> ParsePositiveDoubleList(absl::string_view text,
                                                            absl::string_view field);
// "short" -> 0, "long"/"128" -> 128, "256" -> 256, "N" -> N (>= 5).
absl::StatusOr<int32_t> ParseSentenceLength(absl::string_view text);

}  // namespace client
}  // namespace embedserve

#endif  // EMBEDSERVE_CLIENT_BENCHMARK_PLAN_H_
