// Internal (src/model only): which padded buckets BertBackend captures as CUDA graphs
// (bert_backend.cc, CaptureGraphs). Embed replays the first captured bucket that holds a
// batch (the one with the fewest token slots); a batch that no captured bucket holds
// runs the eager packed forward.
//
// A bucket does the work of all its batch x longest token slots, however few of them the
// batch fills: every sequence is padded to the bucket's length and filler sequences fill
// its batch. The eager forward runs its linear layers on the batch's real tokens alone
// but issues ~100 kernel launches, which cost more than a small bucket's padding and
// which hide behind a large batch's GPU time. Measured on an H200 (graph_padding_bench,
// docs/results/gpu-h200/graph-waste-20261204), in fp16 a replay beat the eager forward
// for batches of mixed lengths in buckets of up to 8,192 slots and lost in every larger
// bucket, however full: 320 texts of ~14 tokens whose longest has 38 took 3.5 ms in the
// 512 x 64 bucket (32,768 slots for 4,580 tokens) and 1.5 ms eagerly, 1,024 texts of 16
// tokens filling the 1,024 x 16 bucket 2.7 ms against 2.2. So a bucket is captured only up
// to a number of slots, which fp32's slower arithmetic per slot makes smaller.
//
// Thread-safety: pure functions.
#ifndef EMBEDSERVE_SRC_MODEL_GRAPH_BUCKETS_H_
#define EMBEDSERVE_SRC_MODEL_GRAPH_BUCKETS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace embedserve {
namespace internal_model {

// The most token slots (batch x longest) of a captured bucket, for a model precision
// ("fp16", "bf16", "fp32"; tf32: fp32 matmuls on TF32 tensor cores). Where a replay of
// short sentences stopped beating the eager forward on an H200: fp16 8,192 (16,384
// lost); TF32 4,096 (8,192 lost); fp32 1,024 (2,048 lost). bf16 takes fp16's (same
// tensor-core rate; not measured separately).
inline int64_t GraphMaxSlots(absl::string_view precision, bool tf32) {
  if (precision != "fp32") return 8192;
  return tf32 ? 4096 : 1024;
}

// True when the bucket of `batch` sequences x `longest` tokens is captured: at most
// `max_batch` sequences (ModelOptions::cuda_graph_max_batch) and `max_slots` slots.
inline bool CaptureGraphBucket(int64_t batch, int64_t longest, int64_t max_batch,
                               int64_t max_slots) {
  return batch <= max_batch && batch * longest <= max_slots;
}

// EMBEDSERVE_GRAPH_MAX_SLOTS, for A/B runs of one build: "" keeps `fallback`, a positive
// integer replaces it (32768: every bucket up to 1,024 x 32 and 512 x 64).
inline absl::StatusOr<int64_t> ParseGraphMaxSlots(absl::string_view spec, int64_t fallback) {
  if (spec.empty()) return fallback;
  int64_t slots = 0;
  if (!absl::SimpleAtoi(spec, &slots) || slots <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EMBEDSERVE_GRAPH_MAX_SLOTS='", spec, "': expected a positive number of token slots"));
  }
  return slots;
}

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_GRAPH_BUCKETS_H_
