// torch::Tensor wrappers of the fused CUDA kernels (fused_kernels.h), for BertBackend's
// CUDA forward. Compiled only in the GPU build (a LibTorch with CUDA: src/model/
// CMakeLists.txt defines EMBEDSERVE_CUDA_KERNELS there). Every kernel runs on the current
// CUDA stream (at::cuda::getCurrentCUDAStream()), so CUDA graph capture records it.
// Shape, device and dtype errors throw c10::Error (TORCH_CHECK), as ATen ops do.
#pragma once

#include <torch/torch.h>

namespace embedserve {
namespace internal_model {

// LayerNorm(x + residual + bias) * gamma + beta over the last dimension, fp32 math,
// stored in x's dtype. x: [rows, width] contiguous CUDA fp32/fp16/bf16; residual
// ([rows, width]) and bias ([width]) may be undefined; gamma, beta: [width]; all of one
// dtype and device. Writes into `out` when given (it may be x or residual), else into a
// new tensor; returns it.
torch::Tensor FusedAddLayerNorm(const torch::Tensor& x, const torch::Tensor& residual,
                                const torch::Tensor& bias, const torch::Tensor& gamma,
                                const torch::Tensor& beta, double eps,
                                torch::Tensor out = torch::Tensor());

// The embeddings: LayerNorm(table_a[index_a] + table_b[index_b]) * gamma + beta, the two
// row gathers done inside the kernel. Tables [*, width]; indices int64 [rows] on the same
// device, each within its table (the caller checks: the kernel does not).
torch::Tensor FusedGatherAddLayerNorm(const torch::Tensor& table_a, const torch::Tensor& index_a,
                                      const torch::Tensor& table_b, const torch::Tensor& index_b,
                                      const torch::Tensor& gamma, const torch::Tensor& beta,
                                      double eps);

// In place: x = gelu(x + bias) (erf form, or tanh approximation when `tanh`), fp32 math.
// x: [rows, width] contiguous CUDA; bias: [width] or undefined. Returns x.
torch::Tensor FusedBiasGelu_(torch::Tensor& x, const torch::Tensor& bias, bool tanh);

// Self-attention straight on the packed QKV projection (fused_kernels.h's PackedAttention):
// qkv [rows, 3 * heads * head_dim] contiguous CUDA fp32/fp16/bf16; lengths int64 [batch]
// on its device; offsets int64 [batch] (packed rows), or undefined for the padded layout
// of `longest` rows a sequence (padding rows come back as zeros). Returns [rows, heads *
// head_dim] in qkv's dtype. Only for shapes cuda_kernels::PackedAttentionRuns accepts.
// simt: the SIMT form even where the tensor-core form runs (for A/B runs and tests).
torch::Tensor FusedPackedAttention(const torch::Tensor& qkv, const torch::Tensor& offsets,
                                   const torch::Tensor& lengths, int64_t longest, int64_t heads,
                                   double scale, bool simt = false);

}  // namespace internal_model
}  // namespace embedserve
