#include "embedserve/client/latency_stats.h"

#include <algorithm>
#include <cmath>

namespace embedserve {
namespace client {

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  q = std::clamp(q, 0.0, 100.0);
  double rank = q / 100.0 * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

void LatencyRecorder::Add(int64_t latency_us, int64_t tokenize_us, int64_t queue_us,
                          int64_t inference_us, int64_t server_total_us) {
  latencies_us_.push_back(static_cast<double>(latency_us));
  sum_tokenize_us_ += static_cast<double>(tokenize_us);
  sum_queue_us_ += static_cast<double>(queue_us);
  sum_inference_us_ += static_cast<double>(inference_us);
  sum_server_total_us_ += static_cast<double>(server_total_us);
  sum_rest_us_ += static_cast<double>(latency_us - server_total_us);
}

LatencySummary LatencyRecorder::Summarize() const {
  LatencySummary s;
  s.count = count();
  if (latencies_us_.empty()) return s;
  std::vector<double> sorted = latencies_us_;
  std::sort(sorted.begin(), sorted.end());
  double sum = 0;
  for (double v : sorted) sum += v;
  s.avg_ms = sum / static_cast<double>(sorted.size()) / 1000.0;
  s.p50_ms = Percentile(sorted, 50) / 1000.0;
  s.p95_ms = Percentile(sorted, 95) / 1000.0;
  s.p99_ms = Percentile(sorted, 99) / 1000.0;
  s.max_ms = sorted.back() / 1000.0;
  return s;
}

StageMeans LatencyRecorder::Stages() const {
  StageMeans m;
  m.samples = count();
  if (m.samples == 0) return m;
  double n = static_cast<double>(m.samples);
  m.tokenize_us = sum_tokenize_us_ / n;
  m.queue_us = sum_queue_us_ / n;
  m.inference_us = sum_inference_us_ / n;
  m.server_total_us = sum_server_total_us_ / n;
  m.rest_us = sum_rest_us_ / n;
  return m;
}

void LatencyRecorder::Clear() { *this = LatencyRecorder(); }

}  // namespace client
}  // namespace embedserve
