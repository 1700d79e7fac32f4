// The measured outcome of one benchmark point (one batch size x concurrency or arrival
// rate): counts, throughput, latency percentiles, error codes and the server stage
// split. Produced by LoadGenerator, written by result_writer.h. Plain value type.
#ifndef EMBEDSERVE_CLIENT_POINT_RESULT_H_
#define EMBEDSERVE_CLIENT_POINT_RESULT_H_

#include <cstdint>
#include <map>
#include <string>

#include "embedserve/client/benchmark_plan.h"
#include "embedserve/client/latency_stats.h"

namespace embedserve {
namespace client {

struct PointResult {
  Method method = Method::kSimilarity;
  GridPoint point;
  // Measured window (after warm-up), in seconds.
  double measured_s = 0;
  // Requests completed inside the window.
  int64_t requests_ok = 0;
  int64_t requests_failed = 0;
  // Pairs (Similarity) or texts (Embed) in successful requests.
  int64_t items_ok = 0;
  // Failed requests by gRPC status code name ("UNAVAILABLE", ...).
  std::map<std::string, int64_t> errors;
  // Successful requests and items per second of the window.
  double requests_per_s = 0;
  double items_per_s = 0;
  // Latency of successful requests, client-observed (open loop: from the scheduled
  // send time, so a late sender does not hide queueing).
  LatencySummary latency;
  // Latency of the refused requests (RESOURCE_EXHAUSTED, UNAVAILABLE) inside the
  // window, measured as `latency` is: how fast an overloaded server says no.
  LatencySummary refused_latency;
  // Server-side stage means from the responses' Timings, and the rest.
  StageMeans stages;
  // Mean Usage.prompt_tokens per item: the sentence lengths the server saw.
  double tokens_per_item = 0;
  // CPU seconds this client process used during the window, and as % of one core.
  double client_cpu_s = 0;
  double client_cpu_pct = 0;
  // Open loop: arrivals not sent because max_outstanding requests were in flight,
  // and the send rate achieved (requests/s).
  int64_t not_sent = 0;
  double achieved_rate_rps = 0;
};

}  // namespace client
}  // namespace embedserve

#endif  // EMBEDSERVE_CLIENT_POINT_RESULT_H_
