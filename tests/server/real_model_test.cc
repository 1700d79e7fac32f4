// The service end to end with the real LibTorch backend: an in-process EmbedServer that
// loads tests/data/tiny-bert (fp32, CPU), called through a real gRPC channel.
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "embedserve/model/embedding_matrix.h"
#include "embedserve/model/model_loader.h"
#include "embedserve/server/server.h"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "server/model_server_util.h"
#include "nlohmann/json.hpp"
#include "server/server_test_util.h"
#include "test_util/grpc_callback_queue.h"

namespace embedserve {
namespace {

// Servers start and stop one after another here (grpc_callback_queue.h says why).
const bool kGrpcCallbackQueueHeld = testing::HoldGrpcCallbackQueue();

class RealModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = testing::StartCpuModelServer(testing::TinyBertDir());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    stub_ = v1::EmbeddingService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()))
                .release();
  }
  static void TearDownTestSuite() {
    delete stub_;
    delete server_;
  }

  static std::vector<std::vector<float>> Embed(const std::vector<std::string>& texts) {
    v1::EmbedRequest request;
    for (const auto& t : texts) request.add_texts(t);
    grpc::ClientContext ctx;
    v1::EmbedResponse response;
    const grpc::Status status = stub_->Embed(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::vector<float>> out;
    for (const auto& e : response.embeddings()) out.emplace_back(e.values().begin(), e.values().end());
    return out;
  }

  static EmbedServer* server_;
  static v1::EmbeddingService::Stub* stub_;
};
EmbedServer* RealModelTest::server_ = nullptr;
v1::EmbeddingService::Stub* RealModelTest::stub_ = nullptr;

TEST_F(RealModelTest, MatchesSentenceTransformersReference) {
  std::ifstream in(std::string(EMBEDSERVE_TEST_DATA_DIR) + "/tiny-bert_embeddings.jsonl");
  ASSERT_TRUE(in);
  std::vector<std::string> texts;
  std::vector<std::vector<float>> want;
  std::string line;
  while (texts.size() < 32 && std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    texts.push_back(j["text"].get<std::string>());
    want.push_back(j["embedding"].get<std::vector<float>>());
  }
  const auto got = Embed(texts);
  ASSERT_EQ(got.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size());
    // fp32 LibTorch 1.13 vs PyTorch 2.11 reference rounded to 7 decimals.
    for (size_t k = 0; k < want[i].size(); ++k) EXPECT_NEAR(got[i][k], want[i][k], 2e-5) << i;
  }
}

TEST_F(RealModelTest, EmbedOfNTextsEqualsNSingleEmbeds) {
  const std::vector<std::string> texts = {"short", "a somewhat longer sentence about cats",
                                          "", "ünïcödé and 日本語 and emoji 🚀",
                                          "the last one, with punctuation!"};
  const auto all = Embed(texts);
  ASSERT_EQ(all.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto one = Embed({texts[i]});
    ASSERT_EQ(one.size(), 1u);
    // Padding to the batch's longest text changes the float summation order only.
    for (size_t k = 0; k < one[0].size(); ++k) EXPECT_NEAR(one[0][k], all[i][k], 1e-5) << i;
  }
}

TEST_F(RealModelTest, SimilarityIsCosineOfEmbeddings) {
  v1::SimilarityRequest request;
  auto* p = request.add_pairs();
  p->set_text_a("a cat sat on the mat");
  p->set_text_b("dogs run in the park");
  grpc::ClientContext ctx;
  v1::SimilarityResponse response;
  ASSERT_TRUE(stub_->Similarity(&ctx, request, &response).ok());
  const auto e = Embed({"a cat sat on the mat", "dogs run in the park"});
  ASSERT_EQ(e.size(), 2u);
  EXPECT_NEAR(response.scores(0), Cosine(e[0].data(), e[1].data(), static_cast<int64_t>(e[0].size())),
              1e-5);
}

}  // namespace
}  // namespace embedserve
