// Tokenizer::FromModelDir / OptionsFromModelDir: reads the Hugging Face tokenizer files of a
// sentence-transformers model folder (vocab.txt, tokenizer_config.json,
// special_tokens_map.json, tokenizer.json), in the order transformers applies them.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace {

using nlohmann::json;

bool FileExists(const std::string& path) {
  std::ifstream in(path);
  return static_cast<bool>(in);
}

absl::StatusOr<json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  json parsed = json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a JSON object"));
  }
  return parsed;
}

// A special token in tokenizer_config.json: "[CLS]" or {"content": "[CLS]", ...}.
absl::Status ReadTokenField(const json& obj, const char* key, const std::string& path,
                            std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    *out = it->get<std::string>();
    return absl::OkStatus();
  }
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    *out = (*it)["content"].get<std::string>();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", path, "': \"", key, "\" must be a string or {\"content\": string}"));
}

template <typename T>
absl::Status ReadField(const json& obj, const char* key, const std::string& path, T* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  bool ok;
  if constexpr (std::is_same_v<T, bool>) {
    ok = it->is_boolean();
  } else if constexpr (std::is_same_v<T, std::string>) {
    ok = it->is_string();
  } else {
    ok = it->is_number_integer() || it->is_number_unsigned();
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "': \"", key, "\" has the wrong type: ", it->dump()));
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

absl::Status ApplyTokenizerConfig(const std::string& path, Tokenizer::Options* o) {
  ES_ASSIGN_OR_RETURN(json cfg, ReadJson(path));
  ES_RETURN_IF_ERROR(ReadField(cfg, "do_lower_case", path, &o->lowercase));
  if (cfg.contains("strip_accents") && cfg["strip_accents"].is_boolean()) {
    o->strip_accents = cfg["strip_accents"].get<bool>();
  }
  ES_RETURN_IF_ERROR(ReadField(cfg, "tokenize_chinese_chars", path, &o->handle_chinese_chars));
  // HF writes a huge float (1e30) when a model sets no limit: keep the default then.
  auto mml = cfg.find("model_max_length");
  if (mml != cfg.end() && (mml->is_number_integer() || mml->is_number_unsigned())) {
    o->model_max_length = mml->get<int64_t>();
  }
  ES_RETURN_IF_ERROR(ReadTokenField(cfg, "unk_token", path, &o->unk_token));
  ES_RETURN_IF_ERROR(ReadTokenField(cfg, "cls_token", path, &o->cls_token));
  ES_RETURN_IF_ERROR(ReadTokenField(cfg, "sep_token", path, &o->sep_token));
  ES_RETURN_IF_ERROR(ReadTokenField(cfg, "pad_token", path, &o->pad_token));
  ES_RETURN_IF_ERROR(ReadTokenField(cfg, "mask_token", path, &o->mask_token));
  return absl::OkStatus();
}

// special_tokens_map.json: the special tokens, which override tokenizer_config.json's.
absl::Status ApplySpecialTokensMap(const std::string& path, Tokenizer::Options* o) {
  ES_ASSIGN_OR_RETURN(json map, ReadJson(path));
  ES_RETURN_IF_ERROR(ReadTokenField(map, "unk_token", path, &o->unk_token));
  ES_RETURN_IF_ERROR(ReadTokenField(map, "cls_token", path, &o->cls_token));
  ES_RETURN_IF_ERROR(ReadTokenField(map, "sep_token", path, &o->sep_token));
  ES_RETURN_IF_ERROR(ReadTokenField(map, "pad_token", path, &o->pad_token));
  ES_RETURN_IF_ERROR(ReadTokenField(map, "mask_token", path, &o->mask_token));
  return absl::OkStatus();
}

absl::Status ApplyTokenizerJson(const std::string& path, Tokenizer::Options* o) {
  ES_ASSIGN_OR_RETURN(json tj, ReadJson(path));
  auto norm = tj.find("normalizer");
  if (norm != tj.end() && !norm->is_null()) {
    const std::string type = norm->value("type", "");
    if (type != "BertNormalizer") {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "': normalizer type must be BertNormalizer; was \"", type, "\""));
    }
    ES_RETURN_IF_ERROR(ReadField(*norm, "lowercase", path, &o->lowercase));
    ES_RETURN_IF_ERROR(ReadField(*norm, "clean_text", path, &o->clean_text));
    ES_RETURN_IF_ERROR(ReadField(*norm, "handle_chinese_chars", path, &o->handle_chinese_chars));
    auto sa = norm->find("strip_accents");
    if (sa != norm->end()) {
      if (sa->is_null()) {
        o->strip_accents.reset();
      } else if (sa->is_boolean()) {
        o->strip_accents = sa->get<bool>();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("'", path, "': normalizer.strip_accents must be null or a boolean"));
      }
    }
  }
  auto pre = tj.find("pre_tokenizer");
  if (pre != tj.end() && !pre->is_null() && pre->value("type", "") != "BertPreTokenizer") {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': pre_tokenizer type must be BertPreTokenizer; was ", (*pre)["type"].dump()));
  }
  auto model = tj.find("model");
  if (model != tj.end() && model->is_object()) {
    const std::string type = model->value("type", "WordPiece");
    if (type != "WordPiece") {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "': model type must be WordPiece; was \"", type, "\""));
    }
    ES_RETURN_IF_ERROR(ReadField(*model, "unk_token", path, &o->unk_token));
    ES_RETURN_IF_ERROR(
        ReadField(*model, "continuing_subword_prefix", path, &o->continuing_subword_prefix));
    int64_t max_chars = o->max_input_chars_per_word;
    ES_RETURN_IF_ERROR(ReadField(*model, "max_input_chars_per_word", path, &max_chars));
    o->max_input_chars_per_word = static_cast<int>(std::min<int64_t>(max_chars, 1 << 30));
  }
  auto trunc = tj.find("truncation");
  if (trunc != tj.end() && trunc->is_object()) {
    ES_RETURN_IF_ERROR(ReadField(*trunc, "max_length", path, &o->truncation_max_length));
  }
  auto added = tj.find("added_tokens");
  if (added != tj.end() && added->is_array()) {
    const std::string known[] = {o->unk_token, o->cls_token, o->sep_token, o->pad_token,
                                 o->mask_token};
    for (const json& t : *added) {
      if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) continue;
      const std::string content = t["content"].get<std::string>();
      if (t.value("normalized", false) || t.value("lstrip", false) || t.value("rstrip", false) ||
          t.value("single_word", false)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", path, "': added token '", content,
            "' uses normalized/lstrip/rstrip/single_word, which this tokenizer does not support"));
      }
      if (std::find(std::begin(known), std::end(known), content) == std::end(known)) {
        o->additional_special_tokens.push_back(content);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Tokenizer::Options> Tokenizer::OptionsFromModelDir(const std::string& dir) {
  Options options;
  const std::string config_path = dir + "/tokenizer_config.json";
  const std::string map_path = dir + "/special_tokens_map.json";
  const std::string json_path = dir + "/tokenizer.json";
  if (FileExists(config_path)) ES_RETURN_IF_ERROR(ApplyTokenizerConfig(config_path, &options));
  if (FileExists(map_path)) ES_RETURN_IF_ERROR(ApplySpecialTokensMap(map_path, &options));
  // tokenizer.json is what the HF fast tokenizer runs, so it wins over the config.
  if (FileExists(json_path)) ES_RETURN_IF_ERROR(ApplyTokenizerJson(json_path, &options));
  ES_RETURN_IF_ERROR(options.Validate());
  return options;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModelDir(const std::string& dir) {
  const std::string vocab_path = dir + "/vocab.txt";
  if (!FileExists(vocab_path)) {
    return absl::NotFoundError(absl::StrCat("vocabulary file '", vocab_path, "' not found"));
  }
  ES_ASSIGN_OR_RETURN(Options options, OptionsFromModelDir(dir));
  return Create(options, vocab_path);
}

}  // namespace embedserve
