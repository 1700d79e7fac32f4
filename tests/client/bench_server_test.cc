// embedserve-bench's LoadGenerator against the real in-process server (EmbedServer with
// the tiny-bert tokenizer and the FakeBackend): its counts of requests, items, tokens
// and errors must match what the server and the backend saw.
#include <memory>
#include <numeric>
#include <set>
#include <string>

#include "embedserve/client/load_generator.h"
#include "embedserve/client/sentence_generator.h"
#include "embedserve/config/server_config.h"
#include "embedserve/server/server.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util/fake_backend.h"
#include "test_util/grpc_callback_queue.h"

namespace embedserve {
namespace client {
namespace {

// Servers start and stop one after another here (grpc_callback_queue.h says why).
const bool kGrpcCallbackQueueHeld = testing::HoldGrpcCallbackQueue();

using ::embedserve::testing::FakeBackend;

std::unique_ptr<Tokenizer> LoadTokenizer() {
  auto tok = Tokenizer::FromModelDir(std::string(EMBEDSERVE_TEST_DATA_DIR) + "/tiny-bert");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

class BenchServerTest : public ::testing::Test {
 protected:
  void Start(bool batching) {
    ServerConfig config;
    config.server.port = 0;
    config.server.metrics_port = -1;
    config.server.http_port = -1;
    config.server.max_texts_per_request = 8;
    config.server.shutdown_grace_ms = 5000;
    config.server.warmup = false;  // the backend then sees only the bench's requests
    config.batching.enabled = batching;
    config.batching.max_batch_size = 16;
    config.batching.max_queue_sequences = 1024;
    tokenizer_ = LoadTokenizer();
    ASSERT_NE(tokenizer_, nullptr);
    auto backend = std::make_unique<FakeBackend>();
    backend_ = backend.get();
    auto server = StartServer(config, ServingModel(LoadTokenizer(), std::move(backend)));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto gen = LoadGenerator::Create(LoadGenerator::Options{server_->address()});
    ASSERT_TRUE(gen.ok()) << gen.status();
    generator_ = *std::move(gen);
    ASSERT_TRUE(generator_->WaitReady(30).ok());

    SentenceGenerator::Options options;
    options.seed = 11;
    auto sentences = SentenceGenerator::Create(options);
    ASSERT_TRUE(sentences.ok());
    for (int i = 0; i < 200; ++i) data_.push_back((*sentences)->NextPair());
  }
  void TearDown() override {
    generator_.reset();
    if (server_ != nullptr) server_->Shutdown(1'000'000);
  }

  int64_t BackendSequences() {
    std::vector<int32_t> sizes = backend_->batch_sizes();
    return std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  }

  int64_t Tokens(const std::string& text) {
    auto enc = tokenizer_->Encode(text, 0);
    EXPECT_TRUE(enc.ok());
    return static_cast<int64_t>(enc->ids.size());
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  FakeBackend* backend_ = nullptr;
  std::unique_ptr<EmbedServer> server_;
  std::unique_ptr<LoadGenerator> generator_;
  std::vector<SentencePair> data_;
};

TEST_F(BenchServerTest, SimilarityCountsMatchTheBackend) {
  Start(/*batching=*/true);
  BenchmarkPlan plan;
  plan.requests = 12;
  plan.warmup_s = 0;
  plan.pool_requests = 12;
  // Concurrency 1 stops exactly at the 12th request: the backend saw 12 x 4 pairs.
  auto r = generator_->RunPoint(plan, GridPoint{4, 1, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_ok, 12);
  EXPECT_EQ(r->requests_failed, 0);
  EXPECT_EQ(r->items_ok, 48);
  // The server embeds each distinct text of a request once (both texts of a pair,
  // unless a paraphrase came out identical).
  int64_t distinct = 0;
  for (int req = 0; req < 12; ++req) {
    std::set<std::string> texts;
    for (int i = 0; i < 4; ++i) {
      texts.insert(data_[req * 4 + i].text_a);
      texts.insert(data_[req * 4 + i].text_b);
    }
    distinct += static_cast<int64_t>(texts.size());
  }
  EXPECT_GE(distinct, 90);
  EXPECT_EQ(BackendSequences(), distinct);
  EXPECT_GT(r->stages.server_total_us, 0);
  EXPECT_GT(r->latency.avg_ms * 1000, r->stages.server_total_us);
  EXPECT_GT(r->tokens_per_item, 2 * 5);  // two sentences of >= 5 tokens per pair
}

TEST_F(BenchServerTest, EmbedPromptTokensAreTheGeneratedLengths) {
  Start(/*batching=*/false);
  BenchmarkPlan plan;
  plan.method = Method::kEmbed;
  plan.requests = 10;
  plan.warmup_s = 0;
  plan.pool_requests = 10;
  auto r = generator_->RunPoint(plan, GridPoint{3, 1, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_ok, 10);
  EXPECT_EQ(r->items_ok, 30);
  EXPECT_EQ(BackendSequences(), 30);
  // The 30 texts sent are a0 b0 a1 b1 ... (pool built in order, sent round-robin).
  int64_t tokens = 0;
  for (int k = 0; k < 30; ++k) {
    const SentencePair& p = data_[k / 2];
    tokens += Tokens(k % 2 == 0 ? p.text_a : p.text_b);
  }
  EXPECT_DOUBLE_EQ(r->tokens_per_item, static_cast<double>(tokens) / 30.0);
}

TEST_F(BenchServerTest, ConcurrentLoadLosesNothing) {
  Start(/*batching=*/true);
  BenchmarkPlan plan;
  plan.requests = 200;
  plan.warmup_s = 0;
  for (int32_t concurrency : {4, 16}) {
    auto r = generator_->RunPoint(plan, GridPoint{2, concurrency, 0}, data_);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->requests_ok, 200) << concurrency;
    EXPECT_EQ(r->items_ok, 400);
    EXPECT_TRUE(r->errors.empty());
  }
}

TEST_F(BenchServerTest, RejectedRequestsAreCountedByCode) {
  Start(/*batching=*/true);
  BenchmarkPlan plan;
  plan.requests = 6;
  plan.warmup_s = 0;
  // 9 pairs > server.max_texts_per_request (8): every request is INVALID_ARGUMENT.
  auto r = generator_->RunPoint(plan, GridPoint{9, 2, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_ok, 0);
  EXPECT_EQ(r->requests_failed, 6);
  EXPECT_EQ(r->errors.at("INVALID_ARGUMENT"), 6);
  EXPECT_EQ(BackendSequences(), 0);
}

TEST_F(BenchServerTest, ModelInfoReachesTheRunRecord) {
  Start(/*batching=*/true);
  auto info = generator_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->at("batching.enabled"), "true");
  EXPECT_EQ(info->at("batching.max_batch_size"), "16");
  EXPECT_EQ(info->at("model.max_texts_per_request"), "8");
}

}  // namespace
}  // namespace client
}  // namespace embedserve
