#include "synthetic_model.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/model/safetensors.h"
#include "nlohmann/json.hpp"

// The vocabulary built into the tool (embedded_vocab.cc, from assets/vocab/vocab.txt).
extern "C" const char embedserve_embedded_vocab_begin[];
extern "C" const char embedserve_embedded_vocab_end[];

namespace embedserve {
namespace {

namespace fs = std::filesystem;

struct Preset {
  const char* name;
  int64_t hidden, layers, heads, intermediate;
};
constexpr Preset kPresets[] = {
    {"minilm-l6", 384, 6, 12, 1536},
    {"minilm-l12", 384, 12, 12, 1536},
    {"bert-base", 768, 12, 12, 3072},
    {"tiny", 32, 2, 4, 64},
};
constexpr int64_t kVocabSize = 30522;
constexpr int64_t kMaxPositions = 512;
constexpr int64_t kTypeVocab = 2;
constexpr double kInitStd = 0.02;

const Preset* FindPreset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

// xoshiro256** seeded through splitmix64: integer-only, identical everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : state_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      s = z ^ (z >> 31);
    }
  }
  uint64_t Next() {
    const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }
  // Uniform in [-1, 1), exact (53-bit integer times a power of two).
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-52 - 1.0; }
  // Standard normal by Marsaglia's polar method; sqrt is correctly rounded by IEEE-754
  // and DeterministicLog uses only basic operations, so every bit is reproducible.
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = Uniform();
      v = Uniform();
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * internal_make_model::DeterministicLog(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

void AppendFloatLe(std::string* out, float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

SafetensorsWriteTensor Normal(Rng& rng, std::string name, std::vector<int64_t> shape) {
  SafetensorsWriteTensor t{std::move(name), SafetensorsDtype::kF32, std::move(shape), {}};
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.bytes.reserve(static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) {
    AppendFloatLe(&t.bytes, static_cast<float>(rng.Normal() * kInitStd));
  }
  return t;
}

SafetensorsWriteTensor Constant(std::string name, int64_t size, float value) {
  SafetensorsWriteTensor t{std::move(name), SafetensorsDtype::kF32, {size}, {}};
  for (int64_t i = 0; i < size; ++i) AppendFloatLe(&t.bytes, value);
  return t;
}

absl::Status WriteFile(const fs::path& path, absl::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

std::string Json(const nlohmann::json& j) { return j.dump(2) + "\n"; }

}  // namespace

uint64_t SyntheticRandom(uint64_t* state) {
  *state = *state * 6364136223846793005ull + 1442695040888963407ull;
  return *state >> 33;
}

std::vector<int32_t> SyntheticSequence(int64_t length, uint64_t* state) {
  std::vector<int32_t> ids = {101};
  for (int64_t i = 0; i < length - 2; ++i) {
    ids.push_back(static_cast<int32_t>(1000 + SyntheticRandom(state) % 29000));
  }
  ids.push_back(102);
  return ids;
}

namespace internal_make_model {

double DeterministicLog(double x) {
  int e = 0;
  double m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1): exact
  if (m < 0.70710678118654752) {
    m *= 2.0;
    e -= 1;
  }
  // ln(m) = 2 atanh(y), y = (m - 1) / (m + 1), |y| <= 0.172: 16 terms reach 1e-17.
  const double y = (m - 1.0) / (m + 1.0);
  const double y2 = y * y;
  double term = y, sum = 0.0;
  for (int k = 0; k < 16; ++k) {
    sum += term / static_cast<double>(2 * k + 1);
    term *= y2;
  }
  return 2.0 * sum + static_cast<double>(e) * 0.69314718055994531;
}

}  // namespace internal_make_model

absl::Status SyntheticModelOptions::Validate() const {
  if (FindPreset(preset) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("preset must be one of ",
                                                   absl::StrJoin(SyntheticModelPresets(), ", "),
                                                   "; was '", preset, "'"));
  }
  return absl::OkStatus();
}

std::vector<std::string> SyntheticModelPresets() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.push_back(p.name);
  return names;
}

absl::StatusOr<std::string> SyntheticSafetensors(const SyntheticModelOptions& options) {
  ES_RETURN_IF_ERROR(options.Validate());
  const Preset& p = *FindPreset(options.preset);
  const int64_t h = p.hidden;
  Rng rng(options.seed);
  // Tensor names and order as in all-MiniLM-L6-v2's model.safetensors (no "bert."
  // prefix, pooler included); the draws follow this fixed order.
  std::vector<SafetensorsWriteTensor> t;
  t.push_back(Normal(rng, "embeddings.word_embeddings.weight", {kVocabSize, h}));
  // As BertModel._init_weights: the padding row (pad_token_id 0) is zero.
  std::memset(&t.back().bytes[0], 0, static_cast<size_t>(h) * 4);
  t.push_back(Normal(rng, "embeddings.position_embeddings.weight", {kMaxPositions, h}));
  t.push_back(Normal(rng, "embeddings.token_type_embeddings.weight", {kTypeVocab, h}));
  t.push_back(Constant("embeddings.LayerNorm.weight", h, 1.0f));
  t.push_back(Constant("embeddings.LayerNorm.bias", h, 0.0f));
  for (int64_t l = 0; l < p.layers; ++l) {
    const std::string pre = absl::StrCat("encoder.layer.", l, ".");
    for (const char* qkv : {"query", "key", "value"}) {
      t.push_back(Normal(rng, pre + "attention.self." + qkv + ".weight", {h, h}));
      t.push_back(Constant(pre + "attention.self." + qkv + ".bias", h, 0.0f));
    }
    t.push_back(Normal(rng, pre + "attention.output.dense.weight", {h, h}));
    t.push_back(Constant(pre + "attention.output.dense.bias", h, 0.0f));
    t.push_back(Constant(pre + "attention.output.LayerNorm.weight", h, 1.0f));
    t.push_back(Constant(pre + "attention.output.LayerNorm.bias", h, 0.0f));
    t.push_back(Normal(rng, pre + "intermediate.dense.weight", {p.intermediate, h}));
    t.push_back(Constant(pre + "intermediate.dense.bias", p.intermediate, 0.0f));
    t.push_back(Normal(rng, pre + "output.dense.weight", {h, p.intermediate}));
    t.push_back(Constant(pre + "output.dense.bias", h, 0.0f));
    t.push_back(Constant(pre + "output.LayerNorm.weight", h, 1.0f));
    t.push_back(Constant(pre + "output.LayerNorm.bias", h, 0.0f));
  }
  t.push_back(Normal(rng, "pooler.dense.weight", {h, h}));
  t.push_back(Constant("pooler.dense.bias", h, 0.0f));
  return SerializeSafetensors(t, {{"format", "pt"}});
}

absl::Status WriteSyntheticModel(const SyntheticModelOptions& options,
                                 const std::string& out_dir) {
  ES_RETURN_IF_ERROR(options.Validate());
  const Preset& p = *FindPreset(options.preset);
  std::error_code ec;
  const fs::path dir(out_dir);
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec) && !options.overwrite) {
    return absl::FailedPreconditionError(
        absl::StrCat(out_dir, " exists and is not empty; pass --force to overwrite"));
  }
  fs::create_directories(dir / "1_Pooling", ec);
  fs::create_directories(dir / "2_Normalize", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));

  std::string vocab;
  if (options.vocab_path.empty()) {
    vocab.assign(embedserve_embedded_vocab_begin,
                 embedserve_embedded_vocab_end - embedserve_embedded_vocab_begin);
  } else {
    std::ifstream in(options.vocab_path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open vocab ", options.vocab_path));
    vocab.assign(std::istreambuf_iterator<char>(in), {});
  }
  int64_t vocab_lines = 0;
  for (char c : vocab) vocab_lines += c == '\n';
  if (vocab_lines != kVocabSize) {
    return absl::InvalidArgumentError(absl::StrCat("vocab must have ", kVocabSize,
                                                   " lines (the BERT uncased vocabulary); ",
                                                   options.vocab_path, " has ", vocab_lines));
  }

  const std::string name = absl::StrCat("embedserve-synthetic/", p.name);
  nlohmann::json config = {
      {"_name_or_path", name},
      {"architectures", {"BertModel"}},
      {"attention_probs_dropout_prob", 0.1},
      {"classifier_dropout", nullptr},
      {"gradient_checkpointing", false},
      {"hidden_act", "gelu"},
      {"hidden_dropout_prob", 0.1},
      {"hidden_size", p.hidden},
      {"initializer_range", kInitStd},
      {"intermediate_size", p.intermediate},
      {"layer_norm_eps", 1e-12},
      {"max_position_embeddings", kMaxPositions},
      {"model_type", "bert"},
      {"num_attention_heads", p.heads},
      {"num_hidden_layers", p.layers},
      {"pad_token_id", 0},
      {"position_embedding_type", "absolute"},
      {"torch_dtype", "float32"},
      {"transformers_version", "4.8.2"},
      {"type_vocab_size", kTypeVocab},
      {"use_cache", true},
      {"vocab_size", kVocabSize},
      // Marks the folder as synthetic: the server says so in its startup log.
      {"embedserve_synthetic", true},
      {"embedserve_seed", options.seed},
      {"embedserve_preset", p.name},
  };
  nlohmann::json tokenizer_config = {
      {"clean_up_tokenization_spaces", true}, {"cls_token", "[CLS]"},
      {"do_basic_tokenize", true},            {"do_lower_case", true},
      {"mask_token", "[MASK]"},               {"model_max_length", 512},
      {"never_split", nullptr},               {"pad_token", "[PAD]"},
      {"sep_token", "[SEP]"},                 {"strip_accents", nullptr},
      {"tokenize_chinese_chars", true},       {"tokenizer_class", "BertTokenizer"},
      {"unk_token", "[UNK]"},
  };
  nlohmann::json special_tokens = {{"unk_token", "[UNK]"}, {"sep_token", "[SEP]"},
                                   {"pad_token", "[PAD]"}, {"cls_token", "[CLS]"},
                                   {"mask_token", "[MASK]"}};
  nlohmann::json modules = nlohmann::json::array(
      {{{"idx", 0}, {"name", "0"}, {"path", ""},
        {"type", "sentence_transformers.models.Transformer"}},
       {{"idx", 1}, {"name", "1"}, {"path", "1_Pooling"},
        {"type", "sentence_transformers.models.Pooling"}},
       {{"idx", 2}, {"name", "2"}, {"path", "2_Normalize"},
        {"type", "sentence_transformers.models.Normalize"}}});
  nlohmann::json sbert = {{"max_seq_length", 256}, {"do_lower_case", false}};
  nlohmann::json pooling = {{"word_embedding_dimension", p.hidden},
                            {"pooling_mode_cls_token", false},
                            {"pooling_mode_mean_tokens", true},
                            {"pooling_mode_max_tokens", false},
                            {"pooling_mode_mean_sqrt_len_tokens", false}};
  nlohmann::json st_config = {
      {"__version__",
       {{"sentence_transformers", "2.0.0"}, {"transformers", "4.6.1"}, {"pytorch", "1.8.1"}}}};

  ES_ASSIGN_OR_RETURN(std::string weights, SyntheticSafetensors(options));
  ES_RETURN_IF_ERROR(WriteFile(dir / "model.safetensors", weights));
  ES_RETURN_IF_ERROR(WriteFile(dir / "config.json", Json(config)));
  ES_RETURN_IF_ERROR(WriteFile(dir / "vocab.txt", vocab));
  ES_RETURN_IF_ERROR(WriteFile(dir / "tokenizer_config.json", Json(tokenizer_config)));
  ES_RETURN_IF_ERROR(WriteFile(dir / "special_tokens_map.json", Json(special_tokens)));
  ES_RETURN_IF_ERROR(WriteFile(dir / "modules.json", Json(modules)));
  ES_RETURN_IF_ERROR(WriteFile(dir / "sentence_bert_config.json", Json(sbert)));
  ES_RETURN_IF_ERROR(WriteFile(dir / "config_sentence_transformers.json", Json(st_config)));
  ES_RETURN_IF_ERROR(WriteFile(dir / "1_Pooling" / "config.json", Json(pooling)));
  ES_RETURN_IF_ERROR(WriteFile(
      dir / "README.md",
      absl::StrCat("# ", name, " (synthetic)\n\nWritten by embedserve-make-model --preset ",
                   p.name, " --seed ", options.seed,
                   ".\nThe layout is all-MiniLM-L6-v2's, but the weights are random "
                   "(normal, std 0.02):\nvectors are correctly shaped but MEANINGLESS. For "
                   "real embeddings use a real folder, e.g.\n`huggingface-cli download "
                   "sentence-transformers/all-MiniLM-L6-v2 --local-dir DIR`.\n")));
  return absl::OkStatus();
}

}  // namespace embedserve
