// LoadGenerator against a fake EmbeddingService on a real local gRPC port: the counts
// it reports (requests, items, errors by code, stage means) must match what the server
// saw and returned.
#include "embedserve/client/load_generator.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "embedserve/v1/embedding.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "test_util/grpc_callback_queue.h"

namespace embedserve {
namespace client {
namespace {

// Servers start and stop one after another here (grpc_callback_queue.h says why).
const bool kGrpcCallbackQueueHeld = testing::HoldGrpcCallbackQueue();

namespace v1 = ::embedserve::v1;

// Answers every request after `delay_ms`, fails every `fail_every`-th request (1-based)
// with RESOURCE_EXHAUSTED, and returns fixed Timings and 10 prompt tokens per item.
class FakeService final : public v1::EmbeddingService::Service {
 public:
  std::atomic<int> delay_ms{1};
  std::atomic<int> fail_every{0};
  std::atomic<int64_t> received{0};
  std::atomic<int64_t> items_received{0};
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};

  std::mutex peers_mu;
  std::set<std::string> peers;  // guarded by peers_mu: each Similarity caller's address
  std::vector<std::chrono::steady_clock::time_point> arrivals;  // guarded by peers_mu
  std::vector<std::string> contents;  // guarded by peers_mu: each Similarity request, serialized

  grpc::Status Similarity(grpc::ServerContext* context, const v1::SimilarityRequest* request,
                          v1::SimilarityResponse* response) override {
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      peers.insert(context->peer());  // "ipv4:127.0.0.1:PORT": one per connection
      arrivals.push_back(std::chrono::steady_clock::now());
      contents.push_back(request->SerializeAsString());
    }
    return Handle(request->pairs_size(), [&](int n) {
      for (int i = 0; i < n; ++i) response->add_scores(0.5f);
      Fill(n, response->mutable_usage(), response->mutable_timings());
    });
  }
  grpc::Status Embed(grpc::ServerContext*, const v1::EmbedRequest* request,
                     v1::EmbedResponse* response) override {
    return Handle(request->texts_size(), [&](int n) {
      for (int i = 0; i < n; ++i) response->add_embeddings()->add_values(1.0f);
      Fill(n, response->mutable_usage(), response->mutable_timings());
    });
  }
  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                            v1::ModelInfo* info) override {
    info->set_name("fake-model");
    info->set_precision("fp32");
    info->mutable_batching()->set_enabled(true);
    (*info->mutable_versions())["embedserve"] = "test";
    return grpc::Status::OK;
  }

 private:
  template <typename F>
  grpc::Status Handle(int items, F fill) {
    int64_t n = ++received;
    items_received += items;
    int now = ++in_flight;
    int prev = max_in_flight.load();
    while (now > prev && !max_in_flight.compare_exchange_weak(prev, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    --in_flight;
    int every = fail_every.load();
    if (every > 0 && n % every == 0) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
    }
    fill(items);
    return grpc::Status::OK;
  }
  static void Fill(int items, v1::Usage* usage, v1::Timings* timings) {
    usage->set_prompt_tokens(10 * items);
    usage->set_total_tokens(10 * items);
    timings->set_tokenize_us(11);
    timings->set_queue_us(22);
    timings->set_inference_us(33);
    timings->set_total_us(100);
  }
};

class LoadGeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    LoadGenerator::Options options;
    options.target = "127.0.0.1:" + std::to_string(port_);
    auto gen = LoadGenerator::Create(options);
    ASSERT_TRUE(gen.ok()) << gen.status();
    generator_ = *std::move(gen);
    data_ = {{"a b c.", "d e f."}, {"g h.", "i j."}, {"k.", "l."}};
  }
  void TearDown() override {
    generator_.reset();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  BenchmarkPlan RequestPlan(int64_t requests, Method method = Method::kSimilarity) {
    BenchmarkPlan plan;
    plan.method = method;
    plan.requests = requests;
    plan.warmup_s = 0;
    plan.pool_requests = 4;
    plan.timeout_ms = 5000;
    return plan;
  }

  FakeService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<LoadGenerator> generator_;
  std::vector<SentencePair> data_;
};

TEST_F(LoadGeneratorTest, WaitReadySeesServingAndModelInfoIsFlattened) {
  ASSERT_TRUE(generator_->WaitReady(10).ok());
  auto info = generator_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->at("model.name"), "fake-model");
  EXPECT_EQ(info->at("model.precision"), "fp32");
  EXPECT_EQ(info->at("batching.enabled"), "true");
  EXPECT_EQ(info->at("versions.embedserve"), "test");
}

TEST_F(LoadGeneratorTest, ClosedLoopRequestCountIsExactForEveryConcurrency) {
  for (int32_t concurrency : {1, 3, 8}) {
    service_.received = 0;
    service_.items_received = 0;
    service_.max_in_flight = 0;
    auto r = generator_->RunPoint(RequestPlan(60), GridPoint{5, concurrency, 0}, data_);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->requests_ok, 60) << concurrency;
    EXPECT_EQ(r->requests_failed, 0);
    EXPECT_EQ(r->items_ok, 300);
    EXPECT_TRUE(r->errors.empty());
    EXPECT_EQ(r->latency.count, 60);
    // The server saw the measured requests plus at most the ones still in flight when
    // the count was reached; never more than `concurrency` at once.
    EXPECT_GE(service_.received.load(), 60);
    EXPECT_LE(service_.received.load(), 60 + concurrency);
    EXPECT_EQ(service_.items_received.load(), 5 * service_.received.load());
    EXPECT_LE(service_.max_in_flight.load(), concurrency);
    // Stage means are the fake's fixed Timings; the rest is latency - total.
    EXPECT_DOUBLE_EQ(r->stages.tokenize_us, 11);
    EXPECT_DOUBLE_EQ(r->stages.queue_us, 22);
    EXPECT_DOUBLE_EQ(r->stages.inference_us, 33);
    EXPECT_DOUBLE_EQ(r->stages.server_total_us, 100);
    EXPECT_NEAR(r->stages.rest_us, r->latency.avg_ms * 1000 - 100, 1.0);
    EXPECT_DOUBLE_EQ(r->tokens_per_item, 10);
    EXPECT_GT(r->items_per_s, 0);
    EXPECT_NEAR(r->items_per_s, 5 * r->requests_per_s, 1e-6);
  }
}

TEST_F(LoadGeneratorTest, HoldsConcurrencyRequestsInFlight) {
  service_.delay_ms = 30;
  auto r = generator_->RunPoint(RequestPlan(24), GridPoint{1, 6, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_ok, 24);
  // With 30 ms per request the 6 slots overlap: the server sees exactly 6 at once.
  EXPECT_EQ(service_.max_in_flight.load(), 6);
}

TEST_F(LoadGeneratorTest, CountsErrorsByStatusCode) {
  service_.fail_every = 5;
  // Concurrency 1 keeps completions in order, so exactly every 5th of 100 fails.
  auto r = generator_->RunPoint(RequestPlan(100), GridPoint{2, 1, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_ok, 80);
  EXPECT_EQ(r->requests_failed, 20);
  EXPECT_EQ(r->items_ok, 160);
  ASSERT_EQ(r->errors.size(), 1u);
  EXPECT_EQ(r->errors.at("RESOURCE_EXHAUSTED"), 20);
  EXPECT_EQ(r->latency.count, 80);  // latency of successful requests only
  EXPECT_EQ(r->refused_latency.count, 20);
  EXPECT_GE(r->refused_latency.p50_ms, 1.0);  // each waited delay_ms (1) before its answer
}

// A closed-loop caller refused with RESOURCE_EXHAUSTED waits backoff_ms before its next
// request: with one caller and every call refused, arrivals are at least that far apart.
TEST_F(LoadGeneratorTest, ClosedLoopBacksOffAfterAFullQueue) {
  service_.fail_every = 1;
  service_.delay_ms = 0;
  BenchmarkPlan plan = RequestPlan(6);
  plan.backoff_ms = 40;
  auto r = generator_->RunPoint(plan, GridPoint{1, 1, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->errors.at("RESOURCE_EXHAUSTED"), 6);
  EXPECT_EQ(r->refused_latency.count, 6);  // refusals' latency, apart from the answers'
  EXPECT_EQ(r->latency.count, 0);
  std::lock_guard<std::mutex> lock(service_.peers_mu);
  ASSERT_EQ(service_.arrivals.size(), 6u);
  for (size_t i = 1; i < service_.arrivals.size(); ++i) {
    EXPECT_GE(service_.arrivals[i] - service_.arrivals[i - 1], std::chrono::milliseconds(40))
        << i;
  }
}

// A closed-loop caller sends a refused request again as it was, as a retrying client
// does (the server counts a retried request's demand once), with or without a backoff;
// after an answer it goes on to the next request.
TEST_F(LoadGeneratorTest, ClosedLoopResendsARefusedRequestAsItWas) {
  const std::vector<SentencePair> distinct = {{"a.", "b."}, {"c.", "d."}, {"e.", "f."},
                                              {"g.", "h."}};
  for (int64_t backoff_ms : {0, 5}) {
    {
      std::lock_guard<std::mutex> lock(service_.peers_mu);
      service_.contents.clear();
    }
    service_.received = 0;
    service_.fail_every = 2;  // every second call refused
    service_.delay_ms = 0;
    BenchmarkPlan plan = RequestPlan(10);
    plan.backoff_ms = backoff_ms;
    auto r = generator_->RunPoint(plan, GridPoint{1, 1, 0}, distinct);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->requests_ok, 5) << backoff_ms;
    EXPECT_EQ(r->errors.at("RESOURCE_EXHAUSTED"), 5) << backoff_ms;
    std::lock_guard<std::mutex> lock(service_.peers_mu);
    const std::vector<std::string>& c = service_.contents;
    ASSERT_EQ(c.size(), 10u) << backoff_ms;
    for (size_t i = 1; i < c.size(); i += 2) {  // calls 2, 4, ... were refused
      EXPECT_NE(c[i], c[i - 1]) << backoff_ms << " " << i;  // a new request after an answer
      if (i + 1 < c.size()) EXPECT_EQ(c[i + 1], c[i]) << backoff_ms << " " << i;  // resent
    }
  }
}

TEST_F(LoadGeneratorTest, EmbedSendsBatchSizeTexts) {
  auto r = generator_->RunPoint(RequestPlan(20, Method::kEmbed), GridPoint{7, 2, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->method, Method::kEmbed);
  EXPECT_EQ(r->requests_ok, 20);
  EXPECT_EQ(r->items_ok, 140);
  EXPECT_EQ(service_.items_received.load(), 7 * service_.received.load());
}

TEST_F(LoadGeneratorTest, DurationModeMeasuresTheWindowOnly) {
  BenchmarkPlan plan;
  plan.duration_s = 0.5;
  plan.warmup_s = 0.2;
  plan.pool_requests = 2;
  service_.delay_ms = 5;
  auto r = generator_->RunPoint(plan, GridPoint{1, 2, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->measured_s, 0.5);
  EXPECT_GT(r->requests_ok, 10);
  // Warm-up requests were sent but not counted.
  EXPECT_GT(service_.received.load(), r->requests_ok);
  EXPECT_NEAR(r->requests_per_s, r->requests_ok / 0.5, 1e-9);
  // 2 in flight, >= 5 ms each: at most ~400 req/s.
  EXPECT_LT(r->requests_per_s, 410);
}

TEST_F(LoadGeneratorTest, WindowExtendsWhenRequestsAreSlowerThanIt) {
  BenchmarkPlan plan;
  plan.duration_s = 0.05;
  plan.warmup_s = 0;
  plan.pool_requests = 2;
  service_.delay_ms = 300;
  // No request can finish inside 50 ms: the window runs on until each of the 2 slots
  // completed once, and throughput is measured over that longer window.
  auto r = generator_->RunPoint(plan, GridPoint{3, 2, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->requests_ok, 2);
  EXPECT_GE(r->measured_s, 0.29);
  EXPECT_LT(r->measured_s, 5.0);
  EXPECT_NEAR(r->items_per_s, r->items_ok / r->measured_s, 1e-9);
  EXPECT_GT(r->items_per_s, 0);
}

TEST_F(LoadGeneratorTest, OpenLoopSendsAtTheRate) {
  BenchmarkPlan plan;
  plan.duration_s = 1.0;
  plan.warmup_s = 0.1;
  plan.pool_requests = 2;
  auto r = generator_->RunPoint(plan, GridPoint{1, 64, 100}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  // 100 req/s for 1 s; a loaded 2-core CI box may lose a few to scheduling.
  EXPECT_NEAR(static_cast<double>(r->requests_ok), 100, 15);
  EXPECT_EQ(r->not_sent, 0);
  EXPECT_NEAR(r->achieved_rate_rps, 100, 15);
}

TEST_F(LoadGeneratorTest, OpenLoopReportsArrivalsItCouldNotSend) {
  BenchmarkPlan plan;
  plan.duration_s = 0.5;
  plan.warmup_s = 0;
  plan.pool_requests = 1;
  service_.delay_ms = 50;
  // 200 arrivals/s but only 1 in flight of 50 ms: about 180 of 200 cannot be sent.
  auto r = generator_->RunPoint(plan, GridPoint{1, 1, 200}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->not_sent, 50);
  EXPECT_LE(service_.max_in_flight.load(), 1);
}

TEST(LoadGeneratorNoServerTest, FailuresAreCountedNotHidden) {
  LoadGenerator::Options options;
  options.target = "127.0.0.1:1";  // nothing listens there
  auto gen = LoadGenerator::Create(options);
  ASSERT_TRUE(gen.ok());
  BenchmarkPlan plan;
  plan.requests = 5;
  plan.warmup_s = 0;
  plan.timeout_ms = 2000;
  plan.pool_requests = 1;
  auto r = (*gen)->RunPoint(plan, GridPoint{1, 1, 0}, {{"a.", "b."}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_ok, 0);
  EXPECT_EQ(r->requests_failed, 5);
  EXPECT_EQ(r->errors.at("UNAVAILABLE"), 5);
  absl::Status ready = (*gen)->WaitReady(0.3);
  EXPECT_EQ(ready.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(ready.message()), ::testing::HasSubstr("not SERVING"));
}

// --channels: the calls go over that many connections (distinct client addresses at the
// server), and every one is answered and counted.
TEST_F(LoadGeneratorTest, ChannelsSpreadCallsOverTheirOwnConnections) {
  LoadGenerator::Options options;
  options.target = "127.0.0.1:" + std::to_string(port_);
  options.channels = 4;
  auto gen = LoadGenerator::Create(options);
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_EQ((*gen)->channels(), 4);
  EXPECT_EQ(generator_->channels(), 1);
  auto r = (*gen)->RunPoint(RequestPlan(40), GridPoint{1, 4, 0}, data_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_ok, 40);
  EXPECT_EQ(r->requests_failed, 0);
  std::lock_guard<std::mutex> lock(service_.peers_mu);
  EXPECT_EQ(service_.peers.size(), 4u);
}

TEST(LoadGeneratorNoServerTest, RejectsBadInput) {
  auto gen = LoadGenerator::Create(LoadGenerator::Options{""});
  EXPECT_EQ(gen.status().code(), absl::StatusCode::kInvalidArgument);
  for (int32_t channels : {0, LoadGenerator::kMaxChannels + 1}) {
    LoadGenerator::Options bad{"127.0.0.1:1"};
    bad.channels = channels;
    EXPECT_THAT(LoadGenerator::Create(bad).status().message(),
                ::testing::HasSubstr("channels must be in [1, 256]"));
  }
  auto ok = LoadGenerator::Create(LoadGenerator::Options{"127.0.0.1:1"});
  ASSERT_TRUE(ok.ok());
  BenchmarkPlan plan;
  EXPECT_EQ((*ok)->RunPoint(plan, GridPoint{1, 1, 0}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*ok)->RunPoint(plan, GridPoint{0, 1, 0}, {{"a", "b"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(99), "CODE_99");
}

}  // namespace
}  // namespace client
}  // namespace embedserve
