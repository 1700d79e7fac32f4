// Torch-free parsing of model folders: ModelOptions validation, the safetensors header
// checks and the sentence-transformers JSON files (both pooling forms).
#include <string>

#include "embedserve/model/model_folder.h"
#include "embedserve/model/model_options.h"
#include "embedserve/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace {

using testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(ModelOptionsTest, ValidateNamesFieldRuleAndValue) {
  ModelOptions o;
  o.path = "/m";
  EXPECT_TRUE(o.Validate().ok());
  for (const char* d : {"cpu", "cuda", "cuda:0", "cuda:12", "mps", "auto"}) {
    o.device = d;
    EXPECT_TRUE(o.Validate().ok()) << d;
  }
  o.device = "cuda:x";
  EXPECT_EQ(Message(o.Validate()),
            "model.device must be one of cpu, cuda, cuda:N, mps, auto; was 'cuda:x'");
  o.device = "cpu";
  o.precision = "fp8";
  EXPECT_EQ(Message(o.Validate()), "model.precision must be one of fp32, fp16, bf16, int8; was 'fp8'");
  o.precision = "int8";
  EXPECT_EQ(Message(o.Validate()), "");
  o.precision = "bf16";
  o.num_threads = -1;
  EXPECT_THAT(Message(o.Validate()), HasSubstr("model.threads must be in [0, 4096]"));
  o.num_threads = 0;
  o.max_seq_length = 1;
  EXPECT_THAT(Message(o.Validate()), HasSubstr("model.max_seq_length must be 0"));
  o.max_seq_length = 8193;  // the config's model.max_seq_length limit
  EXPECT_THAT(Message(o.Validate()), HasSubstr("or in [2, 8192]; was 8193"));
  o.max_seq_length = 0;
  o.path = "";
  EXPECT_THAT(Message(o.Validate()), HasSubstr("model.path"));
}

TEST(ModelOptionsTest, UsableCpuCountIsPositive) { EXPECT_GE(UsableCpuCount(), 1); }

std::string WithLength(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

TEST(SafetensorsTest, RoundTripsAndRejectsBadHeaders) {
  std::vector<SafetensorsWriteTensor> tensors = {
      {"a", SafetensorsDtype::kF32, {2, 2}, std::string(16, '\1')},
      {"b", SafetensorsDtype::kBF16, {3}, std::string(6, '\2')},
      {"ids", SafetensorsDtype::kI64, {1, 4}, std::string(32, '\3')}};
  auto bytes = SerializeSafetensors(tensors, {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok());
  auto layout = ParseSafetensors(*bytes);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->tensors.size(), 3u);
  EXPECT_EQ(layout->metadata.at("format"), "pt");
  EXPECT_EQ(layout->tensors.at("b").dtype, SafetensorsDtype::kBF16);
  EXPECT_EQ(layout->tensors.at("b").begin, 16u);
  EXPECT_EQ(layout->data_offset % 8, 0u);

  struct Case {
    std::string file;
    std::string expected;
  } cases[] = {
      {"abc", "shorter than the 8-byte header length"},
      {std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "exceeds the limit"},
      {WithLength("{", ""), "invalid JSON"},
      {WithLength("[]", ""), "not a JSON object"},
      {WithLength(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"),
       "tensor 't': data_offsets [0, 8] point outside the data section of 4 bytes"},
      {WithLength(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", ""),
       "has begin > end"},
      {WithLength(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"),
       "hold 8 bytes but shape [3] of F32 needs 12"},
      {WithLength(R"({"t":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}})", "12345678"),
       "tensor 't': unknown dtype 'X9'"},
      {WithLength(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "12345678"),
       "shape entry -2 is not a non-negative integer"},
      {WithLength(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})",
                  "12345678"),
       "overflows"},
      {WithLength(R"({"t":{"dtype":"F32","shape":[2]}})", "12345678"), "data_offsets"},
      {WithLength(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}})", "12345678"),
       "data_offsets"},
      {WithLength(std::string(100, '[') + std::string(100, ']'), ""), "nested deeper"},
  };
  for (const Case& c : cases) {
    auto r = ParseSafetensors(c.file);
    ASSERT_FALSE(r.ok()) << c.expected;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(r.status()), HasSubstr(c.expected));
  }
}

TEST(SafetensorsTest, OpenMissingFileIsNotFound) {
  auto r = SafetensorsFile::Open("/nonexistent/model.safetensors");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

constexpr char kMiniConfig[] = R"({"model_type": "bert", "vocab_size": 100, "hidden_size": 8,
  "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
  "max_position_embeddings": 32, "hidden_act": "gelu", "embedserve_synthetic": true,
  "embedserve_seed": 7})";

TEST(ModelFolderTest, ParsesBertConfig) {
  auto c = ParseBertConfig(kMiniConfig);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 8);
  EXPECT_EQ(c->type_vocab_size, 2);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-12);
  EXPECT_TRUE(c->synthetic);
  EXPECT_EQ(c->synthetic_seed, 7u);
}

TEST(ModelFolderTest, BertConfigErrorsNameTheField) {
  struct Case {
    std::string from, to, expected;
  } cases[] = {
      {"\"bert\"", "\"t5\"", "config.json: model_type 't5' is not supported; supported: bert"},
      {"\"hidden_size\": 8", "\"hidden_size\": 9",
       "hidden_size must be divisible by num_attention_heads (2); was 9"},
      {"\"vocab_size\": 100", "\"vocab_size\": -3", "vocab_size must be in [1, 16777216]; was -3"},
      {"\"vocab_size\": 100", "\"vocab_size\": \"100\"", "vocab_size must be an integer"},
      {"\"vocab_size\": 100,", "", "vocab_size is missing"},
      {"\"gelu\"", "\"swish\"", "hidden_act must be one of gelu, gelu_new, gelu_pytorch_tanh, relu"},
  };
  for (const Case& c : cases) {
    std::string text = kMiniConfig;
    text.replace(text.find(c.from), c.from.size(), c.to);
    auto r = ParseBertConfig(text);
    ASSERT_FALSE(r.ok()) << c.expected;
    EXPECT_THAT(Message(r.status()), HasSubstr(c.expected));
  }
}

TEST(ModelFolderTest, PoolingConfigBothForms) {
  EXPECT_EQ(*ParsePoolingConfig(R"({"pooling_mode": "mean"})"), "mean");
  EXPECT_EQ(*ParsePoolingConfig(R"({"pooling_mode": "cls", "include_prompt": true})"), "cls");
  EXPECT_EQ(*ParsePoolingConfig(R"({"pooling_mode_max_tokens": true,
                                    "pooling_mode_mean_tokens": false})"),
            "max");
  EXPECT_EQ(*ParsePoolingConfig(R"({"word_embedding_dimension": 384,
      "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true,
      "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false})"),
            "mean");
  EXPECT_THAT(Message(ParsePoolingConfig(R"({"pooling_mode_mean_tokens": true,
                                             "pooling_mode_max_tokens": true})").status()),
              HasSubstr("several pooling modes"));
  EXPECT_THAT(Message(ParsePoolingConfig(R"({"pooling_mode_lasttoken": true})").status()),
              HasSubstr("pooling_mode_lasttoken is true, which is not supported"));
  EXPECT_THAT(Message(ParsePoolingConfig("{}").status()), HasSubstr("no pooling mode set"));
  EXPECT_THAT(Message(ParsePoolingConfig(R"({"pooling_mode": 3})").status()),
              HasSubstr("must be a string"));
}

TEST(ModelFolderTest, ModulesAndSentenceBertConfig) {
  auto m = ParseModulesConfig(R"([
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->pooling_path, "1_Pooling");
  EXPECT_TRUE(m->normalize);
  auto dense = ParseModulesConfig(R"([{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])");
  EXPECT_THAT(Message(dense.status()), HasSubstr("sentence_transformers.models.Dense not supported"));
  auto escape = ParseModulesConfig(R"([{"path": "../x", "type": "Pooling"}])");
  EXPECT_THAT(Message(escape.status()), HasSubstr("must stay inside the folder"));

  auto s = ParseSentenceBertConfig(R"({"max_seq_length": 256, "do_lower_case": false})");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s->max_seq_length, 256);
  EXPECT_FALSE(*s->do_lower_case);
  auto none = ParseSentenceBertConfig(R"({"transformer_task": "feature-extraction"})");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->max_seq_length.has_value());
  EXPECT_THAT(Message(ParseSentenceBertConfig(R"({"max_seq_length": 0})").status()),
              HasSubstr("max_seq_length must be in [2, 1048576]; was 0"));

  EXPECT_EQ(**ParseTokenizerMaxLength(R"({"model_max_length": 512})"), 512);
  EXPECT_FALSE(ParseTokenizerMaxLength(R"({"model_max_length": 1000000000000000019884624838656})")
                   ->has_value());
}

TEST(ModelFolderTest, ReadsTheFixtureFolder) {
  auto f = ReadModelFolder(std::string(EMBEDSERVE_TEST_DATA_DIR) + "/tiny-bert");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->sentence_transformers);
  EXPECT_EQ(f->pooling, "mean");
  EXPECT_TRUE(f->normalize);
  // sentence_bert_config.json has no max_seq_length: tokenizer_config.json's 256.
  EXPECT_EQ(f->max_seq_length, 256);
  EXPECT_EQ(f->max_seq_length_source, "tokenizer_config.json model_max_length");
  EXPECT_EQ(f->config.num_hidden_layers, 2);
  EXPECT_EQ(ReadModelFolder("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace embedserve
