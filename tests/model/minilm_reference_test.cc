// The real sentence-transformers/all-MiniLM-L6-v2 (models/all-MiniLM-L6-v2, laid out and
// checked by scripts/setup.sh) against the reference fixtures of
// tests/data/all-MiniLM-L6-v2, which scripts/reference/make_fixtures.py wrote with Hugging
// Face tokenizers and sentence-transformers on CPU torch (meta.json has the versions):
// token ids, fp32 vectors, the other CPU precisions' directions, batch invariance, and a
// semantic ranking check on hand-written triplets. Pair scores are checked over gRPC
// Similarity (tests/server/minilm_server_test.cc).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "embedserve/model/embedding_matrix.h"
#include "embedserve/model/model_loader.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace {

const std::string kModelDir = std::string(EMBEDSERVE_MODELS_DIR) + "/all-MiniLM-L6-v2";
const std::string kRefDir = std::string(EMBEDSERVE_TEST_DATA_DIR) + "/all-MiniLM-L6-v2";
constexpr int64_t kDim = 384;

struct TextIds {
  std::string text;
  TokenIds ids;
};

std::vector<TextIds> ReadTextIds(const std::string& path) {
  std::vector<TextIds> out;
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    out.push_back({j["text"].get<std::string>(), j["ids"].get<TokenIds>()});
  }
  return out;
}

// reference.jsonl with its fp32 embeddings (one row of kDim per text).
struct Reference {
  std::vector<TextIds> texts;
  std::vector<float> embeddings;
  const float* Row(size_t i) const { return embeddings.data() + i * kDim; }
};

const Reference& LoadReference() {
  static const Reference* ref = [] {
    auto* r = new Reference();
    r->texts = ReadTextIds(kRefDir + "/reference.jsonl");
    std::ifstream in(kRefDir + "/reference_embeddings.f32", std::ios::binary);
    r->embeddings.resize(r->texts.size() * kDim);
    in.read(reinterpret_cast<char*>(r->embeddings.data()),
            static_cast<std::streamsize>(r->embeddings.size() * sizeof(float)));
    EXPECT_TRUE(in && in.peek() == std::char_traits<char>::eof())
        << "reference_embeddings.f32 must hold exactly " << r->texts.size() << " x " << kDim
        << " floats";
    return r;
  }();
  return *ref;
}

ModelOptions Options(const std::string& precision) {
  ModelOptions options;
  options.path = kModelDir;
  options.device = "cpu";
  options.precision = precision;
  return options;
}

LoadedModel MustLoad(const std::string& precision) {
  auto model = LoadModel(Options(precision));
  if (!model.ok()) {
    ADD_FAILURE() << model.status()
                  << "\n(models/all-MiniLM-L6-v2 is made by scripts/setup.sh, which "
                     "scripts/test.sh runs first)";
    std::abort();
  }
  return *std::move(model);
}

// Embeds `seqs` in batches of up to 32, shortest first as a server's batches would mix
// them, and returns L2-normalised rows in the order of `seqs`.
std::vector<float> EmbedNormalized(Backend& backend, const std::vector<TokenIds>& seqs) {
  std::vector<size_t> order(seqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return seqs[a].size() < seqs[b].size(); });
  std::vector<float> out(seqs.size() * kDim);
  for (size_t start = 0; start < order.size(); start += 32) {
    std::vector<const TokenIds*> batch;
    for (size_t i = start; i < std::min(order.size(), start + 32); ++i) {
      batch.push_back(&seqs[order[i]]);
    }
    auto m = backend.Embed(batch);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) std::abort();
    for (int64_t r = 0; r < m->rows; ++r) {
      float* dst = out.data() + order[start + r] * kDim;
      std::copy(m->Row(r), m->Row(r) + kDim, dst);
      L2NormalizeInPlace(dst, kDim);
    }
  }
  return out;
}

std::vector<TokenIds> ReferenceIds() {
  std::vector<TokenIds> ids;
  for (const TextIds& t : LoadReference().texts) ids.push_back(t.ids);
  return ids;
}

// Min and mean cosine of each row of `got` (EmbedNormalized of every reference text)
// with its fp32 reference vector.
std::pair<double, double> CosinesToReference(const std::vector<float>& got) {
  const Reference& ref = LoadReference();
  double worst = 1, sum = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const double c = Cosine(&got[i * kDim], ref.Row(i), kDim);
    worst = std::min(worst, c);
    sum += c;
  }
  return {worst, sum / static_cast<double>(ref.texts.size())};
}

TEST(MiniLmReferenceTest, FixturesHaveTheSizesTheIssueAsksFor) {
  const auto meta = nlohmann::json::parse(std::ifstream(kRefDir + "/meta.json"));
  EXPECT_EQ(meta["model_safetensors_sha256"],
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db");
  EXPECT_GE(LoadReference().texts.size(), 2000u);
  EXPECT_EQ(LoadReference().texts.size(), meta["texts"].get<size_t>());
  EXPECT_GE(ReadTextIds(kRefDir + "/tokenizer_ids.jsonl").size(), 3000u);
  size_t pairs = 0, long_texts = 0;
  std::ifstream in(kRefDir + "/pairs.jsonl");
  for (std::string line; std::getline(in, line);) ++pairs;
  EXPECT_GE(pairs, 500u);
  for (const TextIds& t : LoadReference().texts) long_texts += t.ids.size() == 256;
  EXPECT_GE(long_texts, 50u) << "texts truncated at 256 tokens";
}

TEST(MiniLmReferenceTest, FolderIsTheRealModel) {
  LoadedModel model = MustLoad("fp32");
  const BackendInfo& info = model.backend->Info();
  EXPECT_FALSE(info.synthetic);
  EXPECT_EQ(info.dimension, kDim);
  EXPECT_EQ(info.max_seq_length, 256);
  EXPECT_EQ(info.pooling, "mean");
  EXPECT_TRUE(info.normalize);
}

// The tokenizer read from the real folder's files gives Hugging Face tokenizers' ids on
// the 3,000 hard cases and the English sentences (untruncated), and sentence-transformers'
// model inputs (truncated to 256) on every reference text.
TEST(MiniLmReferenceTest, TokenIdsEqualHuggingFace) {
  auto tokenizer = Tokenizer::FromModelDir(kModelDir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const auto& [file, max_length] :
       {std::pair<std::string, int64_t>{"tokenizer_ids.jsonl", 0}, {"reference.jsonl", 256}}) {
    const std::vector<TextIds> cases = ReadTextIds(kRefDir + "/" + file);
    int wrong = 0;
    for (const TextIds& c : cases) {
      auto enc = (*tokenizer)->Encode(c.text, max_length);
      ASSERT_TRUE(enc.ok()) << enc.status();
      if (enc->ids != c.ids && ++wrong <= 5) {
        ADD_FAILURE() << file << ": ids differ for " << nlohmann::json(c.text).dump();
      }
    }
    EXPECT_EQ(wrong, 0) << file << ": " << wrong << " of " << cases.size() << " differ";
  }
}

TEST(MiniLmReferenceTest, Fp32MatchesSentenceTransformers) {
  LoadedModel model = MustLoad("fp32");
  const Reference& ref = LoadReference();
  const std::vector<float> got = EmbedNormalized(*model.backend, ReferenceIds());
  double worst = 0;
  size_t worst_text = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    for (int64_t k = 0; k < kDim; ++k) {
      const double d = std::abs(double(got[i * kDim + k]) - ref.Row(i)[k]);
      if (d > worst) {
        worst = d;
        worst_text = i;
      }
    }
  }
  std::printf("fp32 on cpu, %zu texts: worst component difference %.3g (text %zu)\n",
              ref.texts.size(), worst, worst_text);
  EXPECT_LE(worst, 1e-5) << nlohmann::json(ref.texts[worst_text].text).dump();
}

// Every other precision this CPU runs keeps the direction against the fp32 reference:
// bf16 min cosine >= 0.999; int8 min >= 0.99 and mean >= 0.995. A precision this CPU
// cannot run is reported, not failed.
TEST(MiniLmReferenceTest, OtherCpuPrecisionsKeepTheDirection) {
  const Reference& ref = LoadReference();
  int ran = 0;
  for (const std::string precision : {"bf16", "fp16", "int8"}) {
    auto backend = LoadBackend(Options(precision));
    if (!backend.ok()) {
      std::printf("%s on cpu: not run here (%s)\n", precision.c_str(),
                  std::string(backend.status().message()).c_str());
      continue;
    }
    ++ran;
    const std::vector<float> got = EmbedNormalized(**backend, ReferenceIds());
    const auto [worst, mean] = CosinesToReference(got);
    std::printf("%s on cpu, %zu texts: min cosine %.6f, mean %.6f\n", precision.c_str(),
                ref.texts.size(), worst, mean);
    EXPECT_GE(worst, precision == "int8" ? 0.99 : 0.999) << precision;
    if (precision == "int8") EXPECT_GE(mean, 0.995);
  }
  if (ran == 0) GTEST_SKIP() << "this CPU runs no precision but fp32";
}

// On a CUDA device (the GPU machine; skipped elsewhere): fp32 min cosine >= 0.99999,
// fp32 with TF32 matmuls (model.tf32) >= 0.9999, fp16 and bf16 >= 0.999 against the CPU
// fp32 reference. TF32 runs last: LibTorch holds that setting per process.
TEST(MiniLmReferenceTest, CudaPrecisionsMatchTheReference) {
  const auto devices = AvailableDevices();
  if (std::find(devices.begin(), devices.end(), "cuda:0") == devices.end()) {
    GTEST_SKIP() << "no CUDA device visible to this LibTorch";
  }
  const Reference& ref = LoadReference();
  struct Case {
    std::string precision;
    bool tf32;
    double min_cosine;
  };
  for (const Case& c : {Case{"fp32", false, 0.99999}, Case{"fp16", false, 0.999},
                        Case{"bf16", false, 0.999}, Case{"fp32", true, 0.9999}}) {
    ModelOptions options = Options(c.precision);
    options.device = "cuda:0";
    options.tf32 = c.tf32;
    auto backend = LoadBackend(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    if (c.tf32) EXPECT_NE((*backend)->Info().runtime.find("TF32"), std::string::npos);
    const std::vector<float> got = EmbedNormalized(**backend, ReferenceIds());
    const auto [worst, mean] = CosinesToReference(got);
    std::printf("%s%s on cuda:0, %zu texts: min cosine %.7f, mean %.7f\n", c.precision.c_str(),
                c.tf32 ? "+tf32" : "", ref.texts.size(), worst, mean);
    EXPECT_GE(worst, c.min_cosine) << c.precision << (c.tf32 ? " tf32" : "");
  }
}

// A batch of N texts (mixed lengths, up to 256 tokens) gives what N single calls give.
TEST(MiniLmReferenceTest, BatchEqualsSingleCalls) {
  LoadedModel model = MustLoad("fp32");
  const std::vector<TokenIds> all = ReferenceIds();
  std::vector<TokenIds> seqs;
  for (size_t i = 0; i < all.size() && seqs.size() < 48; i += all.size() / 48) {
    seqs.push_back(all[i]);
  }
  std::vector<const TokenIds*> ptrs;
  for (const TokenIds& t : seqs) ptrs.push_back(&t);
  auto batch = model.backend->Embed(ptrs);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->rows, static_cast<int64_t>(seqs.size()));
  double worst = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const TokenIds* one[] = {&seqs[i]};
    auto single = model.backend->Embed(one);
    ASSERT_TRUE(single.ok()) << single.status();
    for (int64_t k = 0; k < kDim; ++k) {
      worst = std::max(worst, double(std::abs(single->Row(0)[k] - batch->Row(i)[k])));
    }
  }
  std::printf("batch of %zu vs single calls: worst difference %.3g\n", seqs.size(), worst);
  EXPECT_LE(worst, 1e-5);
}

// Hand-written (anchor, paraphrase, unrelated) triplets: the paraphrase must be the closer.
TEST(MiniLmReferenceTest, ParaphrasesRankAboveUnrelatedTexts) {
  LoadedModel model = MustLoad("fp32");
  std::vector<std::vector<std::string>> triplets;
  std::ifstream in(kRefDir + "/triplets.tsv");
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields;
    for (size_t start = 0;;) {
      const size_t tab = line.find('\t', start);
      fields.push_back(line.substr(start, tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    ASSERT_EQ(fields.size(), 3u) << line;
    triplets.push_back(fields);
  }
  ASSERT_GE(triplets.size(), 50u);
  std::vector<TokenIds> seqs;
  for (const auto& t : triplets) {
    for (const std::string& text : t) seqs.push_back(model.tokenizer->Encode(text, 256)->ids);
  }
  const std::vector<float> v = EmbedNormalized(*model.backend, seqs);
  double margin_sum = 0, margin_min = 2;
  for (size_t i = 0; i < triplets.size(); ++i) {
    const float* a = &v[3 * i * kDim];
    const double margin = Cosine(a, a + kDim, kDim) - Cosine(a, a + 2 * kDim, kDim);
    EXPECT_GT(margin, 0) << triplets[i][0];
    margin_sum += margin;
    margin_min = std::min(margin_min, margin);
  }
  std::printf("%zu triplets: mean margin %.4f, min margin %.4f\n", triplets.size(),
              margin_sum / triplets.size(), margin_min);
}

}  // namespace
}  // namespace embedserve
