// LoadModel's errors: every broken-folder case of issue 3 gives a precise status (file or
// tensor + problem), never a crash. Each case copies the tiny-bert fixture into a temp
// folder and breaks one thing.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "embedserve/model/model_loader.h"
#include "embedserve/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "synthetic_model.h"

namespace embedserve {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

const fs::path kTinyBert = fs::path(EMBEDSERVE_TEST_DATA_DIR) / "tiny-bert";

class ModelLoaderTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("embedserve_loader_" + std::to_string(::getpid()) + "_" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::copy(kTinyBert, dir_, fs::copy_options::recursive);
    for (auto& entry : fs::recursive_directory_iterator(dir_)) {
      fs::permissions(entry.path(), fs::perms::owner_write, fs::perm_options::add);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& relative, const std::string& content) {
    std::ofstream out(dir_ / relative, std::ios::binary | std::ios::trunc);
    out << content;
  }
  std::string Read(const std::string& relative) {
    std::ifstream in(dir_ / relative, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Rewrites model.safetensors after `edit` changes the tensor list.
  template <typename Fn>
  void EditWeights(Fn edit) {
    std::vector<SafetensorsWriteTensor> tensors;
    {
      auto file = SafetensorsFile::Open((kTinyBert / "model.safetensors").string());
      ASSERT_TRUE(file.ok());
      for (const auto& [name, t] : (*file)->layout().tensors) {
        auto data = (*file)->Data(t);
        tensors.push_back({name, t.dtype, t.shape,
                           std::string(reinterpret_cast<const char*>(data.data()), data.size())});
      }
    }
    edit(tensors);
    auto bytes = SerializeSafetensors(tensors, {{"format", "pt"}});
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    Write("model.safetensors", *bytes);
  }
  absl::Status Load() {
    ModelOptions options;
    options.path = dir_.string();
    options.device = "cpu";
    return LoadModel(options).status();
  }

  fs::path dir_;
};

TEST_F(ModelLoaderTest, UnchangedCopyLoads) { EXPECT_TRUE(Load().ok()) << Load(); }

TEST_F(ModelLoaderTest, MissingFolderOrConfigIsNotFound) {
  fs::remove(dir_ / "config.json");
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("config.json"));
}

TEST_F(ModelLoaderTest, MissingWeightsIsNotFound) {
  fs::remove(dir_ / "model.safetensors");
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
}

TEST_F(ModelLoaderTest, MissingVocabIsNotFound) {
  fs::remove(dir_ / "vocab.txt");
  fs::remove(dir_ / "tokenizer.json");
  absl::Status s = Load();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("vocab.txt"));
}

TEST_F(ModelLoaderTest, OtherModelTypeNamesWhatIsSupported) {
  std::string config = Read("config.json");
  config.replace(config.find("\"bert\""), 6, "\"roberta\"");
  Write("config.json", config);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'roberta' is not supported; supported: bert"));
}

TEST_F(ModelLoaderTest, MalformedConfigNamesTheFile) {
  Write("config.json", "{\"model_type\": \"bert\", ");
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("config.json: invalid JSON"));
}

TEST_F(ModelLoaderTest, MissingTensorIsNamed) {
  EditWeights([](std::vector<SafetensorsWriteTensor>& tensors) {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                 [](const auto& t) {
                                   return t.name == "encoder.layer.1.output.dense.bias";
                                 }),
                  tensors.end());
  });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("tensor 'encoder.layer.1.output.dense.bias' (or 'bert."));
  EXPECT_THAT(std::string(s.message()), HasSubstr("is missing"));
}

TEST_F(ModelLoaderTest, WrongShapeIsNamed) {
  EditWeights([](std::vector<SafetensorsWriteTensor>& tensors) {
    for (auto& t : tensors) {
      if (t.name == "encoder.layer.0.attention.self.key.weight") t.shape = {16, 64};
    }
  });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("tensor 'encoder.layer.0.attention.self.key.weight' has shape [16, 64]; "
                        "config.json implies [32, 32]"));
}

TEST_F(ModelLoaderTest, NonFloatWeightIsNamed) {
  EditWeights([](std::vector<SafetensorsWriteTensor>& tensors) {
    for (auto& t : tensors) {
      if (t.name == "embeddings.LayerNorm.bias") t.dtype = SafetensorsDtype::kI32;
    }
  });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("tensor 'embeddings.LayerNorm.bias' has dtype I32"));
}

TEST_F(ModelLoaderTest, UnknownDtypeIsNamed) {
  std::string bytes = Read("model.safetensors");
  const size_t at = bytes.find("\"F32\"", bytes.find("embeddings.LayerNorm.weight"));
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 5, "\"Q4K\"");
  Write("model.safetensors", bytes);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("tensor 'embeddings.LayerNorm.weight': unknown dtype 'Q4K'"));
}

TEST_F(ModelLoaderTest, TruncatedFileIsAnError) {
  std::string bytes = Read("model.safetensors");
  Write("model.safetensors", bytes.substr(0, bytes.size() - 100));
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("point outside the data section"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("truncated"));
  Write("model.safetensors", bytes.substr(0, 5));
  s = Load();
  EXPECT_THAT(std::string(s.message()), HasSubstr("truncated"));
  Write("model.safetensors", bytes.substr(0, 1000));
  s = Load();
  EXPECT_THAT(std::string(s.message()), HasSubstr("truncated: header length"));
}

TEST_F(ModelLoaderTest, OffsetsOutsideTheFileAreNamed) {
  // Rewrite in this project's compact JSON so the offsets text is predictable.
  EditWeights([](std::vector<SafetensorsWriteTensor>&) {});
  std::string bytes = Read("model.safetensors");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(bytes[i]);
  std::string header = bytes.substr(8, header_len);
  const size_t k = header.find("\"embeddings.LayerNorm.bias\"");
  const size_t off = header.find("[0,128]", k);
  ASSERT_NE(off, std::string::npos) << header.substr(0, 200);
  header.replace(off, 7, "[0,99999999999]");
  while (header.size() % 8) header.push_back(' ');
  std::string rebuilt(8, '\0');
  for (int i = 0; i < 8; ++i) rebuilt[i] = char((header.size() >> (8 * i)) & 0xff);
  rebuilt += header + bytes.substr(8 + header_len);
  Write("model.safetensors", rebuilt);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'embeddings.LayerNorm.bias'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("outside the data section"));
}

TEST_F(ModelLoaderTest, BertPrefixedNamesAndPoolerAreAccepted) {
  EditWeights([](std::vector<SafetensorsWriteTensor>& tensors) {
    for (auto& t : tensors) t.name = "bert." + t.name;
  });
  ModelOptions options;
  options.path = dir_.string();
  options.device = "cpu";
  auto prefixed = LoadModel(options);
  ASSERT_TRUE(prefixed.ok()) << prefixed.status();
  options.path = kTinyBert.string();
  auto plain = LoadModel(options);
  ASSERT_TRUE(plain.ok());
  TokenIds ids = {101, 7592, 2088, 102};
  const TokenIds* batch[] = {&ids};
  auto a = prefixed->backend->Embed(batch);
  auto b = plain->backend->Embed(batch);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->values, b->values);
}

TEST_F(ModelLoaderTest, Fp16AndBf16WeightFilesLoad) {
  // Converting the fixture's fp32 weights to bf16 in the file must still load (and give
  // nearly the same vectors as fp32).
  EditWeights([](std::vector<SafetensorsWriteTensor>& tensors) {
    for (auto& t : tensors) {
      std::string out;
      for (size_t i = 0; i + 4 <= t.bytes.size(); i += 4) {
        out.push_back(t.bytes[i + 2]);  // bf16 = upper half of the little-endian fp32
        out.push_back(t.bytes[i + 3]);
      }
      t.bytes = out;
      t.dtype = SafetensorsDtype::kBF16;
    }
  });
  EXPECT_TRUE(Load().ok()) << Load();
}

TEST_F(ModelLoaderTest, WithoutSentenceTransformersFilesUsesMeanAndConfigLimits) {
  fs::remove(dir_ / "modules.json");
  fs::remove_all(dir_ / "1_Pooling");
  fs::remove(dir_ / "sentence_bert_config.json");
  fs::remove(dir_ / "tokenizer_config.json");
  ModelOptions options;
  options.path = dir_.string();
  options.device = "cpu";
  auto model = LoadModel(options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->backend->Info().pooling, "mean");
  EXPECT_FALSE(model->backend->Info().normalize);
  EXPECT_EQ(model->backend->Info().max_seq_length, 512);  // max_position_embeddings
}

TEST_F(ModelLoaderTest, OldPoolingFormAndClsMode) {
  Write("1_Pooling/config.json",
        R"({"word_embedding_dimension": 32, "pooling_mode_cls_token": true,
            "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": false})");
  Write("sentence_bert_config.json", R"({"max_seq_length": 64, "do_lower_case": false})");
  ModelOptions options;
  options.path = dir_.string();
  options.device = "cpu";
  auto model = LoadModel(options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->backend->Info().pooling, "cls");
  EXPECT_EQ(model->backend->Info().max_seq_length, 64);
}

TEST_F(ModelLoaderTest, UnsupportedPoolingIsAnError) {
  Write("1_Pooling/config.json", R"({"pooling_mode": "weightedmean"})");
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("'weightedmean' is not supported; supported: mean, cls, max"));
}

TEST_F(ModelLoaderTest, InvalidOptionsAreRejectedBeforeReading) {
  ModelOptions options;
  options.path = dir_.string();
  options.precision = "fp8";
  auto r = LoadModel(options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "model.precision must be one of fp32, fp16, bf16, int8; was 'fp8'");
}

// What the server loads for each precision it may be asked for on the CPU always loads:
// a precision this CPU cannot run falls back, with the reason, instead of failing.
TEST_F(ModelLoaderTest, ChosenPrecisionAlwaysLoadsOnTheCpu) {
  for (const bool quantized : {false, true}) {
    for (const std::string requested : {"fp32", "fp16", "bf16", "int8"}) {
      const PrecisionChoice choice = ChoosePrecision("cpu", requested, quantized);
      ModelOptions options;
      options.path = kTinyBert.string();
      options.device = "cpu";
      options.precision = choice.precision;
      const auto backend = LoadBackend(options);
      EXPECT_TRUE(backend.ok()) << requested << " quantized " << quantized << " -> "
                                << choice.precision << ": " << backend.status();
      if (!quantized) {
        // A reason exactly when the precision changed, naming what was asked for.
        EXPECT_EQ(choice.fallback_reason.empty(), choice.precision == requested) << requested;
        if (choice.precision != requested) {
          EXPECT_THAT(choice.fallback_reason, HasSubstr("'" + requested + "'"));
          options.precision = requested;
          EXPECT_FALSE(LoadBackend(options).ok()) << requested << " fell back yet loads";
        }
      } else {
        EXPECT_NE(choice.precision, "fp16");  // no fp16 on a CPU
        EXPECT_THAT(choice.precision, ::testing::AnyOf("bf16", "int8"));  // this build has int8
      }
    }
  }
  EXPECT_EQ(ChoosePrecision("cuda:0", "fp16", false).precision, "fp16");
  EXPECT_EQ(ChoosePrecision("cuda", "fp32", true).precision, "fp16");
  EXPECT_EQ(ChoosePrecision("cuda:0", "int8", false).precision, "fp16");
}

TEST_F(ModelLoaderTest, SyntheticFolderLoadsAndSaysSo) {
  fs::remove_all(dir_);
  SyntheticModelOptions synth;
  synth.preset = "tiny";
  synth.seed = 3;
  ASSERT_TRUE(WriteSyntheticModel(synth, dir_.string()).ok());
  ModelOptions options;
  options.path = dir_.string();
  options.device = "cpu";
  auto model = LoadModel(options);
  ASSERT_TRUE(model.ok()) << model.status();
  const BackendInfo& info = model->backend->Info();
  EXPECT_TRUE(info.synthetic);
  EXPECT_EQ(info.max_seq_length, 256);  // sentence_bert_config.json
  EXPECT_TRUE(info.normalize);
  auto enc = model->tokenizer->Encode("i like strawberries", 256);
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(enc->ids, (TokenIds{101, 1045, 2066, 13137, 20968, 102}));
  const TokenIds* batch[] = {&enc->ids};
  auto m = model->backend->Embed(batch);
  ASSERT_TRUE(m.ok());
  double norm = 0;
  for (int64_t k = 0; k < m->dim; ++k) {
    ASSERT_TRUE(std::isfinite(m->Row(0)[k]));
    norm += double(m->Row(0)[k]) * m->Row(0)[k];
  }
  EXPECT_GT(norm, 0.01);  // LayerNorm output: O(1) components, not collapsed to zero
}

}  // namespace
}  // namespace embedserve
