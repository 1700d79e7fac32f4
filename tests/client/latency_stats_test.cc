#include "embedserve/client/latency_stats.h"

#include "gtest/gtest.h"

namespace embedserve {
namespace client {
namespace {

TEST(PercentileTest, InterpolatesLikeNumpyLinear) {
  // numpy.percentile([1, 2, 3, 4], q) = 1.0, 1.75, 2.5, 3.85, 3.97, 4.0
  std::vector<double> v = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 25), 1.75);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 95), 3.85);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4.0);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7.0);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0.0);
}

TEST(LatencyRecorderTest, SummarizesMillisecondsAndStageMeans) {
  LatencyRecorder r;
  // 100 requests of 1..100 ms; server total = half, split tokenize/queue/inference.
  for (int i = 1; i <= 100; ++i) {
    int64_t us = i * 1000;
    r.Add(us, 10, 20 * i, 100, us / 2);
  }
  LatencySummary s = r.Summarize();
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.avg_ms, 50.5);
  EXPECT_DOUBLE_EQ(s.p50_ms, 50.5);
  EXPECT_NEAR(s.p95_ms, 95.05, 1e-9);
  EXPECT_NEAR(s.p99_ms, 99.01, 1e-9);
  EXPECT_DOUBLE_EQ(s.max_ms, 100.0);
  StageMeans m = r.Stages();
  EXPECT_EQ(m.samples, 100);
  EXPECT_DOUBLE_EQ(m.tokenize_us, 10);
  EXPECT_DOUBLE_EQ(m.queue_us, 20 * 50.5);
  EXPECT_DOUBLE_EQ(m.inference_us, 100);
  EXPECT_DOUBLE_EQ(m.server_total_us, 25250);
  EXPECT_DOUBLE_EQ(m.rest_us, 25250);  // client latency - server total
  r.Clear();
  EXPECT_EQ(r.Summarize().count, 0);
  EXPECT_EQ(r.Stages().samples, 0);
  EXPECT_DOUBLE_EQ(r.Stages().rest_us, 0);
}

TEST(LatencyRecorderTest, OrderOfSamplesDoesNotMatter) {
  LatencyRecorder a, b;
  for (int i = 0; i < 1000; ++i) {
    a.Add((i * 7919) % 1000, 0, 0, 0, 0);
    b.Add(i, 0, 0, 0, 0);
  }
  EXPECT_DOUBLE_EQ(a.Summarize().p99_ms, b.Summarize().p99_ms);
  EXPECT_DOUBLE_EQ(a.Summarize().p50_ms, b.Summarize().p50_ms);
}

}  // namespace
}  // namespace client
}  // namespace embedserve
