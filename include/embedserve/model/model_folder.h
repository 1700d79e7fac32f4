// Reads the small JSON files of a model folder (Hugging Face / sentence-transformers
// layout) into plain structs: the BERT config, the pooling mode, normalisation and the
// sequence-length limit. Torch-free; the weights are read by the loader. Each Parse*
// function takes the file's text (so the fuzzer can drive it) and returns
// INVALID_ARGUMENT naming the file, the field and the problem. Stateless: thread-safe.
#ifndef EMBEDSERVE_MODEL_MODEL_FOLDER_H_
#define EMBEDSERVE_MODEL_MODEL_FOLDER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve {

// config.json of a BERT model (model_type "bert").
struct BertConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t intermediate_size = 0;
  std::string hidden_act = "gelu";   // gelu, gelu_new, gelu_pytorch_tanh, relu
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  std::string name_or_path;          // "_name_or_path" when present
  bool synthetic = false;            // "embedserve_synthetic": true
  uint64_t synthetic_seed = 0;       // "embedserve_seed"
};

// Parses and checks config.json: model_type must be "bert" (another is an error naming
// what is supported); sizes positive; hidden_size divisible by num_attention_heads;
// hidden_act supported.
absl::StatusOr<BertConfig> ParseBertConfig(absl::string_view json_text);

// 1_Pooling/config.json, new form {"pooling_mode": "mean"} or old form
// {"pooling_mode_mean_tokens": true, ...}. Returns "mean", "cls" or "max"; another mode
// (weightedmean, lasttoken, mean_sqrt_len_tokens) or several at once is an error.
absl::StatusOr<std::string> ParsePoolingConfig(absl::string_view json_text);

// modules.json: which sentence-transformers modules the folder has.
struct ModulesConfig {
  std::string pooling_path;   // folder of the Pooling module ("" if none)
  bool normalize = false;     // a Normalize module is listed
  std::vector<std::string> unsupported;  // module types this project ignores (e.g. Dense)
};
absl::StatusOr<ModulesConfig> ParseModulesConfig(absl::string_view json_text);

// sentence_bert_config.json: both fields are optional (newer sentence-transformers
// versions leave max_seq_length out).
struct SentenceBertConfig {
  std::optional<int64_t> max_seq_length;
  std::optional<bool> do_lower_case;
};
absl::StatusOr<SentenceBertConfig> ParseSentenceBertConfig(absl::string_view json_text);

// tokenizer_config.json's model_max_length, when present and sensible (transformers
// writes 1e30 for "no limit": that counts as absent).
absl::StatusOr<std::optional<int64_t>> ParseTokenizerMaxLength(absl::string_view json_text);

// Everything about a folder except the weights and the vocabulary.
struct ModelFolder {
  std::string path;
  BertConfig config;
  bool sentence_transformers = false;  // modules.json present
  std::string pooling = "mean";
  bool normalize = false;
  int64_t max_seq_length = 0;          // folder's limit, <= max_position_embeddings
  std::string max_seq_length_source;   // which file gave it
  std::string model_name;              // name_or_path, else the folder's base name
  // Human-readable remarks for the startup log (defaults taken, modules ignored).
  std::vector<std::string> notes;
};

// Reads <dir>/config.json (required) and the optional sentence-transformers files.
// NOT_FOUND when config.json is missing; INVALID_ARGUMENT (naming the file) otherwise.
absl::StatusOr<ModelFolder> ReadModelFolder(const std::string& dir);

// Reads a whole small file (JSON config); NOT_FOUND naming the path if it is missing.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_MODEL_FOLDER_H_
