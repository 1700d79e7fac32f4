// Writes a synthetic model folder in exactly the all-MiniLM-L6-v2 layout (config.json,
// model.safetensors fp32, vocab.txt, tokenizer_config.json, special_tokens_map.json,
// modules.json, sentence_bert_config.json, 1_Pooling/config.json, 2_Normalize/) with
// deterministic BERT-like weights. The weights come from this file's own PRNG and
// arithmetic (no libm), so the bytes are identical on every machine and LibTorch version.
// Synthetic weights give correctly shaped but meaningless vectors. Stateless: thread-safe.
#ifndef EMBEDSERVE_TOOLS_MAKE_MODEL_SYNTHETIC_MODEL_H_
#define EMBEDSERVE_TOOLS_MAKE_MODEL_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace embedserve {

struct SyntheticModelOptions {
  // minilm-l6 (all-MiniLM-L6-v2's shape), minilm-l12, bert-base or tiny.
  std::string preset = "minilm-l6";
  // Seed of the weight generator: the same seed gives byte-identical files.
  uint64_t seed = 42;
  // vocab.txt to copy; empty = the vocabulary built into the tool (assets/vocab/vocab.txt,
  // the bert-base-uncased / all-MiniLM-L6-v2 vocabulary).
  std::string vocab_path;
  // Replace the files of an existing non-empty folder.
  bool overwrite = false;

  // Messages name the field, the rule and the value.
  absl::Status Validate() const;
};

// The presets' names, in the order --help lists them.
std::vector<std::string> SyntheticModelPresets();

// Writes the folder `out_dir` (created if needed). FAILED_PRECONDITION if it exists, is
// not empty and overwrite is false; INVALID_ARGUMENT for bad options; INTERNAL when a
// file cannot be written.
absl::Status WriteSyntheticModel(const SyntheticModelOptions& options,
                                 const std::string& out_dir);

// The model.safetensors bytes alone (what WriteSyntheticModel writes).
absl::StatusOr<std::string> SyntheticSafetensors(const SyntheticModelOptions& options);

// Made-up inputs for benchmarks and tests, the same on every run: SyntheticRandom
// advances a 64-bit LCG at `*state` and returns its high 31 bits; SyntheticSequence is
// [CLS] (101), `length` - 2 word pieces in [1000, 29000) drawn from it, [SEP] (102).
uint64_t SyntheticRandom(uint64_t* state);
std::vector<int32_t> SyntheticSequence(int64_t length, uint64_t* state);

// Implementation details below (exposed for tests).
namespace internal_make_model {
// ln(x) for x > 0 with only +, -, *, / and frexp: bit-identical on every IEEE-754 machine
// (unlike libm's log, whose last bit may differ between versions).
double DeterministicLog(double x);
}  // namespace internal_make_model

}  // namespace embedserve

#endif  // EMBEDSERVE_TOOLS_MAKE_MODEL_SYNTHETIC_MODEL_H_
