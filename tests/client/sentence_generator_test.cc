// Tests of the benchmark data: token lengths of generated sentences measured with the
// real tokenizer, determinism by seed, and the pair-file loader.
#include "embedserve/client/sentence_generator.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "embedserve/client/latency_stats.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace client {
namespace {

using ::testing::HasSubstr;

const std::string kModelDir = std::string(EMBEDSERVE_TEST_DATA_DIR) + "/tiny-bert";

std::unique_ptr<Tokenizer> LoadTokenizer() {
  auto tokenizer = Tokenizer::FromModelDir(kModelDir);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

std::unique_ptr<SentenceGenerator> MakeGenerator(uint64_t seed, int32_t fixed_tokens = 0) {
  SentenceGenerator::Options options;
  options.seed = seed;
  options.fixed_tokens = fixed_tokens;
  auto gen = SentenceGenerator::Create(options);
  EXPECT_TRUE(gen.ok()) << gen.status();
  return *std::move(gen);
}

std::string WriteTemp(const std::string& name, const std::string& contents) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

TEST(SentenceGeneratorTest, BuiltInWordsAreWholeVocabularyTokens) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  auto gen = MakeGenerator(1);
  ASSERT_GT(gen->words().size(), 500u);
  for (const std::string& word : gen->words()) {
    auto enc = tokenizer->Encode(word, 0);
    ASSERT_TRUE(enc.ok());
    EXPECT_EQ(enc->ids.size(), 3u) << "'" << word << "' is not one token";
  }
}

TEST(SentenceGeneratorTest, ReportedTokenCountMatchesTokenizer) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  for (int32_t fixed : {0, 7, 128, 256}) {
    auto gen = MakeGenerator(7, fixed);
    for (int i = 0; i < 300; ++i) {
      int32_t tokens = 0;
      std::string text = gen->NextSentence(&tokens);
      auto enc = tokenizer->Encode(text, 0);
      ASSERT_TRUE(enc.ok());
      ASSERT_EQ(static_cast<int32_t>(enc->ids.size()), tokens) << text;
      if (fixed != 0) ASSERT_EQ(tokens, fixed);
    }
  }
}

TEST(SentenceGeneratorTest, ShortSentencesHaveRealisticLengths) {
  // The issue asks for about 14 tokens mean and p95 about 24 ([CLS]/[SEP] included);
  // 20000 pairs (40000 texts) measured with the real tokenizer. Tolerance: +-1 token
  // on the mean and +-2 on the p95 (sampling noise is far below that at this size).
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  auto gen = MakeGenerator(42);
  std::vector<double> lengths;
  double sum = 0;
  for (int i = 0; i < 20000; ++i) {
    SentencePair pair = gen->NextPair();
    for (const std::string* text : {&pair.text_a, &pair.text_b}) {
      auto enc = tokenizer->Encode(*text, 0);
      ASSERT_TRUE(enc.ok());
      lengths.push_back(static_cast<double>(enc->ids.size()));
      sum += static_cast<double>(enc->ids.size());
    }
  }
  std::sort(lengths.begin(), lengths.end());
  double mean = sum / static_cast<double>(lengths.size());
  std::cout << "generated short sentences: " << lengths.size() << " texts, mean "
            << mean << " tokens, p50 " << Percentile(lengths, 50) << ", p95 "
            << Percentile(lengths, 95) << ", max " << lengths.back() << "\n";
  EXPECT_NEAR(mean, 14.0, 1.0);
  EXPECT_NEAR(Percentile(lengths, 95), 24.0, 2.0);
  EXPECT_GE(lengths.front(), SentenceGenerator::kMinTokens);
  EXPECT_LE(lengths.back(), SentenceGenerator::kMaxShortTokens);
}

TEST(SentenceGeneratorTest, SameSeedSameStreamOtherSeedOtherStream) {
  auto a = MakeGenerator(5);
  auto b = MakeGenerator(5);
  auto c = MakeGenerator(6);
  int differ = 0;
  for (int i = 0; i < 50; ++i) {
    SentencePair pa = a->NextPair();
    SentencePair pb = b->NextPair();
    SentencePair pc = c->NextPair();
    EXPECT_EQ(pa.text_a, pb.text_a);
    EXPECT_EQ(pa.text_b, pb.text_b);
    differ += pa.text_a != pc.text_a;
  }
  EXPECT_GT(differ, 45);
}

TEST(SentenceGeneratorTest, PairsMixParaphrasesAndIndependentSentences) {
  auto gen = MakeGenerator(3);
  int same_length_word_overlap = 0;
  for (int i = 0; i < 400; ++i) {
    SentencePair pair = gen->NextPair();
    EXPECT_NE(pair.text_a, "");
    EXPECT_NE(pair.text_b, "");
    // A paraphrase keeps the first letter case pattern and most words.
    std::vector<std::string> wa, wb;
    std::string w;
    for (char ch : pair.text_a + " ") { if (ch == ' ') { wa.push_back(w); w.clear(); } else w += ch; }
    for (char ch : pair.text_b + " ") { if (ch == ' ') { wb.push_back(w); w.clear(); } else w += ch; }
    if (wa.size() == wb.size() && wa.size() >= 4) {
      int same = 0;
      for (size_t k = 0; k < wa.size(); ++k) same += wa[k] == wb[k];
      if (same * 2 >= static_cast<int>(wa.size())) ++same_length_word_overlap;
    }
  }
  // About half the pairs are paraphrases (binomial, 400 draws: 200 +- 30 covers > 4 sd).
  EXPECT_GT(same_length_word_overlap, 140);
  EXPECT_LT(same_length_word_overlap, 260);
}

TEST(SentenceGeneratorTest, VocabularyAddsWholeWords) {
  SentenceGenerator::Options options;
  options.vocab_path = kModelDir + "/vocab.txt";
  auto gen = SentenceGenerator::Create(options);
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_GT((*gen)->words().size(), 10000u);
  for (const std::string& w : (*gen)->words()) {
    ASSERT_EQ(w.find("##"), std::string::npos);
    ASSERT_EQ(w.find('['), std::string::npos);
  }
}

TEST(SentenceGeneratorTest, RejectsBadOptions) {
  SentenceGenerator::Options options;
  options.fixed_tokens = 3;
  auto gen = SentenceGenerator::Create(options);
  ASSERT_FALSE(gen.ok());
  EXPECT_EQ(gen.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(gen.status().message(), HasSubstr("fixed_tokens"));
  EXPECT_THAT(gen.status().message(), HasSubstr("was 3"));
  options.fixed_tokens = 0;
  options.vocab_path = "/nonexistent/vocab.txt";
  gen = SentenceGenerator::Create(options);
  ASSERT_FALSE(gen.ok());
  EXPECT_EQ(gen.status().code(), absl::StatusCode::kNotFound);
}

TEST(LoadPairsFileTest, ReadsTsv) {
  std::string path = WriteTemp("pairs.tsv", "# comment\nA cat.\tA dog.\n\nOne\tTwo\r\n");
  auto pairs = LoadPairsFile(path);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 2u);
  EXPECT_EQ((*pairs)[0].text_a, "A cat.");
  EXPECT_EQ((*pairs)[0].text_b, "A dog.");
  EXPECT_EQ((*pairs)[1].text_a, "One");
  EXPECT_EQ((*pairs)[1].text_b, "Two");
}

TEST(LoadPairsFileTest, ReadsJsonLines) {
  std::string path = WriteTemp(
      "pairs.jsonl",
      "{\"text_a\": \"x\\ty\", \"text_b\": \"caf\\u00e9\"}\n{\"text_a\":\"a\",\"text_b\":\"b\"}\n");
  auto pairs = LoadPairsFile(path);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 2u);
  EXPECT_EQ((*pairs)[0].text_a, "x\ty");
  EXPECT_EQ((*pairs)[0].text_b, "caf\xc3\xa9");
}

TEST(LoadPairsFileTest, MalformedLinesNameTheLine) {
  auto tsv = LoadPairsFile(WriteTemp("bad.tsv", "a\tb\nonly one field\n"));
  ASSERT_FALSE(tsv.ok());
  EXPECT_EQ(tsv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tsv.status().message(), HasSubstr(":2:"));
  EXPECT_THAT(tsv.status().message(), HasSubstr("had 1"));

  auto json = LoadPairsFile(WriteTemp("bad.jsonl", "{\"text_a\":\"a\",\"text_b\":\"b\"}\n{\"text_a\":1}\n"));
  ASSERT_FALSE(json.ok());
  EXPECT_THAT(json.status().message(), HasSubstr(":2:"));
  EXPECT_THAT(json.status().message(), HasSubstr("text_b"));

  auto broken = LoadPairsFile(WriteTemp("broken.jsonl", "{\"text_a\": \n"));
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.status().message(), HasSubstr("not a JSON object"));

  auto empty = LoadPairsFile(WriteTemp("empty.tsv", "# nothing\n\n"));
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("no pairs"));

  auto missing = LoadPairsFile("/nonexistent/pairs.tsv");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace client
}  // namespace embedserve
