// A gtest fixture for the server tests: an in-process EmbedServer on free ports over the
// FakeBackend (whose rows say which tokens made them) and the tiny-bert tokenizer, with a
// channel and a stub to it. Test-only; one test thread.
#ifndef EMBEDSERVE_TESTS_SERVER_FAKE_SERVER_TEST_H_
#define EMBEDSERVE_TESTS_SERVER_FAKE_SERVER_TEST_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <utility>

#include "embedserve/server/server.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "server/server_test_util.h"
#include "test_util/fake_backend.h"
#include "test_util/fake_clock.h"

namespace embedserve {
namespace testing {

class FakeServerTest : public ::testing::Test {
 protected:
  // Starts `config` over a FakeBackend made with `backend_options`; backend_, server_,
  // channel_ and stub_ are set when it returns without a fatal failure. With
  // `on_fake_clock` the server's time line (deadlines, stage timings) is fake_clock_,
  // which only the test moves.
  void StartFakeServer(const ServerConfig& config, const FakeBackend::Options& backend_options,
                       bool on_fake_clock = false) {
    auto tokenizer = Tokenizer::FromModelDir(TinyBertDir());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    auto backend = std::make_unique<FakeBackend>(backend_options);
    backend_ = backend.get();
    ServerConfig effective = config;
    if (grpc_queues_ >= 0) effective.server.grpc_queues = grpc_queues_;
    auto server = StartServer(effective, ServingModel(*std::move(tokenizer), std::move(backend)),
                              on_fake_clock ? &fake_clock_ : nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::EmbeddingService::NewStub(channel_);
  }

  // Releases calls held at the backend's gate and stops the server (1 s grace). The
  // server owns the backend: a test that destroyed server_ has destroyed backend_ too.
  void TearDown() override {
    if (server_ == nullptr) return;
    backend_->OpenGate();
    server_->Shutdown(1'000'000);
  }

  // server.grpc_queues for every server StartFakeServer starts; -1: as the config says.
  // The parameterized suites run each test on both ways of taking calls.
  int grpc_queues_ = -1;
  FakeClock fake_clock_;  // declared before server_, which may read it until destroyed
  FakeBackend* backend_ = nullptr;
  std::unique_ptr<EmbedServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::EmbeddingService::Stub> stub_;
};

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_SERVER_FAKE_SERVER_TEST_H_
