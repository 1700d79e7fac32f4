// BackendPool over real LibTorch instances of tests/data/tiny-bert on the CPU (what
// `model.devices: [cpu, cpu]` or `instances_per_device: 2` loads), fed by one Batcher
// with a worker per instance: both instances run batches, and every text's vector equals
// the one a single instance gives.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "embedserve/batching/batcher.h"
#include "embedserve/model/backend_pool.h"
#include "embedserve/model/model_loader.h"

namespace embedserve {
namespace {

const std::string kTinyBert =
    (std::filesystem::path(EMBEDSERVE_TEST_DATA_DIR) / "tiny-bert").string();

absl::StatusOr<LoadedModel> LoadTinyBert() {
  ModelOptions options;
  options.path = kTinyBert;
  options.device = "cpu";
  options.num_threads = 1;
  return LoadModel(options);
}

TEST(BackendPoolModelTest, TwoCpuInstancesBothRunAndMatchOneInstance) {
  auto single = LoadTinyBert();
  ASSERT_TRUE(single.ok()) << single.status();
  std::vector<std::unique_ptr<Backend>> instances;
  for (int i = 0; i < 2; ++i) {
    auto loaded = LoadTinyBert();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    instances.push_back(std::move(loaded->backend));
  }
  auto pool = BackendPool::Create(std::move(instances));
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->Info().device, "cpu,cpu");

  Batcher::Options options;
  options.num_workers = 2;  // batching.workers: 1 per instance
  options.max_batch_size = 4;
  options.count_padding = (*pool)->Info().pads_inputs;
  auto batcher = Batcher::Create(options, pool->get(), nullptr);
  ASSERT_TRUE(batcher.ok()) << batcher.status();

  const std::vector<std::string> texts = {
      "a cat sat on the mat", "dogs run", "", "ünïcödé text 日本", "the quick brown fox",
      "jumps over the lazy dog", "embedding servers batch requests", "one more sentence",
      "short", "a somewhat longer sentence with more tokens in it than the others"};
  std::vector<TokenIds> ids;
  for (const std::string& t : texts) {
    auto enc = single->tokenizer->Encode(t, 128);
    ASSERT_TRUE(enc.ok()) << enc.status();
    ids.push_back(enc->ids);
  }
  // One request per text, all queued at once: batches of up to 4 go to both instances.
  std::vector<std::promise<std::vector<float>>> rows(ids.size());
  std::vector<std::future<std::vector<float>>> got;
  for (size_t i = 0; i < ids.size(); ++i) {
    got.push_back(rows[i].get_future());
    BatchRequest r;
    r.sequences = {ids[i]};
    r.done = [&rows, i](absl::StatusOr<EmbeddingMatrix> m, const RequestTimings&) {
      rows[i].set_value(m.ok() ? m->values : std::vector<float>());
    };
    ASSERT_TRUE((*batcher)->Submit(std::move(r)).ok());
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_EQ(got[i].wait_for(std::chrono::seconds(60)), std::future_status::ready) << i;
    const std::vector<float> pooled = got[i].get();
    const TokenIds* one[] = {&ids[i]};
    auto want = single->backend->Embed(one);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(pooled.size(), want->values.size()) << texts[i];
    for (size_t k = 0; k < pooled.size(); ++k) {
      // Same weights on the same device; only the batch around the text differs, which
      // changes fp32 summation order in the packed forward: ~1e-7 here.
      EXPECT_NEAR(pooled[k], want->values[k], 1e-5) << texts[i] << " [" << k << "]";
    }
  }
  (*batcher)->Shutdown();
  const std::vector<int64_t> batches = (*pool)->BatchesPerInstance();
  ASSERT_EQ(batches.size(), 2u);
  // At least 3 batches (10 texts, at most 4 a batch), and the instance idle longest takes
  // the next one: both ran.
  EXPECT_GT(batches[0], 0);
  EXPECT_GT(batches[1], 0);
}

}  // namespace
}  // namespace embedserve
