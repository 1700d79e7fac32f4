// Fused elementwise kernels for the CUDA forward of the BERT encoder.
//
// A plain C++ interface (raw device pointers, sizes, a stream) so that fused_kernels.cu
// builds with nvcc alone, without LibTorch's headers; fused_ops.h/.cc wrap it for
// torch::Tensor. Only the GPU build compiles either (src/model/CMakeLists.txt).
//
// Why: on an H200 at 1,024 x 16 tokens, fp16, a forward's 13 LayerNorms took 0.35 ms, its
// 6 GELUs 0.21 ms and the residual adds ~0.1 ms of 2.61 ms (docs/results/gpu-h200/bounds.md),
// each a separate pass over the activations. These kernels do the residual add, the
// linear layer's bias and the LayerNorm in one pass (read x, residual; write out), and the
// bias + GELU in one in-place pass.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace embedserve {
namespace cuda_kernels {

enum class Dtype { kFloat32, kFloat16, kBFloat16 };

// out[r, :] = LayerNorm(x[r, :] + residual[r, :] + bias) * gamma + beta over `width`
// columns, for r in [0, rows). Every tensor has the storage type `dtype`; the sum, the
// mean and variance (two passes over registers) and the affine map are computed in fp32,
// and only `out` is rounded to `dtype`.
//   x, out:         [rows, width] row-major; out may be x or residual (each element is
//                   read before it is written, by the same thread).
//   x_index:        optional; row r of x is then x[x_index[r], :] (an embedding table
//                   gather), indices not checked.
//   residual:       optional [rows, width], or gathered through residual_index likewise.
//   bias:           optional [width] (a linear layer's bias whose GEMM ran without it).
//   gamma, beta:    [width].
// Rows of any width run; widths that are a multiple of 8 (with 16-byte aligned pointers)
// up to 4,096 take the vectorized kernel (one row per group of 8, 16 or 32 threads,
// 8 elements per 16-byte access, the row held in registers), others a scalar kernel.
// rows == 0 launches nothing.
struct AddLayerNormArgs {
  Dtype dtype = Dtype::kFloat32;
  void* out = nullptr;
  const void* x = nullptr;
  const int64_t* x_index = nullptr;
  const void* residual = nullptr;
  const int64_t* residual_index = nullptr;
  const void* bias = nullptr;
  const void* gamma = nullptr;
  const void* beta = nullptr;
  int64_t rows = 0;
  int64_t width = 0;
  float eps = 1e-12f;
};
// Launches on `stream` (capturable into a CUDA graph). Returns the launch's error
// (cudaErrorInvalidValue for a null required pointer or a negative size).
cudaError_t AddLayerNorm(const AddLayerNormArgs& args, cudaStream_t stream);

// In place: x[r, c] = act(x[r, c] + bias[c]) over [rows, width], fp32 math; bias optional.
// act: GELU with erf (the exact form BERT's "gelu" uses) or with the tanh approximation
// ("gelu_new", "gelu_pytorch_tanh"). Vectorized when width % 8 == 0 and x, bias are
// 16-byte aligned.
enum class Activation { kGeluErf, kGeluTanh };
cudaError_t BiasActivation(Dtype dtype, void* x, const void* bias, int64_t rows, int64_t width,
                           Activation act, cudaStream_t stream);

// Self-attention of short sequences straight on the packed QKV projection: no padding,
// no mask, no layout copies. It replaces the scatter to [batch, heads, longest, head_dim],
// PyTorch's memory-efficient kernel (whose 64-row tiles are mostly empty at 16 tokens) and
// the gather back. Two forms:
//   - tensor cores (fp16 and bf16 on sm_80 and newer, the default there): one warp per
//     16 query rows of a (sequence, head), several per block; Q, K and V loaded straight
//     into mma fragments, S = Q K^T and P V as m16n8k16 products with fp32 accumulators,
//     the softmax in fp32 on the accumulators, P fed to the second product as two 16-bit
//     parts (hi + lo) so that it keeps at least 16 significant bits.
//   - SIMT (fp32 always; fp16/bf16 on older cards or when asked for): one block per
//     (sequence, head), K and V in shared memory in fp32, each warp takes query rows,
//     scores all keys (one or two per lane), softmax and V in fp32.
// Either way the scores and the softmax (max subtracted) are fp32 and the result is
// rounded to `dtype` once.
// Why: on an H200 at 1,024 x 16 tokens, fp16, PyTorch's kernel took 780 us of a 2.09 ms
// forward, 130 us a layer, for ~50 MB of traffic; the SIMT form 77 us a layer
// (docs/results/gpu-h200/gemm-attn-20261204), bound by its blocks' serial query rows; the
// tensor-core form 15.5 us a layer, ~2.9 TB/s (docs/results/gpu-h200/attn-mma-20261204).
//   qkv:     [rows, 3 * heads * head_dim], 16-byte aligned rows; row r holds q | k | v,
//            head h at columns h * head_dim of each.
//   out:     [rows, heads * head_dim], 16-byte aligned.
//   offsets: [batch] first row of each sequence (packed: no gaps), or null for the padded
//            layout, where sequence b has rows b * longest .. + longest and rows past its
//            length are written as zeros (finite, for the masked pooling of a graph bucket).
//   lengths: [batch], each in [1, longest] (not checked).
// scale: the scores' factor (1 / sqrt(head_dim)). Runs when PackedAttentionRuns says so.
constexpr int64_t kPackedAttentionMaxTokens = 64;
// kAuto: the tensor-core form where it runs (fp16/bf16, sm_80+), else SIMT; kSimt: SIMT.
enum class AttentionForm { kAuto, kSimt };
struct PackedAttentionArgs {
  Dtype dtype = Dtype::kFloat32;
  void* out = nullptr;
  const void* qkv = nullptr;
  const int64_t* offsets = nullptr;
  const int64_t* lengths = nullptr;
  int64_t batch = 0;
  int64_t longest = 0;
  int heads = 0;
  int head_dim = 0;
  float scale = 1.0f;
  AttentionForm form = AttentionForm::kAuto;
  // qkv's rows (in the packed layout the batch's tokens); 0 if not known. Picks the
  // tensor-core form's order of work (fused_kernels.cu: LaunchMmaAttention).
  int64_t rows = 0;
};
// head_dim 32 or 64 and longest <= kPackedAttentionMaxTokens.
inline bool PackedAttentionRuns(int64_t head_dim, int64_t longest) {
  return (head_dim == 32 || head_dim == 64) && longest >= 1 &&
         longest <= kPackedAttentionMaxTokens;
}
// Launches on `stream` (capturable). cudaErrorInvalidValue for a shape it does not run,
// a null pointer or misaligned rows.
cudaError_t PackedAttention(const PackedAttentionArgs& args, cudaStream_t stream);

}  // namespace cuda_kernels
}  // namespace embedserve
