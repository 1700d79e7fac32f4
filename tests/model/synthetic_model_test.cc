// embedserve-make-model's library: deterministic weights (same seed -> same bytes, a
// golden hash that must hold on every machine), BERT-like statistics, and a folder that
// the model-folder reader accepts as all-MiniLM-L6-v2-shaped and synthetic.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include "embedserve/model/model_folder.h"
#include "embedserve/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "synthetic_model.h"

namespace embedserve {
namespace {

namespace fs = std::filesystem;

uint64_t Fnv1a64(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

TEST(SyntheticModelTest, DeterministicLogIsAccurate) {
  for (double x : {1e-300, 1e-10, 0.001, 0.3, 0.5, 0.70710678, 0.9999999, 1.0, 2.0, 12345.678}) {
    EXPECT_NEAR(internal_make_model::DeterministicLog(x), std::log(x),
                4e-16 * std::max(1.0, std::abs(std::log(x))))
        << x;
  }
}

TEST(SyntheticModelTest, SameSeedSameBytesOtherSeedOtherBytes) {
  SyntheticModelOptions options;
  options.preset = "tiny";
  options.seed = 7;
  auto a = SyntheticSafetensors(options);
  auto b = SyntheticSafetensors(options);
  options.seed = 8;
  auto c = SyntheticSafetensors(options);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

// The benchmarks' and tests' made-up inputs: [CLS], word pieces in [1000, 29000), [SEP],
// the same for the same state, the state advanced once per word piece.
TEST(SyntheticModelTest, SyntheticSequencesAreFramedInRangeAndRepeatable) {
  uint64_t a = 12345, b = 12345;
  const std::vector<int32_t> first = SyntheticSequence(16, &a);
  ASSERT_EQ(first.size(), 16u);
  EXPECT_EQ(first.front(), 101);
  EXPECT_EQ(first.back(), 102);
  for (size_t i = 1; i + 1 < first.size(); ++i) {
    EXPECT_GE(first[i], 1000);
    EXPECT_LT(first[i], 30000);
  }
  EXPECT_EQ(SyntheticSequence(16, &b), first);
  EXPECT_EQ(a, b);
  uint64_t c = 12345;
  for (int i = 0; i < 14; ++i) SyntheticRandom(&c);
  EXPECT_EQ(c, a);  // 14 draws for 14 word pieces
  EXPECT_NE(SyntheticSequence(16, &a), first);  // the next one differs
  EXPECT_EQ(SyntheticSequence(2, &b), (std::vector<int32_t>{101, 102}));
  EXPECT_EQ(SyntheticSequence(1, &b), (std::vector<int32_t>{101, 102}));
}

TEST(SyntheticModelTest, GoldenHashOfTinyPreset) {
  // The hash below was computed by this code. It holds on every machine because every
  // step is exactly specified: the PRNG is integer-only (splitmix64 + xoshiro256**),
  // uniforms are 53-bit integers times 2^-52 (exact), the polar method uses only IEEE-754
  // +, -, *, / and sqrt (all correctly rounded) and DeterministicLog (basic operations
  // and frexp only, no libm transcendental whose last bit varies between libm versions),
  // the file is compiled with -ffp-contract=off (no FMA contraction), floats are written
  // explicitly little-endian, and the JSON header's key order is nlohmann's sorted order.
  SyntheticModelOptions options;
  options.preset = "tiny";
  options.seed = 1;
  auto bytes = SyntheticSafetensors(options);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(Fnv1a64(*bytes), 0x892581c215b07569ull) << std::hex << Fnv1a64(*bytes);
}

TEST(SyntheticModelTest, WeightsLookLikeBertInitialisation) {
  SyntheticModelOptions options;
  options.preset = "tiny";
  auto bytes = SyntheticSafetensors(options);
  ASSERT_TRUE(bytes.ok());
  auto layout = ParseSafetensors(*bytes);
  ASSERT_TRUE(layout.ok()) << layout.status();
  const SafetensorsTensor& w = layout->tensors.at("encoder.layer.0.intermediate.dense.weight");
  EXPECT_EQ(w.shape, (std::vector<int64_t>{64, 32}));
  const char* data = bytes->data() + layout->data_offset + w.begin;
  double sum = 0, sq = 0;
  const int64_t n = w.NumElements();
  for (int64_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, data + 4 * i, 4);
    sum += f;
    sq += double(f) * f;
  }
  const double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.003);    // 2048 samples: 3 standard errors of 0.02/45
  EXPECT_NEAR(std, 0.02, 0.0015);
  const SafetensorsTensor& ln = layout->tensors.at("encoder.layer.1.output.LayerNorm.weight");
  float one;
  std::memcpy(&one, bytes->data() + layout->data_offset + ln.begin, 4);
  EXPECT_EQ(one, 1.0f);
  EXPECT_EQ(layout->tensors.size(), 5u + 2 * 16u + 2u);
}

TEST(SyntheticModelTest, WritesAMiniLmShapedSyntheticFolder) {
  const fs::path dir = fs::temp_directory_path() / ("embedserve_synth_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  SyntheticModelOptions options;
  options.preset = "tiny";
  options.seed = 5;
  ASSERT_TRUE(WriteSyntheticModel(options, dir.string()).ok());
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                        "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"}) {
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  }
  EXPECT_TRUE(fs::is_directory(dir / "2_Normalize"));
  auto folder = ReadModelFolder(dir.string());
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_TRUE(folder->config.synthetic);
  EXPECT_EQ(folder->config.synthetic_seed, 5u);
  EXPECT_EQ(folder->max_seq_length, 256);
  EXPECT_EQ(folder->pooling, "mean");
  EXPECT_TRUE(folder->normalize);
  EXPECT_EQ(fs::file_size(dir / "vocab.txt"), 231508u);  // the built-in BERT vocabulary
  // A second write refuses to overwrite unless asked.
  EXPECT_EQ(WriteSyntheticModel(options, dir.string()).code(),
            absl::StatusCode::kFailedPrecondition);
  options.overwrite = true;
  EXPECT_TRUE(WriteSyntheticModel(options, dir.string()).ok());
  options.preset = "huge";
  EXPECT_THAT(std::string(WriteSyntheticModel(options, dir.string()).message()),
              testing::HasSubstr("preset must be one of minilm-l6, minilm-l12, bert-base, tiny"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace embedserve
