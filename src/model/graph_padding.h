// Internal (src/model only): whether BertBackend replays a captured CUDA graph bucket for
// a batch or runs the eager packed forward instead (bert_backend.cc, FindGraph).
//
// A bucket always does the work of its batch x longest token slots: every sequence is
// padded to the bucket's length and filler sequences fill its batch. The eager forward
// runs its linear layers on the batch's real tokens alone (only attention pads, to the
// batch's own longest) but issues ~100 kernel launches. So a replay pays while the bucket
// is small (the launches cost more than the padding) or mostly real tokens, and loses
// when it is large and mostly padding: 300 texts of ~14 tokens whose longest has 40 fit
// the 512 x 64 bucket first, 32,768 slots for ~4,200 real tokens.
//
// Thread-safety: pure functions.
#ifndef EMBEDSERVE_SRC_MODEL_GRAPH_PADDING_H_
#define EMBEDSERVE_SRC_MODEL_GRAPH_PADDING_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace embedserve {
namespace internal_model {

struct GraphPaddingLimit {
  // A bucket of at most this many token slots is replayed whatever its padding.
  int64_t free_tokens = 0;
  // A larger one only while its slots are at most this many times the batch's real
  // tokens (the sum of its sequences' lengths).
  double max_padding_ratio = 1.0;
};

// True when the bucket (bucket_batch x bucket_longest slots), which holds the batch,
// should be replayed for a batch of real_tokens tokens; false: run the eager forward.
inline bool GraphReplayPays(int64_t bucket_batch, int64_t bucket_longest, int64_t real_tokens,
                            const GraphPaddingLimit& limit) {
  const int64_t slots = bucket_batch * bucket_longest;
  return slots <= limit.free_tokens ||
         static_cast<double>(slots) <=
             limit.max_padding_ratio * static_cast<double>(real_tokens);
}

// No limit: every bucket that holds the batch is replayed.
inline GraphPaddingLimit UnlimitedGraphPadding() {
  return {std::numeric_limits<int64_t>::max(), std::numeric_limits<double>::infinity()};
}

// The limit for a model precision ("fp16", "bf16", "fp32"; tf32: fp32 matmuls on TF32
// tensor cores). The constants are where replay and eager cross on an H200
// (docs/results/gpu-h200/graph-waste-20261204): per token slot, fp32 arithmetic costs
// several times fp16's, so fewer padded slots are free.
inline GraphPaddingLimit DefaultGraphPaddingLimit(absl::string_view precision, bool tf32) {
  if (precision != "fp32") return {8192, 2.0};  // fp16, bf16
  return tf32 ? GraphPaddingLimit{4096, 2.0} : GraphPaddingLimit{1024, 1.5};
}

// EMBEDSERVE_GRAPH_PADDING, for A/B runs of one build: "" keeps `fallback`, "any" is
// UnlimitedGraphPadding(), "FREE,RATIO" (e.g. "8192,2") sets both fields.
inline absl::StatusOr<GraphPaddingLimit> ParseGraphPaddingLimit(
    absl::string_view spec, const GraphPaddingLimit& fallback) {
  if (spec.empty()) return fallback;
  if (spec == "any") return UnlimitedGraphPadding();
  const std::vector<absl::string_view> parts = absl::StrSplit(spec, ',');
  GraphPaddingLimit limit;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &limit.free_tokens) ||
      !absl::SimpleAtod(parts[1], &limit.max_padding_ratio) || limit.free_tokens < 0 ||
      !(limit.max_padding_ratio >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EMBEDSERVE_GRAPH_PADDING='", spec,
        "': expected any or FREE_TOKENS,MAX_PADDING_RATIO (e.g. 8192,2)"));
  }
  return limit;
}

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_GRAPH_PADDING_H_
