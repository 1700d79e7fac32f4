// End-to-end tests of the service through a real gRPC channel: an in-process EmbedServer
// on a free port, the tiny-bert tokenizer and the FakeBackend (whose rows encode their
// input ids, so each row proves which text produced it).
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "embedserve/model/embedding_matrix.h"
#include "embedserve/server/metrics.h"
#include "embedserve/server/server.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "server/fake_server_test.h"
#include "server/server_test_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "test_util/fake_backend.h"
#include "test_util/fake_clock.h"
#include "test_util/grpc_callback_queue.h"

namespace embedserve {
namespace {

// Servers start and stop one after another here (grpc_callback_queue.h says why).
const bool kGrpcCallbackQueueHeld = testing::HoldGrpcCallbackQueue();

using ::embedserve::testing::FakeBackend;
using ::testing::HasSubstr;

constexpr int kDim = 4;

std::unique_ptr<Tokenizer> LoadTokenizer() {
  auto tok = Tokenizer::FromModelDir(testing::TinyBertDir());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// Polls `condition` (an in-memory value the server's threads move) for up to 10 s.
bool WaitUntil(const std::function<bool()>& condition) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

ServerConfig TestConfig() {
  ServerConfig config;
  config.server.port = 0;
  config.server.metrics_port = 0;
  config.server.http_port = 0;
  config.server.max_texts_per_request = 8;
  config.server.shutdown_grace_ms = 5000;
  config.batching.max_batch_size = 16;
  config.batching.max_batch_tokens = 8192;
  config.batching.max_queue_sequences = 64;
  config.batching.workers = 1;
  config.model.max_seq_length = 16;  // small, so that "too long" is easy to reach
  return config;
}

class ServiceTest : public testing::FakeServerTest,
                    public ::testing::WithParamInterface<int> {
 protected:
  ServiceTest() { grpc_queues_ = GetParam(); }

  void Start(ServerConfig config = TestConfig(), FakeBackend::Options backend_options = {},
             int64_t dimension = kDim, bool on_fake_clock = false) {
    backend_options.dimension = dimension;
    tokenizer_ = LoadTokenizer();
    ASSERT_NE(tokenizer_, nullptr);
    StartFakeServer(config, backend_options, on_fake_clock);
  }

  // The row the fake backend gives `text` (truncated to 16 tokens as configured).
  std::vector<float> Expected(const std::string& text, int64_t max_len = 16) {
    auto enc = tokenizer_->Encode(text, max_len);
    EXPECT_TRUE(enc.ok()) << enc.status();
    return FakeBackend::Encode(enc->ids, kDim);
  }

  grpc::Status Embed(const std::vector<std::string>& texts, v1::EmbedResponse* response,
                     std::optional<bool> truncate = std::nullopt,
                     std::optional<bool> normalize = std::nullopt, int deadline_ms = 10000) {
    v1::EmbedRequest request;
    for (const auto& t : texts) request.add_texts(t);
    if (truncate) request.set_truncate(*truncate);
    if (normalize) request.set_normalize(*normalize);
    request.set_id("req-1");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    return stub_->Embed(&ctx, request, response);
  }

  int64_t Tokenized() { return static_cast<int64_t>(server_->metrics().tokenized_requests()); }

  static v1::EmbedRequest StreamMessage(int i, int texts) {
    v1::EmbedRequest r;
    r.set_id(std::to_string(i));
    r.set_normalize(false);
    for (int j = 0; j < texts; ++j) r.add_texts("m" + std::to_string(i) + " t" + std::to_string(j));
    return r;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
};

std::vector<float> Values(const v1::Embedding& e) {
  return std::vector<float>(e.values().begin(), e.values().end());
}

TEST_P(ServiceTest, EmbedGivesOneRowPerTextInOrder) {
  Start();
  const std::vector<std::string> texts = {"hello world", "i like strawberries", "",
                                          "a much longer sentence with several words"};
  v1::EmbedResponse response;
  const grpc::Status status = Embed(texts, &response, std::nullopt, false);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.embeddings_size(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Values(response.embeddings(i)), Expected(texts[i])) << i;
  EXPECT_EQ(response.id(), "req-1");
  // The empty string is [CLS] [SEP].
  EXPECT_EQ(Values(response.embeddings(2)), (std::vector<float>{2, 101, 102, 203}));
}

TEST_P(ServiceTest, EmbedOfNTextsEqualsNSingleEmbeds) {
  Start();
  const std::vector<std::string> texts = {"first text", "second, longer text here", "3",
                                          "ünïcödé words", "the end"};
  v1::EmbedResponse all;
  ASSERT_TRUE(Embed(texts, &all).ok());
  ASSERT_EQ(all.embeddings_size(), static_cast<int>(texts.size()));
  for (size_t i = 0; i < texts.size(); ++i) {
    v1::EmbedResponse one;
    ASSERT_TRUE(Embed({texts[i]}, &one).ok());
    ASSERT_EQ(one.embeddings_size(), 1);
    EXPECT_EQ(Values(one.embeddings(0)), Values(all.embeddings(static_cast<int>(i)))) << i;
  }
}

TEST_P(ServiceTest, NormalizeGivesUnitVectorsAndDefaultsToTheModel) {
  Start();
  v1::EmbedResponse raw, unit, dflt;
  ASSERT_TRUE(Embed({"some words"}, &raw, std::nullopt, false).ok());
  ASSERT_TRUE(Embed({"some words"}, &unit, std::nullopt, true).ok());
  ASSERT_TRUE(Embed({"some words"}, &dflt).ok());
  std::vector<float> want = Values(raw.embeddings(0));
  L2NormalizeInPlace(want.data(), kDim);
  const std::vector<float> got = Values(unit.embeddings(0));
  double norm = 0;
  for (int i = 0; i < kDim; ++i) {
    EXPECT_FLOAT_EQ(got[i], want[i]);
    norm += got[i] * got[i];
  }
  EXPECT_NEAR(norm, 1.0, 1e-6);
  // FakeBackend's folder has no Normalize module: unset means raw.
  EXPECT_EQ(Values(dflt.embeddings(0)), Values(raw.embeddings(0)));
}

TEST_P(ServiceTest, ResponseCarriesUsageAndTimings) {
  Start();
  v1::EmbedResponse response;
  ASSERT_TRUE(Embed({"hello world", "i like strawberries"}, &response).ok());
  const int64_t want_tokens = 4 + 6;  // [CLS] hello world [SEP], [CLS] i like straw ##berries [SEP]
  EXPECT_EQ(response.usage().prompt_tokens(), want_tokens);
  EXPECT_EQ(response.usage().total_tokens(), want_tokens);
  EXPECT_GE(response.timings().total_us(), response.timings().inference_us());
  EXPECT_GE(response.timings().total_us(), response.timings().tokenize_us());
  EXPECT_GT(response.timings().total_us(), 0);
}

TEST_P(ServiceTest, TruncatesByDefaultAndRejectsTooLongWhenAsked) {
  Start();
  const std::string long_text =
      "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
      "fifteen sixteen seventeen eighteen";
  v1::EmbedResponse response;
  ASSERT_TRUE(Embed({"short", long_text}, &response).ok());
  EXPECT_EQ(response.embeddings(1).values(0), 16.0f);  // length after truncation
  EXPECT_EQ(Values(response.embeddings(1)), Expected(long_text));

  response.Clear();
  const grpc::Status status = Embed({"short", long_text}, &response, /*truncate=*/false);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("texts[1]"));
  EXPECT_THAT(status.error_message(), HasSubstr("max_seq_length 16"));
  EXPECT_TRUE(Embed({"short"}, &response, /*truncate=*/false).ok());
}

TEST_P(ServiceTest, RejectsEmptyAndOversizedRequests) {
  Start();
  v1::EmbedResponse response;
  grpc::Status status = Embed({}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("texts"));
  status = Embed(std::vector<std::string>(9, "x"), &response);  // limit is 8
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("more than the limit of 8"));

  grpc::ClientContext ctx;
  v1::SimilarityRequest sim;
  v1::SimilarityResponse sim_response;
  status = stub_->Similarity(&ctx, sim, &sim_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("pairs"));

  grpc::ClientContext ctx2;
  v1::TokenizeRequest tok;
  v1::TokenizeResponse tok_response;
  status = stub_->Tokenize(&ctx2, tok, &tok_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(backend_->num_calls(), 1);  // the warm-up only
}

TEST_P(ServiceTest, SimilarityIsCosineOfEmbedVectorsAndEmbedsEachTextOnce) {
  Start();
  v1::SimilarityRequest request;
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"a cat sat", "a dog ran"}, {"a cat sat", "a cat sat"}, {"a dog ran", "birds fly high"}};
  for (const auto& [a, b] : pairs) {
    auto* p = request.add_pairs();
    p->set_text_a(a);
    p->set_text_b(b);
  }
  const int64_t calls_before = backend_->num_calls();
  grpc::ClientContext ctx;
  v1::SimilarityResponse response;
  const grpc::Status status = stub_->Similarity(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.scores_size(), 3);
  // Three distinct texts went to the model, once each.
  const auto calls = backend_->calls();
  size_t sequences = 0;
  for (size_t i = static_cast<size_t>(calls_before); i < calls.size(); ++i) sequences += calls[i].size();
  EXPECT_EQ(sequences, 3u);
  for (int i = 0; i < 3; ++i) {
    v1::EmbedResponse ea, eb;
    ASSERT_TRUE(Embed({pairs[i].first}, &ea).ok());
    ASSERT_TRUE(Embed({pairs[i].second}, &eb).ok());
    const auto a = Values(ea.embeddings(0));
    const auto b = Values(eb.embeddings(0));
    EXPECT_NEAR(response.scores(i), Cosine(a.data(), b.data(), kDim), 1e-6) << i;
  }
  EXPECT_NEAR(response.scores(1), 1.0, 1e-6);
}

TEST_P(ServiceTest, TokenizeEqualsTheTokenizer) {
  Start();
  const std::vector<std::string> texts = {"i like strawberries", "", "Ünïcödé 日本語 text",
                                          "one two three four five six seven eight nine ten "
                                          "eleven twelve thirteen fourteen fifteen sixteen"};
  v1::TokenizeRequest request;
  for (const auto& t : texts) request.add_texts(t);
  grpc::ClientContext ctx;
  v1::TokenizeResponse response;
  ASSERT_TRUE(stub_->Tokenize(&ctx, request, &response).ok());
  ASSERT_EQ(response.tokens_size(), 4);
  int64_t total = 0;
  for (int i = 0; i < 4; ++i) {
    auto enc = tokenizer_->Encode(texts[i], 16);
    ASSERT_TRUE(enc.ok());
    EXPECT_EQ(std::vector<int32_t>(response.tokens(i).ids().begin(), response.tokens(i).ids().end()),
              enc->ids)
        << i;
    total += static_cast<int64_t>(enc->ids.size());
  }
  EXPECT_EQ(response.usage().prompt_tokens(), total);
  EXPECT_EQ(std::vector<int32_t>(response.tokens(0).ids().begin(), response.tokens(0).ids().end()),
            (std::vector<int32_t>{101, 1045, 2066, 13137, 20968, 102}));

  request.set_truncate(false);
  grpc::ClientContext ctx2;
  response.Clear();
  const grpc::Status status = stub_->Tokenize(&ctx2, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("texts[3]"));
}

TEST_P(ServiceTest, GetModelInfoDescribesModelAndBatching) {
  ServerConfig config = TestConfig();
  config.model.name = "org/display-name";  // shown instead of the folder's own name
  Start(config);
  EXPECT_THAT(server_->Summary(), HasSubstr("Loaded org/display-name (pretrained weights"));
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.name(), "org/display-name");
  EXPECT_EQ(info.dimension(), kDim);
  EXPECT_EQ(info.max_seq_length(), 16);
  EXPECT_EQ(info.pooling(), "mean");
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.precision(), "fp32");
  EXPECT_TRUE(info.batching().enabled());
  EXPECT_EQ(info.batching().max_batch_size(), 16);
  EXPECT_EQ(info.batching().max_queue_sequences(), 64);
  EXPECT_EQ(info.max_texts_per_request(), 8);
  EXPECT_EQ(info.versions().at("embedserve"), "0.1.0");
  EXPECT_TRUE(info.versions().contains("grpc"));
}

TEST_P(ServiceTest, QueueFullIsResourceExhaustedAndOthersStillSucceed) {
  ServerConfig config = TestConfig();
  config.batching.max_queue_sequences = 4;
  // The count alone: after the warm-up batch the time bound (max_queue_wait_ms) may
  // come to the same 4 sequences on a slow machine and name itself instead.
  config.batching.max_queue_wait_ms = 0;
  Start(config);
  backend_->CloseGate();
  // A: taken by the only worker, held at the gate; the queue is empty again.
  v1::EmbedResponse ra;
  grpc::Status sa;
  std::thread ta([&] { sa = Embed({"a"}, &ra); });
  backend_->WaitForWaitingCalls(1);
  // B and C, 3 sequences each, race for a queue of 4: exactly one fits.
  std::vector<std::string> b = {"b1", "b2", "b3"}, c = {"c1", "c2", "c3"};
  v1::EmbedResponse rb, rc;
  grpc::Status sb, sc;
  std::thread tb([&] { sb = Embed(b, &rb); });
  std::thread tc([&] { sc = Embed(c, &rc); });
  // The loser fails at once, without waiting for the gate.
  EXPECT_TRUE(WaitUntil([&] {
    return server_->metrics().requests(RpcMethod::kEmbed, grpc::StatusCode::RESOURCE_EXHAUSTED) == 1;
  }));
  backend_->OpenGate();
  ta.join();
  tb.join();
  tc.join();
  EXPECT_TRUE(sa.ok()) << sa.error_message();
  ASSERT_NE(sb.ok(), sc.ok()) << sb.error_message() << " / " << sc.error_message();
  const grpc::Status& lost = sb.ok() ? sc : sb;
  EXPECT_EQ(lost.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(lost.error_message(), HasSubstr("max_queue_sequences"));
  const auto& won = sb.ok() ? rb : rc;
  const auto& won_texts = sb.ok() ? b : c;
  ASSERT_EQ(won.embeddings_size(), 3);
  EXPECT_EQ(Values(won.embeddings(2)), Expected(won_texts[2]));
}

TEST_P(ServiceTest, DeadlinePassedInQueueIsDeadlineExceeded) {
  Start(TestConfig(), {}, kDim, /*on_fake_clock=*/true);
  backend_->CloseGate();
  v1::EmbedResponse ra;
  grpc::Status sa;
  std::thread ta([&] { sa = Embed({"a"}, &ra); });
  backend_->WaitForWaitingCalls(1);
  v1::EmbedResponse rb;
  const grpc::Status sb = Embed({"b"}, &rb, std::nullopt, std::nullopt, /*deadline_ms=*/100);
  EXPECT_EQ(sb.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server's copy of the deadline is on its (fake) clock: move that past it before
  // the queue moves.
  fake_clock_.Advance(1'000'000);
  backend_->OpenGate();
  ta.join();
  EXPECT_TRUE(sa.ok());
  // The server answered B with DEADLINE_EXCEEDED itself (dropped from the queue, or
  // refused at once when a loaded machine ran its handler after the deadline).
  // The reply is counted a moment after the client has it.
  EXPECT_TRUE(WaitUntil([&] {
    return server_->metrics().requests(RpcMethod::kEmbed, grpc::StatusCode::DEADLINE_EXCEEDED) == 1;
  }));

  // B never reached the model.
  for (const auto& call : backend_->calls()) {
    for (const auto& seq : call) EXPECT_NE(FakeBackend::Encode(seq, kDim), Expected("b"));
  }
}

// A unary call its client cancels while it waits in the batch queue never reaches the
// model and is counted CANCELLED (on the queues: the call's end event sets the flag
// the batcher polls).
TEST_P(ServiceTest, CancelledCallIsDroppedBeforeTheModel) {
  Start();
  backend_->CloseGate();
  v1::EmbedResponse ra;
  grpc::Status sa;
  std::thread ta([&] { sa = Embed({"a"}, &ra); });
  backend_->WaitForWaitingCalls(1);  // A holds the only worker
  grpc::ClientContext ctx;
  v1::EmbedRequest rb;
  rb.add_texts("b");
  v1::EmbedResponse resp_b;
  grpc::Status sb;
  absl::Notification b_done;
  stub_->async()->Embed(&ctx, &rb, &resp_b, [&](grpc::Status s) {
    sb = std::move(s);
    b_done.Notify();
  });
  ASSERT_TRUE(WaitUntil([&] { return Tokenized() == 2; }));  // B queued behind A
  ctx.TryCancel();
  b_done.WaitForNotification();
  EXPECT_EQ(sb.error_code(), grpc::StatusCode::CANCELLED);
  // A call after the cancel on the same connection: the server has read the cancel.
  {
    grpc::ClientContext info_ctx;
    v1::ModelInfo info;
    ASSERT_TRUE(stub_->GetModelInfo(&info_ctx, v1::GetModelInfoRequest(), &info).ok());
  }
  backend_->OpenGate();
  ta.join();
  EXPECT_TRUE(sa.ok()) << sa.error_message();
  EXPECT_TRUE(WaitUntil([&] {
    return server_->metrics().requests(RpcMethod::kEmbed, grpc::StatusCode::CANCELLED) == 1;
  }));
  for (const auto& call : backend_->calls()) {
    for (const auto& seq : call) EXPECT_NE(FakeBackend::Encode(seq, kDim), Expected("b"));
  }
}

TEST_P(ServiceTest, AFailingRequestDoesNotAffectOthersInTheSameBatch) {
  ServerConfig config = TestConfig();
  config.batching.max_queue_delay_us = 200'000;  // gather everything into one batch
  Start(config);
  std::vector<std::thread> threads;
  std::vector<grpc::Status> status(6);
  std::vector<v1::EmbedResponse> responses(6);
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      if (i % 2 == 0) {
        status[i] = Embed({"good text " + std::to_string(i)}, &responses[i]);
      } else {
        // Too long with truncate=false: fails before it reaches the batch.
        status[i] = Embed({"way too long a text for a limit of sixteen tokens, which this one "
                           "exceeds by quite a few words indeed"},
                          &responses[i], /*truncate=*/false);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 6; ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(status[i].ok()) << i << ": " << status[i].error_message();
      EXPECT_EQ(Values(responses[i].embeddings(0)), Expected("good text " + std::to_string(i)));
    } else {
      EXPECT_EQ(status[i].error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    }
  }
}

TEST_P(ServiceTest, EmbedStreamEchoesIdsAndReportsErrorsPerMessage) {
  Start();
  grpc::ClientContext ctx;
  auto stream = stub_->EmbedStream(&ctx);
  const std::vector<std::vector<std::string>> requests = {
      {"first"}, {}, {"second", "third"}, {"fourth"}};
  for (size_t i = 0; i < requests.size(); ++i) {
    v1::EmbedRequest r;
    r.set_id("id-" + std::to_string(i));
    r.set_normalize(false);
    for (const auto& t : requests[i]) r.add_texts(t);
    ASSERT_TRUE(stream->Write(r));
  }
  stream->WritesDone();
  std::map<std::string, v1::EmbedResponse> got;
  v1::EmbedResponse response;
  while (stream->Read(&response)) got[response.id()] = response;
  const grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got["id-1"].error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(got["id-1"].error().message(), HasSubstr("texts"));
  for (size_t i : {0, 2, 3}) {
    const auto& r = got["id-" + std::to_string(i)];
    EXPECT_EQ(r.error().code(), 0) << r.error().message();
    ASSERT_EQ(r.embeddings_size(), static_cast<int>(requests[i].size()));
    for (size_t j = 0; j < requests[i].size(); ++j) {
      EXPECT_EQ(Values(r.embeddings(static_cast<int>(j))), Expected(requests[i][j]));
    }
    EXPECT_GT(r.usage().prompt_tokens(), 0);
  }
}

TEST_P(ServiceTest, EmbedStreamManyConcurrentMessages) {
  ServerConfig config = TestConfig();
  config.batching.max_queue_sequences = 1024;
  config.server.max_stream_backlog = 4;  // reading pauses and resumes many times
  Start(config);
  grpc::ClientContext ctx;
  auto stream = stub_->EmbedStream(&ctx);
  constexpr int kMessages = 200;
  std::thread writer([&] {
    for (int i = 0; i < kMessages; ++i) {
      v1::EmbedRequest r;
      r.set_id(std::to_string(i));
      r.add_texts("message number " + std::to_string(i));
      r.set_normalize(false);
      stream->Write(r);
    }
    stream->WritesDone();
  });
  std::set<std::string> seen;
  v1::EmbedResponse response;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.error().code(), 0) << response.error().message();
    EXPECT_EQ(response.embeddings_size(), 1);
    if (response.embeddings_size() == 1) {
      EXPECT_EQ(Values(response.embeddings(0)), Expected("message number " + response.id()));
    }
    seen.insert(response.id());
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(seen.size(), static_cast<size_t>(kMessages));
}

TEST_P(ServiceTest, EmbedStreamStopsReadingWhenItsBacklogIsFull) {
  ServerConfig config = TestConfig();
  config.server.max_stream_backlog = 2;
  Start(config);
  backend_->CloseGate();
  grpc::ClientContext ctx;
  auto stream = stub_->EmbedStream(&ctx);
  for (int i = 0; i < 3; ++i) {
    v1::EmbedRequest r;
    r.set_id(std::to_string(i));
    r.add_texts("message " + std::to_string(i));
    ASSERT_TRUE(stream->Write(r));
  }
  backend_->WaitForWaitingCalls(1);
  auto tokenized = [&] { return server_->metrics().tokenized_requests(); };
  // The stream stops reading once two messages are in work: no read is outstanding,
  // so the third waits in the transport.
  EXPECT_TRUE(WaitUntil([&] { return server_->metrics().stream_read_pauses() == 1; }));
  EXPECT_EQ(tokenized(), 2u);
  backend_->OpenGate();
  stream->WritesDone();
  std::set<std::string> ids;
  v1::EmbedResponse response;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.error().code(), 0) << response.error().message();
    ids.insert(response.id());
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ids, (std::set<std::string>{"0", "1", "2"}));
}

// A cancelled stream's queued messages leave the queue as a cancelled unary call's do:
// they never reach the backend.
TEST_P(ServiceTest, CancelledEmbedStreamDropsItsQueuedWork) {
  ServerConfig config = TestConfig();
  config.batching.max_batch_size = 8;
  Start(config);
  auto embedded = [&] {
    int sequences = 0;
    for (int32_t n : backend_->batch_sizes()) sequences += n;
    return sequences;
  };
  const int warmup = embedded();
  backend_->CloseGate();
  grpc::ClientContext ctx;
  auto stream = stub_->EmbedStream(&ctx);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(stream->Write(StreamMessage(i, 8)));
  backend_->WaitForWaitingCalls(1);                     // 8 texts at the gate
  ASSERT_TRUE(WaitUntil([&] { return Tokenized() == 3; }));  // 16 queued
  ctx.TryCancel();
  // A call after the cancel on the same connection: the server has read the cancel.
  {
    grpc::ClientContext info_ctx;
    v1::ModelInfo info;
    ASSERT_TRUE(stub_->GetModelInfo(&info_ctx, v1::GetModelInfoRequest(), &info).ok());
  }
  backend_->OpenGate();
  v1::EmbedResponse after;
  ASSERT_TRUE(Embed({"after"}, &after).ok());  // answered once the worker is past the stream
  EXPECT_EQ(embedded() - warmup, 8 + 1) << ::testing::PrintToString(backend_->batch_sizes());
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// A stream that writes faster than the model runs is slowed (the server stops reading
// it), not answered RESOURCE_EXHAUSTED: 40 messages of 8 texts against a queue of 64.
TEST_P(ServiceTest, FastEmbedStreamIsSlowedNotRejected) {
  Start();  // max_texts_per_request 8, max_queue_sequences 64
  backend_->CloseGate();
  grpc::ClientContext ctx;
  auto stream = stub_->EmbedStream(&ctx);
  constexpr int kMessages = 40;
  std::thread writer([&] {
    for (int i = 0; i < kMessages; ++i) stream->Write(StreamMessage(i, 8));
    stream->WritesDone();
  });
  backend_->WaitForWaitingCalls(1);
  // Half the queue (32 texts) in work: the stream's share; it reads no further.
  ASSERT_TRUE(WaitUntil([&] { return Tokenized() >= 4; }));
  ASSERT_TRUE(WaitUntil([&] { return server_->metrics().stream_read_pauses() >= 1; }));
  writer.join();
  backend_->OpenGate();
  int ok = 0;
  std::map<int, int> errors;
  v1::EmbedResponse response;
  while (stream->Read(&response)) {
    if (response.error().code() != 0) {
      ++errors[response.error().code()];
      continue;
    }
    ++ok;
    ASSERT_EQ(response.embeddings_size(), 8);
    EXPECT_EQ(Values(response.embeddings(7)), Expected("m" + response.id() + " t7"));
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ok, kMessages);
  EXPECT_TRUE(errors.empty()) << "RESOURCE_EXHAUSTED replies: "
                              << errors[static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)];
}

// A client that writes and never reads its replies: the server stops reading the stream
// once max_stream_backlog_bytes of replies wait to be written, so it holds a bounded
// amount of memory (here ~64 KB replies; 200 of them would be 13 MB).
TEST_P(ServiceTest, EmbedStreamWhoseClientNeverReadsIsBoundedByBytes) {
  ServerConfig config = TestConfig();
  config.server.max_stream_backlog_bytes = 64 << 10;
  constexpr int64_t kBigDim = 2048;  // 8 texts: a ~64 KB reply
  Start(config, {}, kBigDim);
  // A client that grants the server little window (and does not grow it), so what the
  // server holds is not hidden in the client's transport buffers.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto stub = v1::EmbeddingService::NewStub(grpc::CreateCustomChannel(
      server_->address(), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  auto stream = stub->EmbedStream(&ctx);
  constexpr int kMessages = 200;  // ~20 KB of requests: within the transport's window
  for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(stream->Write(StreamMessage(i, 8)));
  // Wait until the server has stopped taking messages: no new one for 300 ms.
  int64_t last = -1;
  auto last_change = std::chrono::steady_clock::now();
  WaitUntil([&] {
    const int64_t now = Tokenized();
    if (now != last) {
      last = now;
      last_change = std::chrono::steady_clock::now();
    }
    return now == kMessages ||
           std::chrono::steady_clock::now() - last_change > std::chrono::milliseconds(300);
  });
  EXPECT_GE(last, 1);
  std::printf("messages taken in: %lld of %d\n", static_cast<long long>(last), kMessages);
  // One reply being written, one waiting, and what the transport's windows hold.
  EXPECT_LE(last, 16) << "the server kept reading a stream whose replies nobody reads";
  ctx.TryCancel();
  stream->Finish();
}

TEST_P(ServiceTest, HealthIsServingAndMetricsAreExported) {
  Start();
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const char* service : {"", "embedserve.v1.EmbeddingService"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  v1::EmbedResponse response;
  ASSERT_TRUE(Embed({"count me"}, &response).ok());
  EXPECT_EQ(Embed({}, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const std::string page = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_THAT(page, HasSubstr("HTTP/1.0 200 OK"));
  EXPECT_THAT(page, HasSubstr("embedserve_requests_total{code=\"OK\",method=\"Embed\"} 1\n"));
  EXPECT_THAT(page,
              HasSubstr("embedserve_requests_total{code=\"INVALID_ARGUMENT\",method=\"Embed\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("embedserve_batch_size_sequences_bucket{le=\"1\"}"));
  EXPECT_THAT(page, HasSubstr("embedserve_queue_depth "));
  // One Embed was tokenized (the empty one failed before; the warm-up is not an RPC).
  EXPECT_THAT(page, HasSubstr("embedserve_tokenize_duration_seconds_count 1\n"));
  EXPECT_THAT(testing::HttpGet(server_->metrics_port(), "/nope"), HasSubstr("404"));
}

TEST_P(ServiceTest, NotServingWhileLoadingAndAfterShutdown) {
  ServerConfig config = TestConfig();
  config.server.port = testing::PickFreePort();
  absl::Notification release, loading;
  std::unique_ptr<EmbedServer> server;
  std::thread starter([&] {
    auto s = EmbedServer::Start(config, [&]() -> absl::StatusOr<ServingModel> {
      loading.Notify();
      release.WaitForNotification();
      FakeBackend::Options o;
      o.dimension = kDim;
      return ServingModel(LoadTokenizer(), std::make_unique<FakeBackend>(o));
    });
    ASSERT_TRUE(s.ok()) << s.status();
    server = *std::move(s);
  });
  loading.WaitForNotification();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(config.server.port),
                                     grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto stub = v1::EmbeddingService::NewStub(channel);
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
    grpc::ClientContext ctx2;
    v1::EmbedRequest req;
    req.add_texts("x");
    v1::EmbedResponse r;
    const grpc::Status s = stub->Embed(&ctx2, req, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(s.error_message(), HasSubstr("not serving"));
  }
  release.Notify();
  starter.join();
  ASSERT_NE(server, nullptr);
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  server->Shutdown(1'000'000);
  grpc::ClientContext ctx;
  v1::EmbedRequest req;
  req.add_texts("x");
  v1::EmbedResponse r;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  EXPECT_EQ(stub->Embed(&ctx, req, &r).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// server.shutdown_delay_ms: during the delay health says NOT_SERVING while calls are
// still answered (what a load balancer or Kubernetes probe needs to drain a replica).
TEST_P(ServiceTest, ShutdownDelayReportsNotServingWhileStillServing) {
  ServerConfig config = TestConfig();
  config.server.shutdown_delay_ms = 1500;
  Start(config);
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto check = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckResponse resp;
    const grpc::Status s = health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
    return s.ok() ? resp.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  };
  ASSERT_EQ(check(), grpc::health::v1::HealthCheckResponse::SERVING);
  const auto begin = std::chrono::steady_clock::now();
  std::thread stopper([&] { server_->Shutdown(1'000'000); });
  // Wait (bounded) until health turns NOT_SERVING, then make a call in the delay window.
  grpc::health::v1::HealthCheckResponse::ServingStatus status = check();
  while (status == grpc::health::v1::HealthCheckResponse::SERVING &&
         std::chrono::steady_clock::now() - begin < std::chrono::seconds(1)) {
    status = check();
  }
  EXPECT_EQ(status, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  v1::EmbedResponse response;
  const grpc::Status s = Embed({"still served"}, &response);
  const auto elapsed = std::chrono::steady_clock::now() - begin;
  if (elapsed < std::chrono::milliseconds(1400)) {  // still inside the delay
    EXPECT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(response.embeddings_size(), 1);
    EXPECT_EQ(Values(response.embeddings(0)), Expected("still served"));
  }
  stopper.join();
  EXPECT_GE(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(1500));
  server_.reset();
}

TEST_P(ServiceTest, ShutdownAnswersEveryAcceptedCall) {
  Start();
  backend_->CloseGate();
  constexpr int kCalls = 5;
  std::vector<grpc::Status> status(kCalls);
  std::vector<v1::EmbedResponse> responses(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] { status[i] = Embed({"call " + std::to_string(i)}, &responses[i]); });
  }
  backend_->WaitForWaitingCalls(1);  // one held in the model, the others queued
  // Every call accepted: each was tokenized (counted just before it is queued).
  EXPECT_TRUE(WaitUntil([&] { return server_->metrics().tokenized_requests() == kCalls; }));
  std::thread stopper([&] { server_->Shutdown(5'000'000); });
  // The drain has begun: a new Embed is refused (UNAVAILABLE) while the accepted calls
  // wait behind the closed gate. (A probe that came in before that expires in 100 ms.)
  EXPECT_TRUE(WaitUntil([&] {
    v1::EmbedResponse probe;
    return Embed({"probe"}, &probe, std::nullopt, std::nullopt, /*deadline_ms=*/100)
               .error_code() == grpc::StatusCode::UNAVAILABLE;
  }));
  backend_->OpenGate();
  stopper.join();
  for (auto& t : threads) t.join();
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(status[i].ok()) << i << ": " << status[i].error_message();
    EXPECT_EQ(Values(responses[i].embeddings(0)), Expected("call " + std::to_string(i)));
  }
}

TEST(EmbedServerTest, InvalidConfigAndModelFailuresAreErrors) {
  ServerConfig config = TestConfig();
  config.batching.max_batch_size = 0;
  auto s = StartServer(config, ServingModel());
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("batching.max_batch_size"));

  config = TestConfig();
  s = EmbedServer::Start(config, []() -> absl::StatusOr<ServingModel> {
    return absl::NotFoundError("no such folder");
  });
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("no such folder"));

  config = TestConfig();
  config.batching.max_batch_tokens = 8;  // < max_seq_length 16
  FakeBackend::Options o;
  s = StartServer(config, ServingModel(LoadTokenizer(), std::make_unique<FakeBackend>(o)));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("batching.max_batch_tokens"));
}

}  // namespace
}  // namespace embedserve

namespace embedserve {
namespace {
TEST_P(ServiceTest, InvalidUtf8IsInvalidArgumentNamingTheText) {
  Start();
  v1::EmbedResponse response;
  const grpc::Status status = Embed({"fine", std::string("bad \xff\xfe here")}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("texts[1]"));
  EXPECT_THAT(status.error_message(), HasSubstr("invalid UTF-8"));

  v1::SimilarityRequest sim;
  sim.add_pairs()->set_text_a("ok");
  sim.mutable_pairs(0)->set_text_b("ok too");
  sim.add_pairs()->set_text_a("fine");
  sim.mutable_pairs(1)->set_text_b("\xc3\x28 broken");
  grpc::ClientContext ctx;
  v1::SimilarityResponse sim_response;
  const grpc::Status sim_status = stub_->Similarity(&ctx, sim, &sim_response);
  EXPECT_EQ(sim_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(sim_status.error_message(), HasSubstr("pairs[1].text_b"));

  v1::TokenizeRequest tok;
  tok.add_texts("\x80");
  grpc::ClientContext ctx2;
  v1::TokenizeResponse tok_response;
  const grpc::Status tok_status = stub_->Tokenize(&ctx2, tok, &tok_response);
  EXPECT_EQ(tok_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(tok_status.error_message(), HasSubstr("texts[0]"));

  // On a stream: an error response for that message only; the stream goes on.
  grpc::ClientContext ctx3;
  auto stream = stub_->EmbedStream(&ctx3);
  v1::EmbedRequest bad, good;
  bad.set_id("bad");
  bad.add_texts("\xff");
  good.set_id("good");
  good.add_texts("hello");
  ASSERT_TRUE(stream->Write(bad));
  ASSERT_TRUE(stream->Write(good));
  stream->WritesDone();
  std::map<std::string, v1::EmbedResponse> got;
  v1::EmbedResponse r;
  while (stream->Read(&r)) got[r.id()] = r;
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(got["bad"].error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(got["bad"].error().message(), HasSubstr("texts[0]"));
  EXPECT_EQ(got["good"].error().code(), 0);
  EXPECT_EQ(got["good"].embeddings_size(), 1);
}

TEST_P(ServiceTest, ShutdownEndsIdleStreamsWithoutWaitingForTheGrace) {
  Start();
  grpc::ClientContext ctx;
  auto stream = stub_->EmbedStream(&ctx);
  v1::EmbedRequest req;
  req.set_id("1");
  req.add_texts("x");
  ASSERT_TRUE(stream->Write(req));
  v1::EmbedResponse r;
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.error().code(), 0);
  // The client keeps the stream open; Shutdown with a long grace must not wait for it.
  const auto t0 = std::chrono::steady_clock::now();
  server_->Shutdown(20'000'000);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_FALSE(stream->Read(&r));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("shutting down"));
}
// EmbedServer takes a Clock: the stage timings of a reply are on its time line, so a
// FakeClock that only the backend moves (500 us a call) gives exact figures.
TEST(ServerClockTest, RepliesTimeStagesOnTheServersClock) {
  testing::FakeClock clock;
  FakeBackend::Options o;
  o.dimension = kDim;
  o.clock = &clock;
  o.call_us = 500;
  ServerConfig config = TestConfig();
  config.server.warmup = false;
  auto server = StartServer(config, ServingModel(LoadTokenizer(), std::make_unique<FakeBackend>(o)),
                            &clock);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::EmbeddingService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::EmbedRequest req;
  req.add_texts("hello world");
  v1::EmbedResponse r;
  ASSERT_TRUE(stub->Embed(&ctx, req, &r).ok());
  EXPECT_EQ(r.timings().tokenize_us(), 0);
  EXPECT_EQ(r.timings().inference_us(), 500);
  EXPECT_EQ(r.timings().total_us(), 500);
  (*server)->Shutdown(0);
}

// Every test on both ways of taking Embed and Similarity: gRPC's callback API, and two
// completion queues with a thread each (server.grpc_queues).
INSTANTIATE_TEST_SUITE_P(Apis, ServiceTest, ::testing::Values(0, 2),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == 0 ? std::string("Callback")
                                                  : std::string("Queues");
                         });

}  // namespace
}  // namespace embedserve
