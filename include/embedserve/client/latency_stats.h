// Latency and server-stage statistics of one benchmark point: percentiles of client
// latencies and the mean split of request time into tokenize / queue / inference /
// rest, as embedserve-bench reports them.
// Thread-safety: none; the load generator guards its recorder with its own mutex.
#ifndef EMBEDSERVE_CLIENT_LATENCY_STATS_H_
#define EMBEDSERVE_CLIENT_LATENCY_STATS_H_

#include <cstdint>
#include <vector>

namespace embedserve {
namespace client {

// q-th percentile (q in [0, 100]) of `sorted` (ascending) with linear interpolation
// between the two nearest ranks (numpy's default "linear" method); 0 when empty.
double Percentile(const std::vector<double>& sorted, double q);

struct LatencySummary {
  int64_t count = 0;
  double avg_ms = 0;
  double p50_ms = 0;
  double p95_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

// Server-reported stage times (proto Timings), averaged over successful requests, and
// the rest: client latency minus server total (network, serialization, client).
struct StageMeans {
  int64_t samples = 0;
  double tokenize_us = 0;
  double queue_us = 0;
  double inference_us = 0;
  double server_total_us = 0;
  double rest_us = 0;
};

// Collects latencies and stage times of successful requests.
class LatencyRecorder {
 public:
  // One successful request: client-observed latency and the response's Timings.
  void Add(int64_t latency_us, int64_t tokenize_us, int64_t queue_us,
           int64_t inference_us, int64_t server_total_us);
  // Sorts a copy of the samples.
  LatencySummary Summarize() const;
  StageMeans Stages() const;
  int64_t count() const { return static_cast<int64_t>(latencies_us_.size()); }
  void Clear();

 private:
  std::vector<double> latencies_us_;
  double sum_tokenize_us_ = 0;
  double sum_queue_us_ = 0;
  double sum_inference_us_ = 0;
  double sum_server_total_us_ = 0;
  double sum_rest_us_ = 0;
};

}  // namespace client
}  // namespace embedserve

#endif  // EMBEDSERVE_CLIENT_LATENCY_STATS_H_
