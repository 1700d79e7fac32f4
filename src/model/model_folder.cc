#include "embedserve/model/model_folder.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "embedserve/common/status_macros.h"
#include "json_util.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace {

using nlohmann::json;
using internal_model::ParseJson;

absl::Status FieldError(absl::string_view file, absl::string_view field,
                        absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", field, " ", problem));
}

// Reads an integer field in [min_value, max_value]; `fallback` when absent (nullopt:
// required).
absl::StatusOr<int64_t> GetInt(const json& j, absl::string_view file, const char* field,
                               std::optional<int64_t> fallback, int64_t min_value,
                               int64_t max_value) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback.has_value()) return *fallback;
    return FieldError(file, field, "is missing (required integer)");
  }
  if (!it->is_number_integer()) {
    return FieldError(file, field, absl::StrCat("must be an integer; was ", it->dump()));
  }
  const int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX
                        ? INT64_MAX
                        : it->get<int64_t>();
  if (v < min_value || v > max_value) {
    return FieldError(file, field,
                      absl::StrCat("must be in [", min_value, ", ", max_value, "]; was ", v));
  }
  return v;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("cannot read ", path));
  return ss.str();
}

absl::StatusOr<BertConfig> ParseBertConfig(absl::string_view json_text) {
  constexpr absl::string_view kFile = "config.json";
  ES_ASSIGN_OR_RETURN(json j, ParseJson(json_text, kFile));
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: not a JSON object");
  auto type_it = j.find("model_type");
  if (type_it == j.end() || !type_it->is_string()) {
    return FieldError(kFile, "model_type", "is missing; supported: bert");
  }
  if (type_it->get<std::string>() != "bert") {
    return FieldError(kFile, "model_type",
                      absl::StrCat("'", type_it->get<std::string>(),
                                   "' is not supported; supported: bert (BERT encoders such "
                                   "as all-MiniLM-L6-v2, bert-base-uncased)"));
  }
  BertConfig c;
  ES_ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, kFile, "vocab_size", std::nullopt, 1, 1 << 24));
  ES_ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, kFile, "hidden_size", std::nullopt, 1, 1 << 16));
  ES_ASSIGN_OR_RETURN(c.num_hidden_layers,
                      GetInt(j, kFile, "num_hidden_layers", std::nullopt, 1, 1024));
  ES_ASSIGN_OR_RETURN(c.num_attention_heads,
                      GetInt(j, kFile, "num_attention_heads", std::nullopt, 1, 1024));
  ES_ASSIGN_OR_RETURN(c.intermediate_size,
                      GetInt(j, kFile, "intermediate_size", std::nullopt, 1, 1 << 18));
  ES_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      GetInt(j, kFile, "max_position_embeddings", std::nullopt, 2, 1 << 20));
  ES_ASSIGN_OR_RETURN(c.type_vocab_size, GetInt(j, kFile, "type_vocab_size", 2, 1, 1 << 16));
  ES_ASSIGN_OR_RETURN(c.pad_token_id, GetInt(j, kFile, "pad_token_id", 0, 0, 1 << 24));
  if (c.hidden_size % c.num_attention_heads != 0) {
    return FieldError(kFile, "hidden_size",
                      absl::StrCat("must be divisible by num_attention_heads (",
                                   c.num_attention_heads, "); was ", c.hidden_size));
  }
  auto act_it = j.find("hidden_act");
  if (act_it != j.end() && !act_it->is_null()) {
    if (!act_it->is_string()) {
      return FieldError(kFile, "hidden_act", absl::StrCat("must be a string; was ", act_it->dump()));
    }
    c.hidden_act = act_it->get<std::string>();
    if (c.hidden_act != "gelu" && c.hidden_act != "gelu_new" &&
        c.hidden_act != "gelu_pytorch_tanh" && c.hidden_act != "relu") {
      return FieldError(kFile, "hidden_act",
                        absl::StrCat("must be one of gelu, gelu_new, gelu_pytorch_tanh, relu; "
                                     "was '", c.hidden_act, "'"));
    }
  }
  auto eps_it = j.find("layer_norm_eps");
  if (eps_it != j.end() && !eps_it->is_null()) {
    if (!eps_it->is_number() || !(eps_it->get<double>() > 0) || eps_it->get<double>() > 1) {
      return FieldError(kFile, "layer_norm_eps",
                        absl::StrCat("must be a number in (0, 1]; was ", eps_it->dump()));
    }
    c.layer_norm_eps = eps_it->get<double>();
  }
  auto pos_it = j.find("position_embedding_type");
  if (pos_it != j.end() && !pos_it->is_null() &&
      !(pos_it->is_string() && pos_it->get<std::string>() == "absolute")) {
    return FieldError(kFile, "position_embedding_type",
                      absl::StrCat("must be 'absolute'; was ", pos_it->dump()));
  }
  auto name_it = j.find("_name_or_path");
  if (name_it != j.end() && name_it->is_string()) c.name_or_path = name_it->get<std::string>();
  auto syn_it = j.find("embedserve_synthetic");
  if (syn_it != j.end() && syn_it->is_boolean()) c.synthetic = syn_it->get<bool>();
  auto seed_it = j.find("embedserve_seed");
  if (seed_it != j.end() && seed_it->is_number_unsigned()) {
    c.synthetic_seed = seed_it->get<uint64_t>();
  }
  return c;
}

absl::StatusOr<std::string> ParsePoolingConfig(absl::string_view json_text) {
  constexpr absl::string_view kFile = "1_Pooling/config.json";
  ES_ASSIGN_OR_RETURN(json j, ParseJson(json_text, kFile));
  if (!j.is_object()) return absl::InvalidArgumentError("1_Pooling/config.json: not a JSON object");
  constexpr absl::string_view kSupported = "supported: mean, cls, max";
  auto mode_it = j.find("pooling_mode");
  if (mode_it != j.end() && !mode_it->is_null()) {
    if (!mode_it->is_string()) {
      return FieldError(kFile, "pooling_mode",
                        absl::StrCat("must be a string; was ", mode_it->dump()));
    }
    std::string mode = mode_it->get<std::string>();
    if (mode == "mean" || mode == "cls" || mode == "max") return mode;
    if (mode == "mean_tokens") return std::string("mean");
    if (mode == "cls_token") return std::string("cls");
    if (mode == "max_tokens") return std::string("max");
    return FieldError(kFile, "pooling_mode",
                      absl::StrCat("'", mode, "' is not supported; ", kSupported));
  }
  struct OldFlag {
    const char* key;
    const char* mode;  // nullptr: unsupported
  };
  constexpr OldFlag kFlags[] = {
      {"pooling_mode_mean_tokens", "mean"},
      {"pooling_mode_cls_token", "cls"},
      {"pooling_mode_max_tokens", "max"},
      {"pooling_mode_mean_sqrt_len_tokens", nullptr},
      {"pooling_mode_weightedmean_tokens", nullptr},
      {"pooling_mode_lasttoken", nullptr},
  };
  std::vector<std::string> set;
  std::string mode;
  for (const OldFlag& f : kFlags) {
    auto it = j.find(f.key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_boolean()) {
      return FieldError(kFile, f.key, absl::StrCat("must be true or false; was ", it->dump()));
    }
    if (!it->get<bool>()) continue;
    if (f.mode == nullptr) {
      return FieldError(kFile, f.key, absl::StrCat("is true, which is not supported; ", kSupported));
    }
    set.push_back(f.key);
    mode = f.mode;
  }
  if (set.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(kFile, ": several pooling modes are set (", absl::StrJoin(set, ", "),
                     "); exactly one of mean, cls, max is supported"));
  }
  if (set.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kFile, ": no pooling mode set (pooling_mode or pooling_mode_*_tokens); ", kSupported));
  }
  return mode;
}

absl::StatusOr<ModulesConfig> ParseModulesConfig(absl::string_view json_text) {
  constexpr absl::string_view kFile = "modules.json";
  ES_ASSIGN_OR_RETURN(json j, ParseJson(json_text, kFile));
  if (!j.is_array()) return absl::InvalidArgumentError("modules.json: not a JSON array");
  ModulesConfig m;
  size_t index = 0;
  for (const json& module : j) {
    if (!module.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFile, ": entry ", index, " is not a JSON object"));
    }
    auto type_it = module.find("type");
    if (type_it == module.end() || !type_it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFile, ": entry ", index, " has no string field 'type'"));
    }
    const std::string type = type_it->get<std::string>();
    std::string path;
    auto path_it = module.find("path");
    if (path_it != module.end() && path_it->is_string()) path = path_it->get<std::string>();
    if (path.find("..") != std::string::npos || absl::StartsWith(path, "/")) {
      return absl::InvalidArgumentError(absl::StrCat(
          kFile, ": entry ", index, " path '", path, "' must stay inside the folder"));
    }
    if (absl::EndsWith(type, ".Transformer") || type == "Transformer") {
      // The BERT encoder itself: config.json + model.safetensors in `path` ("" = root).
    } else if (absl::EndsWith(type, ".Pooling") || type == "Pooling") {
      m.pooling_path = path;
    } else if (absl::EndsWith(type, ".Normalize") || type == "Normalize") {
      m.normalize = true;
    } else {
      m.unsupported.push_back(type);
    }
    ++index;
  }
  if (!m.unsupported.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kFile, ": module type(s) ", absl::StrJoin(m.unsupported, ", "),
        " not supported; supported: Transformer, Pooling, Normalize"));
  }
  return m;
}

absl::StatusOr<SentenceBertConfig> ParseSentenceBertConfig(absl::string_view json_text) {
  constexpr absl::string_view kFile = "sentence_bert_config.json";
  ES_ASSIGN_OR_RETURN(json j, ParseJson(json_text, kFile));
  if (!j.is_object()) return absl::InvalidArgumentError("sentence_bert_config.json: not a JSON object");
  SentenceBertConfig c;
  auto len_it = j.find("max_seq_length");
  if (len_it != j.end() && !len_it->is_null()) {
    ES_ASSIGN_OR_RETURN(int64_t v, GetInt(j, kFile, "max_seq_length", std::nullopt, 2, 1 << 20));
    c.max_seq_length = v;
  }
  auto lower_it = j.find("do_lower_case");
  if (lower_it != j.end() && !lower_it->is_null()) {
    if (!lower_it->is_boolean()) {
      return FieldError(kFile, "do_lower_case",
                        absl::StrCat("must be true or false; was ", lower_it->dump()));
    }
    c.do_lower_case = lower_it->get<bool>();
  }
  return c;
}

absl::StatusOr<std::optional<int64_t>> ParseTokenizerMaxLength(absl::string_view json_text) {
  ES_ASSIGN_OR_RETURN(json j, ParseJson(json_text, "tokenizer_config.json"));
  if (!j.is_object()) return absl::InvalidArgumentError("tokenizer_config.json: not a JSON object");
  auto it = j.find("model_max_length");
  if (it == j.end() || !it->is_number()) return std::optional<int64_t>();
  const double v = it->get<double>();
  // transformers writes int(1e30) for "unlimited".
  if (!(v >= 2) || v > (1 << 20)) return std::optional<int64_t>();
  return std::optional<int64_t>(static_cast<int64_t>(v));
}

absl::StatusOr<ModelFolder> ReadModelFolder(const std::string& dir) {
  ModelFolder f;
  f.path = dir;
  const std::string config_path = dir + "/config.json";
  auto config_text = ReadTextFile(config_path);
  if (!config_text.ok()) {
    return absl::NotFoundError(absl::StrCat(
        dir, " is not a model folder: cannot open ", config_path,
        " (expected the Hugging Face / sentence-transformers layout: config.json, "
        "model.safetensors, vocab.txt)"));
  }
  auto prefix = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(dir, "/", s.message()));
  };
  auto config = ParseBertConfig(*config_text);
  if (!config.ok()) return prefix(config.status());
  f.config = *std::move(config);
  f.model_name = f.config.name_or_path.empty() ? BaseName(dir) : f.config.name_or_path;

  // sentence-transformers modules.
  std::string pooling_dir;
  if (FileExists(dir + "/modules.json")) {
    f.sentence_transformers = true;
    ES_ASSIGN_OR_RETURN(std::string text, ReadTextFile(dir + "/modules.json"));
    auto modules = ParseModulesConfig(text);
    if (!modules.ok()) return prefix(modules.status());
    f.normalize = modules->normalize;
    if (modules->pooling_path.empty()) {
      f.notes.push_back("modules.json lists no Pooling module: using mean pooling");
    } else {
      pooling_dir = dir + "/" + modules->pooling_path;
    }
  } else if (FileExists(dir + "/1_Pooling/config.json")) {
    pooling_dir = dir + "/1_Pooling";
  }
  if (!pooling_dir.empty()) {
    auto text = ReadTextFile(pooling_dir + "/config.json");
    if (!text.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "modules.json names a Pooling module but ", pooling_dir, "/config.json is missing"));
    }
    auto pooling = ParsePoolingConfig(*text);
    if (!pooling.ok()) return prefix(pooling.status());
    f.pooling = *pooling;
  }

  // Sequence-length limit: sentence_bert_config.json, else tokenizer_config.json,
  // else max_position_embeddings.
  const int64_t positions = f.config.max_position_embeddings;
  if (FileExists(dir + "/sentence_bert_config.json")) {
    ES_ASSIGN_OR_RETURN(std::string text, ReadTextFile(dir + "/sentence_bert_config.json"));
    auto sbert = ParseSentenceBertConfig(text);
    if (!sbert.ok()) return prefix(sbert.status());
    if (sbert->max_seq_length.has_value()) {
      f.max_seq_length = *sbert->max_seq_length;
      f.max_seq_length_source = "sentence_bert_config.json max_seq_length";
    }
  }
  if (f.max_seq_length == 0 && FileExists(dir + "/tokenizer_config.json")) {
    ES_ASSIGN_OR_RETURN(std::string text, ReadTextFile(dir + "/tokenizer_config.json"));
    auto len = ParseTokenizerMaxLength(text);
    if (!len.ok()) return prefix(len.status());
    if (len->has_value()) {
      f.max_seq_length = **len;
      f.max_seq_length_source = "tokenizer_config.json model_max_length";
    }
  }
  if (f.max_seq_length == 0) {
    f.max_seq_length = positions;
    f.max_seq_length_source = "config.json max_position_embeddings";
  }
  if (f.max_seq_length > positions) {
    f.notes.push_back(absl::StrCat(f.max_seq_length_source, " ", f.max_seq_length,
                                   " exceeds max_position_embeddings ", positions,
                                   ": using ", positions));
    f.max_seq_length = positions;
    f.max_seq_length_source = "config.json max_position_embeddings";
  }
  if (!f.sentence_transformers) {
    f.notes.push_back(absl::StrCat(
        "no modules.json (not a sentence-transformers folder): ", f.pooling,
        " pooling, no Normalize module, max_seq_length ", f.max_seq_length, " from ",
        f.max_seq_length_source));
  }
  return f;
}

}  // namespace embedserve
