// Internal (src/model only, includes LibTorch): multi-head self-attention over packed
// (unpadded) sequences on the CPU. Pipeline stage: forward. BertBackend's CPU path calls
// it between the fused QKV projection and the attention output projection.
//
// Each sequence attends only over its own tokens, read in place from the packed [T, 3H]
// projection, so there is no padding, no mask and no permute/copy to [B, heads, L, d].
// Why not at::matmul + at::softmax: LibTorch 1.13 runs a CPU fp32 bmm of many small
// matrices as a loop of per-matrix gemm calls, and the padded layout needs scatter,
// permute and dtype copies; together ~12 ms of a 77 ms minilm-l6 forward at 32 x 16
// tokens (docs/model.md). Scores, softmax and the weighted sum are computed in fp32 for
// fp32 and bf16 inputs (bf16 is widened on load, rounded to nearest-even on store).
//
// Thread-safety: a pure function of its arguments; safe to call from several threads.
// The (sequence, head) pairs are spread over LibTorch's intra-op threads.
#ifndef EMBEDSERVE_SRC_MODEL_CPU_ATTENTION_H_
#define EMBEDSERVE_SRC_MODEL_CPU_ATTENTION_H_

#include <torch/torch.h>

#include <cstdint>

namespace embedserve {
namespace internal_model {

// qkv: contiguous CPU tensor [T, 3 * H] of float or bfloat16, the rows of sequence i at
// offsets[i] .. offsets[i] + lengths[i] - 1 (columns: all heads' queries, then keys, then
// values; head h at h * d .. h * d + d - 1 of each third, d = H / heads).
// offsets, lengths: contiguous CPU int64 tensors [B]. Returns the context [T, H] in
// qkv's dtype: for each token, softmax(q . k_j * scale) over its own sequence's j,
// weighting v_j; written into `out` where it is given (contiguous [T, H], qkv's dtype,
// not overlapping qkv), else into a new tensor. Throws c10::Error on a shape or dtype it
// does not take.
torch::Tensor PackedSelfAttentionCpu(const torch::Tensor& qkv, const torch::Tensor& offsets,
                                     const torch::Tensor& lengths, int64_t heads, double scale,
                                     torch::Tensor out = {});

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_CPU_ATTENTION_H_
