// EmbeddingPipeline without any transport: a real Batcher in front of FakeBackend (rows
// that say which sequence made them), the tiny-bert tokenizer and a FakeClock for
// deadlines. Waits on callbacks through a condition variable / a gate, never by sleeping.
#include "pipeline/embedding_pipeline.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "embedserve/batching/batcher.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "test_util/fake_backend.h"
#include "test_util/fake_clock.h"

namespace embedserve {
namespace {

using ::testing::HasSubstr;
using testing::FakeBackend;
using testing::FakeClock;

// One callback's result, waited for without sleeping. std::mutex, not absl's:
// ThreadSanitizer cannot see Debian's uninstrumented absl::Mutex.
template <typename Result>
struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Result result;
  std::function<void(Result)> Callback() {
    return [this](Result r) {
      std::lock_guard<std::mutex> lock(mu);
      result = std::move(r);
      done = true;
      cv.notify_all();
    };
  }
  const Result& Get() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return done; });
    return result;
  }
};

// Two one-text requests: one held at the backend's gate, one queued behind it.
struct HeldQueue {
  Waiter<EmbedResult> running, queued;
};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(Batcher::Options(), EmbeddingPipeline::Options()); }

  void Start(Batcher::Options bo, EmbeddingPipeline::Options po) {
    batcher_.reset();
    pipeline_.reset();
    auto tok = Tokenizer::FromModelDir(EMBEDSERVE_TEST_DATA_DIR "/tiny-bert");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = *std::move(tok);
    FakeBackend::Options fo;
    fo.dimension = 4;
    backend_ = std::make_unique<FakeBackend>(fo);
    auto batcher = Batcher::Create(bo, backend_.get(), nullptr, &clock_);
    ASSERT_TRUE(batcher.ok()) << batcher.status();
    batcher_ = *std::move(batcher);
    auto pipeline = EmbeddingPipeline::Create(po, nullptr, &clock_);
    ASSERT_TRUE(pipeline.ok()) << pipeline.status();
    pipeline_ = *std::move(pipeline);
    ASSERT_TRUE(pipeline_->AttachModel(tokenizer_.get(), backend_.get(), batcher_.get()).ok());
    pipeline_->SetServing(true);
  }

  void TearDown() override {
    if (batcher_ != nullptr) batcher_->Shutdown();
  }

  // Restarts with a queue of `max_queue_sequences` and the backend's gate closed, and
  // fills `held`.
  void HoldQueue(int32_t max_queue_sequences, HeldQueue* held) {
    Batcher::Options bo;
    bo.max_queue_sequences = max_queue_sequences;
    Start(bo, EmbeddingPipeline::Options());
    backend_->CloseGate();
    const std::vector<absl::string_view> one = {"one"};
    pipeline_->Embed(one, RequestOptions(), CallControl(), held->running.Callback());
    backend_->WaitForWaitingCalls(1);
    pipeline_->Embed(one, RequestOptions(), CallControl(), held->queued.Callback());
  }

  TokenIds Encode(absl::string_view text) {
    return tokenizer_->Encode(text, pipeline_->model()->max_seq_length)->ids;
  }

  FakeClock clock_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<EmbeddingPipeline> pipeline_;
};

TEST_F(PipelineTest, EmbedGivesOneRowPerTextInOrderWithUsage) {
  const std::vector<absl::string_view> texts = {"hello world", "a second text", ""};
  RequestOptions options;
  options.normalize = false;
  Waiter<EmbedResult> w;
  pipeline_->Embed(texts, options, CallControl(), w.Callback());
  const EmbedResult& r = w.Get();
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(r.embeddings.rows, 3);
  int64_t tokens = 0;
  for (int i = 0; i < 3; ++i) {
    const TokenIds ids = Encode(texts[i]);
    tokens += static_cast<int64_t>(ids.size());
    const std::vector<float> want = FakeBackend::Encode(ids, 4);
    EXPECT_EQ(std::vector<float>(r.embeddings.Row(i), r.embeddings.Row(i) + 4), want) << i;
  }
  EXPECT_EQ(r.prompt_tokens, tokens);
}

TEST_F(PipelineTest, NormalizeGivesUnitRows) {
  const std::vector<absl::string_view> texts = {"hello world"};
  RequestOptions options;
  options.normalize = true;
  Waiter<EmbedResult> w;
  pipeline_->Embed(texts, options, CallControl(), w.Callback());
  const EmbedResult& r = w.Get();
  ASSERT_TRUE(r.status.ok()) << r.status;
  double norm = 0;
  for (int d = 0; d < 4; ++d) norm += r.embeddings.Row(0)[d] * r.embeddings.Row(0)[d];
  EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-6);  // float rounding of 4 products
}

TEST_F(PipelineTest, RefusesWhileNotServingWithoutQueueing) {
  pipeline_->SetServing(false);
  const std::vector<absl::string_view> texts = {"x"};
  bool called = false;
  pipeline_->Embed(texts, RequestOptions(), CallControl(), [&](EmbedResult r) {
    called = true;
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  });
  EXPECT_TRUE(called);  // answered inside Embed
  EXPECT_EQ(backend_->num_calls(), 0);
}

TEST_F(PipelineTest, ChecksListSizeNamingTheList) {
  EmbeddingPipeline::Options po;
  po.max_texts_per_request = 2;
  Start(Batcher::Options(), po);
  RequestOptions options;
  options.list_name = "input";
  const std::vector<absl::string_view> three = {"a", "b", "c"};
  Waiter<EmbedResult> w;
  pipeline_->Embed(three, options, CallControl(), w.Callback());
  EXPECT_EQ(w.Get().status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.Get().status.message(), HasSubstr("input holds 3 entries"));
  Waiter<EmbedResult> e;
  pipeline_->Embed({}, options, CallControl(), e.Callback());
  EXPECT_THAT(e.Get().status.message(), HasSubstr("input must hold at least one entry"));
}

TEST_F(PipelineTest, InvalidUtf8AndTooLongTextsNameTheirIndex) {
  const std::string bad = "ok\xff";
  const std::vector<absl::string_view> texts = {"fine", bad};
  Waiter<EmbedResult> w;
  pipeline_->Embed(texts, RequestOptions(), CallControl(), w.Callback());
  EXPECT_EQ(w.Get().status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.Get().status.message(), HasSubstr("texts[1]: invalid UTF-8"));

  std::string long_text;
  for (int i = 0; i < 600; ++i) long_text += "word ";
  const std::vector<absl::string_view> longs = {long_text};
  RequestOptions strict;
  strict.truncate = false;
  Waiter<EmbedResult> t;
  pipeline_->Embed(longs, strict, CallControl(), t.Callback());
  EXPECT_THAT(t.Get().status.message(), HasSubstr("texts[0] has"));
  EXPECT_EQ(backend_->num_calls(), 0);

  Waiter<EmbedResult> cut;  // truncate (the default): cut to max_seq_length
  pipeline_->Embed(longs, RequestOptions(), CallControl(), cut.Callback());
  ASSERT_TRUE(cut.Get().status.ok());
  EXPECT_EQ(cut.Get().prompt_tokens, pipeline_->model()->max_seq_length);
}

TEST_F(PipelineTest, PassedDeadlineEndsBeforeQueueing) {
  CallControl control;
  control.deadline_us = clock_.NowMicros();  // already due
  const std::vector<absl::string_view> texts = {"hello"};
  Waiter<EmbedResult> w;
  pipeline_->Embed(texts, RequestOptions(), control, w.Callback());
  EXPECT_EQ(w.Get().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GT(w.Get().prompt_tokens, 0);  // tokenized, so counted
  EXPECT_EQ(backend_->num_calls(), 0);
}

TEST_F(PipelineTest, DeadlinePassingInTheQueueEndsTheRequest) {
  backend_->CloseGate();
  const std::vector<absl::string_view> first = {"first"};
  Waiter<EmbedResult> a;
  pipeline_->Embed(first, RequestOptions(), CallControl(), a.Callback());
  backend_->WaitForWaitingCalls(1);  // the only worker is busy
  CallControl control;
  control.deadline_us = clock_.NowMicros() + 1000;
  const std::vector<absl::string_view> second = {"second"};
  Waiter<EmbedResult> b;
  pipeline_->Embed(second, RequestOptions(), control, b.Callback());
  clock_.Advance(1000);
  backend_->OpenGate();
  EXPECT_TRUE(a.Get().status.ok());
  EXPECT_EQ(b.Get().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(backend_->num_calls(), 1);
}

TEST_F(PipelineTest, CancelledRequestIsDroppedBeforeItRuns) {
  backend_->CloseGate();
  const std::vector<absl::string_view> first = {"first"};
  Waiter<EmbedResult> a;
  pipeline_->Embed(first, RequestOptions(), CallControl(), a.Callback());
  backend_->WaitForWaitingCalls(1);
  std::atomic<bool> cancelled{false};
  CallControl control;
  control.is_cancelled = [&cancelled] { return cancelled.load(); };
  const std::vector<absl::string_view> second = {"second"};
  Waiter<EmbedResult> b;
  pipeline_->Embed(second, RequestOptions(), control, b.Callback());
  cancelled = true;  // the caller went away while it was queued
  backend_->OpenGate();
  EXPECT_TRUE(a.Get().status.ok());
  EXPECT_EQ(b.Get().status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(backend_->num_calls(), 1);
}

TEST_F(PipelineTest, FullQueueIsResourceExhaustedAndAnsweredOnce) {
  HeldQueue held;
  HoldQueue(1, &held);
  const std::vector<absl::string_view> one = {"one"};
  int calls = 0;
  absl::Status refused;
  pipeline_->Embed(one, RequestOptions(), CallControl(), [&](EmbedResult r) {
    ++calls;
    refused = r.status;
  });
  EXPECT_EQ(calls, 1);  // answered inside Embed, exactly once
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  backend_->OpenGate();
  EXPECT_TRUE(held.running.Get().status.ok());
  EXPECT_TRUE(held.queued.Get().status.ok());
}

// Under overload a refusal must cost little: a full queue refuses before the texts are
// tokenized (the invalid UTF-8 below would otherwise be found first).
TEST_F(PipelineTest, FullQueueRefusesBeforeTokenizing) {
  HeldQueue held;
  HoldQueue(2, &held);  // 1 of 2 queued
  const std::string bad = "ok \xff";
  const std::vector<absl::string_view> two = {"fine", bad};
  for (int i = 0; i < 2; ++i) {
    absl::Status refused;
    const auto keep = [&](EmbedResult r) { refused = r.status; };
    if (i == 0) {
      pipeline_->Embed(two, RequestOptions(), CallControl(), keep);
    } else {
      pipeline_->EmbedTokens({Encode("a"), Encode("b")}, RequestOptions(), CallControl(), keep);
    }
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << i << " " << refused;
    EXPECT_THAT(refused.message(), HasSubstr("batching.max_queue_sequences=2"));
  }
  // One more text still fits: it is checked (and refused for its bytes) as before.
  const std::vector<absl::string_view> bad_one = {bad};
  absl::Status invalid;
  pipeline_->Embed(bad_one, RequestOptions(), CallControl(),
                   [&](EmbedResult r) { invalid = r.status; });
  EXPECT_EQ(invalid.code(), absl::StatusCode::kInvalidArgument) << invalid;
  backend_->OpenGate();
  EXPECT_TRUE(held.running.Get().status.ok());
  EXPECT_TRUE(held.queued.Get().status.ok());
}

// A Similarity call is checked against the queue's room for its distinct texts before
// any is tokenized (the bad bytes would be INVALID_ARGUMENT if they were read); a pair of
// one text repeated needs one row and still fits.
TEST_F(PipelineTest, SimilarityFullQueueRefusesBeforeTokenizing) {
  HeldQueue held;
  HoldQueue(2, &held);  // 1 of 2 queued
  const std::string bad = "ok \xff";
  const std::vector<std::pair<absl::string_view, absl::string_view>> two = {{"fine", bad}};
  absl::Status refused;
  pipeline_->Similarity(two, RequestOptions(), CallControl(),
                        [&](SimilarityResult r) { refused = r.status; });
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("batching.max_queue_sequences=2"));
  const std::vector<std::pair<absl::string_view, absl::string_view>> same = {{bad, bad}};
  absl::Status invalid;
  pipeline_->Similarity(same, RequestOptions(), CallControl(),
                        [&](SimilarityResult r) { invalid = r.status; });
  EXPECT_EQ(invalid.code(), absl::StatusCode::kInvalidArgument) << invalid;
  EXPECT_THAT(invalid.message(), HasSubstr("pairs[0].text_a"));
  backend_->OpenGate();
  EXPECT_TRUE(held.running.Get().status.ok());
  EXPECT_TRUE(held.queued.Get().status.ok());
}

TEST_F(PipelineTest, SimilarityEmbedsEachDistinctTextOnce) {
  const std::vector<std::pair<absl::string_view, absl::string_view>> pairs = {
      {"a cat sat", "a dog ran"}, {"a cat sat", "a cat sat"}};
  Waiter<SimilarityResult> w;
  pipeline_->Similarity(pairs, RequestOptions(), CallControl(), w.Callback());
  const SimilarityResult& r = w.Get();
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(r.scores.size(), 2u);
  EXPECT_NEAR(r.scores[1], 1.0, 1e-6);  // a text with itself
  const std::vector<float> a = FakeBackend::Encode(Encode("a cat sat"), 4);
  const std::vector<float> b = FakeBackend::Encode(Encode("a dog ran"), 4);
  EXPECT_NEAR(r.scores[0], Cosine(a.data(), b.data(), 4), 1e-6);
  ASSERT_EQ(backend_->calls().size(), 1u);
  EXPECT_EQ(backend_->calls()[0].size(), 2u);  // two distinct texts
}

TEST_F(PipelineTest, SimilarityErrorsNameThePairSide) {
  const std::string bad = "\xc3";
  const std::vector<std::pair<absl::string_view, absl::string_view>> pairs = {{"ok", bad}};
  Waiter<SimilarityResult> w;
  pipeline_->Similarity(pairs, RequestOptions(), CallControl(), w.Callback());
  EXPECT_THAT(w.Get().status.message(), HasSubstr("pairs[0].text_b: invalid UTF-8"));
}

TEST_F(PipelineTest, EmbedTokensChecksVocabularyAndLength) {
  const int64_t vocab = tokenizer_->vocab_size();
  Waiter<EmbedResult> bad;
  pipeline_->EmbedTokens({{101, static_cast<int32_t>(vocab)}}, RequestOptions(), CallControl(),
                         bad.Callback());
  EXPECT_THAT(bad.Get().status.message(), HasSubstr("outside the vocabulary"));
  const TokenIds ids = Encode("hello world");
  RequestOptions raw;
  raw.normalize = false;
  Waiter<EmbedResult> ok;
  pipeline_->EmbedTokens({ids}, raw, CallControl(), ok.Callback());
  ASSERT_TRUE(ok.Get().status.ok()) << ok.Get().status;
  EXPECT_EQ(std::vector<float>(ok.Get().embeddings.Row(0), ok.Get().embeddings.Row(0) + 4),
            FakeBackend::Encode(ids, 4));
}

TEST_F(PipelineTest, TokenizeCountsUsageAndNeedsNoQueue) {
  const std::vector<absl::string_view> texts = {"hello world", "hi"};
  const TokenizeResult r = pipeline_->Tokenize(texts, RequestOptions(), CallControl());
  ASSERT_TRUE(r.status.ok());
  ASSERT_EQ(r.tokens.size(), 2u);
  EXPECT_EQ(r.tokens[0], Encode("hello world"));
  EXPECT_EQ(r.prompt_tokens,
            static_cast<int64_t>(r.tokens[0].size() + r.tokens[1].size()));
  EXPECT_EQ(backend_->num_calls(), 0);
}

TEST_F(PipelineTest, TimingsComeFromTheClock) {
  const std::vector<absl::string_view> texts = {"hello"};
  Waiter<EmbedResult> w;
  pipeline_->Embed(texts, RequestOptions(), CallControl(), w.Callback());
  const EmbedResult& r = w.Get();
  ASSERT_TRUE(r.status.ok());
  // The fake clock does not move: every stage took 0 us on it.
  EXPECT_EQ(r.timings.total_us, 0);
  EXPECT_EQ(r.timings.tokenize_us, 0);
}

}  // namespace
}  // namespace embedserve
