// Internal (src/model only, includes LibTorch): the CPU kernels that replace chains of
// small ATen ops in BertBackend's fp32/int8 forward. Pipeline stage: forward.
//
// At a few dozen rows each ATen op (index_select, add_, layer_norm, gelu) costs more in
// dispatch, allocation and OpenMP fork/join than in arithmetic, and each is one more pass
// over the activations; these kernels do the same arithmetic in one pass, in place where
// the caller no longer needs the input, and fork only when a call has enough rows to pay
// for it (below that they run on the calling thread). Vectorised with cpu_vector.h (an
// AVX-512, an AVX2 and a baseline copy, picked once by CPU feature); fp32 throughout.
//
// Thread-safety: pure functions of their arguments (the in-place ones write only their
// output tensor); safe to call from several threads on different tensors.
#ifndef EMBEDSERVE_SRC_MODEL_CPU_FUSED_H_
#define EMBEDSERVE_SRC_MODEL_CPU_FUSED_H_

#include <torch/torch.h>

#include <cstdint>

namespace embedserve {
namespace internal_model {

// What a CPU linear layer (Fp32Linear, Int8Linear) does to x W^T + b before it stores
// it, so that no separate activation or residual op runs afterwards.
enum class LinearEpilogue {
  kBias,          // y = x W^T + b
  kBiasGelu,      // y = gelu(x W^T + b), erf form (at::gelu "none")
  kBiasGeluTanh,  // y = gelu(x W^T + b), tanh form (at::gelu "tanh")
  kBiasRelu,      // y = relu(x W^T + b)
  kBiasAddInto,   // residual += x W^T + b, in place (the residual is the output)
};

// Where a CPU linear layer of M x N output writes, from its Forward's `out` argument:
// `out` itself when given (it must be contiguous fp32 CPU [m, n]; for kBiasAddInto it is
// the residual and required), else a new [m, n] fp32 tensor. Throws c10::Error, the
// message starting with `layer`, for an `out` that does not fit.
torch::Tensor LinearOutput(torch::Tensor out, int64_t m, int64_t n, LinearEpilogue epilogue,
                           const char* layer);

// x [rows, n] contiguous fp32 CPU: each row replaced by LayerNorm(row) * gamma + beta,
// as at::layer_norm(x, {n}, gamma, beta, eps) (biased variance, 1 / sqrt(var + eps)).
// gamma, beta: contiguous fp32 [n]. Throws c10::Error on other shapes or dtypes.
void LayerNormInPlaceCpu(torch::Tensor& x, const torch::Tensor& gamma, const torch::Tensor& beta,
                         double eps);

// The BERT embedding step in one pass: row r = LayerNorm(word[ids[r]] + pos[positions[r]])
// (token type folded into pos by the caller). word [V, n], pos [P, n], gamma, beta [n]:
// contiguous fp32; ids, positions: contiguous int64 [rows], each in range (checked).
// Returns [rows, n] fp32.
torch::Tensor EmbedLayerNormCpu(const torch::Tensor& word, const torch::Tensor& pos,
                                const torch::Tensor& ids, const torch::Tensor& positions,
                                const torch::Tensor& gamma, const torch::Tensor& beta,
                                double eps);

// x contiguous fp32 CPU, any shape: x = gelu(x) in place, the erf form (tanh = false, as
// at::gelu "none") or the tanh form (as at::gelu "tanh"). The same vector code the int8
// epilogue uses; exposed for its tests.
void GeluInPlaceCpu(torch::Tensor& x, bool tanh);

// x [rows, n], bias [n]: contiguous fp32 CPU. x = gelu(x + bias) in place, the erf form,
// in one pass (Fp32Linear's kBiasGelu epilogue after a matmul with no bias).
void BiasGeluInPlaceCpu(torch::Tensor& x, const torch::Tensor& bias);

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_CPU_FUSED_H_
