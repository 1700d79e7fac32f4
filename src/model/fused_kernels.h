// Fused elementwise kernels for the CUDA forward of the BERT encoder (issue 14).
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

}  // namespace cuda_kernels
}  // namespace embedserve
