// BackendPool: several model instances behind one Backend (model.devices,
// model.instances_per_device), fed by one batcher. FakeBackend instances prove which
// instance ran which batch.
#include "embedserve/model/backend_pool.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "embedserve/batching/batcher.h"
#include "test_util/fake_backend.h"

namespace embedserve {
namespace {

using testing::FakeBackend;

// Two fakes owned by a pool, with raw pointers kept for inspection.
struct TwoFakes {
  FakeBackend* a = nullptr;
  FakeBackend* b = nullptr;
  std::unique_ptr<BackendPool> pool;
};

TwoFakes MakePool(FakeBackend::Options options = {}) {
  TwoFakes out;
  std::vector<std::unique_ptr<Backend>> instances;
  auto a = std::make_unique<FakeBackend>(options);
  auto b = std::make_unique<FakeBackend>(options);
  out.a = a.get();
  out.b = b.get();
  instances.push_back(std::move(a));
  instances.push_back(std::move(b));
  auto pool = BackendPool::Create(std::move(instances));
  EXPECT_TRUE(pool.ok()) << pool.status();
  out.pool = *std::move(pool);
  return out;
}

absl::StatusOr<EmbeddingMatrix> EmbedOne(Backend* backend, const TokenIds& ids) {
  const TokenIds* seqs[] = {&ids};
  return backend->Embed(seqs);
}

TEST(BackendPoolTest, RefusesNoInstancesAndInstancesOfDifferentModels) {
  EXPECT_EQ(BackendPool::Create({}).status().code(), absl::StatusCode::kInvalidArgument);
  FakeBackend::Options wide;
  wide.dimension = 8;
  std::vector<std::unique_ptr<Backend>> instances;
  instances.push_back(std::make_unique<FakeBackend>());
  instances.push_back(std::make_unique<FakeBackend>(wide));
  auto pool = BackendPool::Create(std::move(instances));
  ASSERT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(pool.status().message().find("instance 1"), std::string::npos) << pool.status();
  EXPECT_NE(pool.status().message().find("dimension"), std::string::npos) << pool.status();
}

TEST(BackendPoolTest, InfoIsTheModelsWithEveryInstancesDevice) {
  TwoFakes p = MakePool();
  EXPECT_EQ(p.pool->num_instances(), 2);
  EXPECT_EQ(p.pool->Info().device, "cpu,cpu");
  EXPECT_EQ(p.pool->Info().dimension, p.a->Info().dimension);
  EXPECT_EQ(p.pool->Info().pads_inputs, p.a->Info().pads_inputs);
}

TEST(BackendPoolTest, SequentialBatchesAlternateAndEqualOneInstance) {
  TwoFakes p = MakePool();
  FakeBackend reference;
  for (int32_t i = 1; i <= 6; ++i) {
    const TokenIds ids = {101, i, i * 7, 102};
    auto got = EmbedOne(p.pool.get(), ids);
    auto want = EmbedOne(&reference, ids);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(got->values, want->values) << "call " << i;
  }
  // The instance idle longest takes the next batch: 0, 1, 0, 1, ...
  EXPECT_EQ(p.a->num_calls(), 3);
  EXPECT_EQ(p.b->num_calls(), 3);
  EXPECT_EQ(p.pool->BatchesPerInstance(), (std::vector<int64_t>{3, 3}));
}

TEST(BackendPoolTest, AnInstancesErrorIsReturnedAsItIs) {
  FakeBackend::Options failing;
  failing.fail_token = 666;
  TwoFakes p = MakePool(failing);
  EXPECT_EQ(EmbedOne(p.pool.get(), {101, 666, 102}).status().code(),
            absl::StatusCode::kInternal);
  // The failed instance went back to the pool: both still serve.
  EXPECT_TRUE(EmbedOne(p.pool.get(), {101, 5, 102}).ok());
  EXPECT_TRUE(EmbedOne(p.pool.get(), {101, 6, 102}).ok());
  EXPECT_EQ(p.pool->BatchesPerInstance(), (std::vector<int64_t>{2, 1}));
}

// One batcher with two workers over a pool of two instances: two batches run at the same
// time, one on each instance, and every request gets its own rows.
TEST(BackendPoolTest, OneBatcherRunsBatchesOnBothInstancesAtOnce) {
  TwoFakes p = MakePool();
  p.a->CloseGate();
  p.b->CloseGate();
  Batcher::Options options;
  options.enabled = false;  // one request per batch: two requests, two batches
  options.num_workers = 2;
  auto batcher = Batcher::Create(options, p.pool.get(), nullptr);
  ASSERT_TRUE(batcher.ok()) << batcher.status();

  const std::vector<TokenIds> inputs = {{101, 11, 102}, {101, 22, 23, 102}};
  // std::promise, not absl::Notification: ThreadSanitizer cannot see Debian's absl.
  std::vector<std::promise<std::vector<float>>> rows(inputs.size());
  std::vector<std::future<std::vector<float>>> got;
  for (size_t i = 0; i < inputs.size(); ++i) {
    got.push_back(rows[i].get_future());
    BatchRequest r;
    r.sequences = {inputs[i]};
    r.done = [&rows, i](absl::StatusOr<EmbeddingMatrix> m, const RequestTimings&) {
      rows[i].set_value(m.ok() ? m->values : std::vector<float>());
    };
    ASSERT_TRUE((*batcher)->Submit(std::move(r)).ok());
  }
  // Both instances hold a batch at their gates at the same time.
  p.a->WaitForWaitingCalls(1);
  p.b->WaitForWaitingCalls(1);
  p.a->OpenGate();
  p.b->OpenGate();
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_EQ(got[i].wait_for(std::chrono::seconds(30)), std::future_status::ready) << i;
    EXPECT_EQ(got[i].get(), FakeBackend::Encode(inputs[i], p.a->Info().dimension)) << i;
  }
  EXPECT_EQ(p.pool->BatchesPerInstance(), (std::vector<int64_t>{1, 1}));
  (*batcher)->Shutdown();
}

}  // namespace
}  // namespace embedserve
