// The server end to end with the real sentence-transformers/all-MiniLM-L6-v2
// (models/all-MiniLM-L6-v2, from scripts/setup.sh), fp32 on CPU, through a real gRPC
// channel: Similarity scores and Embed vectors against the sentence-transformers fixtures
// of tests/data/all-MiniLM-L6-v2 (scripts/reference/make_fixtures.py).
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "embedserve/model/model_loader.h"
#include "embedserve/server/server.h"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "server/model_server_util.h"
#include "nlohmann/json.hpp"
#include "test_util/grpc_callback_queue.h"

namespace embedserve {
namespace {

const bool kGrpcCallbackQueueHeld = testing::HoldGrpcCallbackQueue();
const std::string kModelDir = std::string(EMBEDSERVE_MODELS_DIR) + "/all-MiniLM-L6-v2";
const std::string kRefDir = std::string(EMBEDSERVE_TEST_DATA_DIR) + "/all-MiniLM-L6-v2";

class MiniLmServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = testing::StartCpuModelServer(kModelDir);
    ASSERT_TRUE(server.ok()) << server.status()
                             << " (models/all-MiniLM-L6-v2 comes from scripts/setup.sh)";
    server_ = server->release();
    stub_ = v1::EmbeddingService::NewStub(
                grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()))
                .release();
  }
  static void TearDownTestSuite() {
    delete stub_;
    delete server_;
  }

  static EmbedServer* server_;
  static v1::EmbeddingService::Stub* stub_;
};
EmbedServer* MiniLmServerTest::server_ = nullptr;
v1::EmbeddingService::Stub* MiniLmServerTest::stub_ = nullptr;

TEST_F(MiniLmServerTest, ModelInfoSaysRealModel) {
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_FALSE(info.synthetic());
  EXPECT_EQ(info.dimension(), 384);
  EXPECT_EQ(info.max_seq_length(), 256);
}

// Every pair of pairs.jsonl, 32 pairs a request: within 1e-5 of sentence-transformers.
TEST_F(MiniLmServerTest, SimilarityScoresMatchSentenceTransformers) {
  std::vector<std::pair<std::string, std::string>> pairs;
  std::vector<double> want;
  std::ifstream in(kRefDir + "/pairs.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    pairs.emplace_back(j["text_a"].get<std::string>(), j["text_b"].get<std::string>());
    want.push_back(j["score"].get<double>());
  }
  ASSERT_GE(pairs.size(), 500u);
  double worst = 0;
  for (size_t start = 0; start < pairs.size(); start += 32) {
    v1::SimilarityRequest request;
    const size_t end = std::min(pairs.size(), start + 32);
    for (size_t i = start; i < end; ++i) {
      auto* p = request.add_pairs();
      p->set_text_a(pairs[i].first);
      p->set_text_b(pairs[i].second);
    }
    grpc::ClientContext ctx;
    v1::SimilarityResponse response;
    const grpc::Status status = stub_->Similarity(&ctx, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(static_cast<size_t>(response.scores_size()), end - start);
    for (size_t i = start; i < end; ++i) {
      const double d = std::abs(response.scores(i - start) - want[i]);
      EXPECT_LE(d, 1e-5) << "pair " << i;
      worst = std::max(worst, d);
    }
  }
  std::printf("Similarity over gRPC, %zu pairs: worst score difference %.3g\n", pairs.size(),
              worst);
}

// The first 512 reference texts, 64 a request: each component within 1e-5.
TEST_F(MiniLmServerTest, EmbedMatchesSentenceTransformers) {
  std::vector<std::string> texts;
  std::ifstream in(kRefDir + "/reference.jsonl");
  for (std::string line; texts.size() < 512 && std::getline(in, line);) {
    texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  }
  std::vector<float> want(texts.size() * 384);
  std::ifstream bin(kRefDir + "/reference_embeddings.f32", std::ios::binary);
  bin.read(reinterpret_cast<char*>(want.data()), want.size() * sizeof(float));
  ASSERT_TRUE(bin);
  double worst = 0;
  for (size_t start = 0; start < texts.size(); start += 64) {
    v1::EmbedRequest request;
    for (size_t i = start; i < start + 64; ++i) request.add_texts(texts[i]);
    grpc::ClientContext ctx;
    v1::EmbedResponse response;
    const grpc::Status status = stub_->Embed(&ctx, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.embeddings_size(), 64);
    for (int r = 0; r < 64; ++r) {
      ASSERT_EQ(response.embeddings(r).values_size(), 384);
      for (int k = 0; k < 384; ++k) {
        worst = std::max(worst, double(std::abs(response.embeddings(r).values(k) -
                                                want[(start + r) * 384 + k])));
      }
    }
  }
  std::printf("Embed over gRPC, %zu texts: worst component difference %.3g\n", texts.size(),
              worst);
  EXPECT_LE(worst, 1e-5);
}

}  // namespace
}  // namespace embedserve
