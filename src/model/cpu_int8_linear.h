// A linear layer y = x W^T + b with int8 weights and int8 activations on the CPU
// (model.precision int8): weights quantized once at load, per output channel
// (symmetric, scale = max|W[n,:]| / 127); activations quantized per
// call, per row (per token, asymmetric u8: min + scale * q); the u8 x s8 -> s32 product
// runs in oneDNN's matmul (VNNI kernels: CPUs without VNNI are refused), then each
// output is rescaled by its row's and column's scales, the row minimum times the
// weights' row sum added back, the fp32 bias added, and the epilogue (GELU / ReLU, or the
// add into the residual, cpu_fused.h) applied in that same pass over the int32 output.
// Per-token scales keep the outliers of one token from costing the others precision
// (dynamic per-tensor quantization, as ONNX Runtime's, shares one scale per call).
// Thread-safe: Forward may run on several threads at once.
#ifndef EMBEDSERVE_SRC_MODEL_CPU_INT8_LINEAR_H_
#define EMBEDSERVE_SRC_MODEL_CPU_INT8_LINEAR_H_

#include <memory>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "cpu_fused.h"

namespace embedserve {
namespace internal_model {

// Whether this CPU has the int8 dot-product instructions Int8Linear needs (VNNI).
bool CpuHasInt8Dot();

class Int8Linear {
 public:
  // `weight` [N, K] and `bias` [N] (may be undefined), fp32 on the CPU. INVALID_ARGUMENT
  // for other shapes; INTERNAL when oneDNN has no int8 matmul for this CPU.
  static absl::StatusOr<std::unique_ptr<Int8Linear>> Create(
      const torch::Tensor& weight, const torch::Tensor& bias,
      LinearEpilogue epilogue = LinearEpilogue::kBias);
  ~Int8Linear();

  // x: [M, K] fp32 (any M >= 1) -> [M, N] fp32: the epilogue applied to x W^T + b.
  // `out` as Fp32Linear::Forward's: the residual for kBiasAddInto (required, updated in
  // place), else an optional buffer for the result.
  torch::Tensor Forward(const torch::Tensor& x, torch::Tensor out = {}) const;

  int64_t in_features() const { return k_; }
  int64_t out_features() const { return n_; }

 private:
  struct Impl;  // oneDNN objects (cpu_int8_linear.cc)
  Int8Linear() = default;

  int64_t n_ = 0, k_ = 0;
  LinearEpilogue epilogue_ = LinearEpilogue::kBias;
  torch::Tensor weight_scale_;  // [N] fp32
  torch::Tensor weight_sum_;    // [N] fp32: sum over K of the dequantized weights
  torch::Tensor bias_;          // [N] fp32 (zeros without a bias)
  std::unique_ptr<Impl> impl_;
};

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_CPU_INT8_LINEAR_H_
