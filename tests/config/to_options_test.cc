// ServerConfig -> Batcher::Options (to_options.h): what the loaded backend decides.
#include "config/to_options.h"

#include "gtest/gtest.h"

namespace embedserve {
namespace {

BackendInfo Info(const char* device, bool pads_inputs = false) {
  BackendInfo info;
  info.device = device;
  info.pads_inputs = pads_inputs;
  return info;
}

TEST(ToBatcherOptionsTest, ExpressLaneOnlyForOneCpuCopyWithBatching) {
  ServerConfig config;
  config.batching.express_max_tokens = 64;
  config.batching.express_cpu_threads = 2;
  Batcher::Options o = ToBatcherOptions(config, Info("cpu"));
  EXPECT_EQ(o.express_max_tokens, 64);
  EXPECT_EQ(o.express_cpu_threads, 2);
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  EXPECT_EQ(ToBatcherOptions(config, Info("cuda:0")).express_max_tokens, 0);
  EXPECT_EQ(ToBatcherOptions(config, Info("cpu,cpu")).express_max_tokens, 0);
  config.batching.enabled = false;
  o = ToBatcherOptions(config, Info("cpu"));
  EXPECT_EQ(o.express_max_tokens, 0);
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
}

TEST(ToBatcherOptionsTest, WorkersPerCopyAndPaddingFromTheBackend) {
  ServerConfig config;
  config.batching.workers = 2;
  config.model.devices = {"cpu", "cpu", "cpu"};
  const Batcher::Options o = ToBatcherOptions(config, Info("cpu,cpu,cpu", /*pads_inputs=*/true));
  EXPECT_EQ(o.num_workers, 6);
  EXPECT_TRUE(o.count_padding);
  EXPECT_FALSE(ToBatcherOptions(config, Info("cpu")).count_padding);
}

TEST(ToBatcherOptionsTest, QueueTimeBoundsInMicroseconds) {
  ServerConfig config;
  config.batching.max_queue_wait_ms = 250;
  config.batching.overload_queue_wait_ms = 80;
  const Batcher::Options o = ToBatcherOptions(config, Info("cpu"));
  EXPECT_EQ(o.max_queue_wait_us, 250'000);
  EXPECT_EQ(o.overload_queue_wait_us, 80'000);
}

}  // namespace
}  // namespace embedserve
