// A linear layer on the CPU in fp32 through oneDNN's matmul with the weights reordered
// once, at load, into the layout the kernel wants, and the epilogue (bias, GELU / ReLU,
// or the residual add) done by the matmul as it stores its output (cpu_fused.h), except
// bias + erf GELU, which run as our own pass over the output of a bias-free matmul
// (BiasGeluInPlaceCpu): oneDNN 2.6's gelu_erf post-op cost the real forward ~0.25 ms a
// layer at batch 32 (7% of it), and its bias is a pass of its own.
// Why not at::linear: LibTorch 1.13 sends it to OpenBLAS's sgemm, which copies (packs)
// the whole weight matrix on every call: at a few dozen rows that copy costs as much as
// the product (perf on the batch-1 forward: 31% of the time in sgemm_incopy, 29% in the
// kernel), and the bias, GELU and residual add then run as separate ops. Also OpenBLAS
// 0.3.21 (Debian 12) does not know newer Xeons (Emerald Rapids) and runs its generic
// SSE kernels there, at about a fifth of the AVX-512 rate; oneDNN picks its kernels by
// CPU feature. Built only with oneDNN's headers (libdnnl-dev), as Int8Linear.
// Thread-safe: Forward may run on several threads at once.
#ifndef EMBEDSERVE_SRC_MODEL_CPU_FP32_LINEAR_H_
#define EMBEDSERVE_SRC_MODEL_CPU_FP32_LINEAR_H_

#include <torch/torch.h>

#include <memory>

#include "absl/status/statusor.h"
#include "cpu_fused.h"

namespace embedserve {
namespace internal_model {

class Fp32Linear {
 public:
  // `weight` [N, K] and `bias` [N] (may be undefined), fp32 on the CPU. INVALID_ARGUMENT
  // for other shapes; INTERNAL when oneDNN has no fp32 matmul with this epilogue here.
  static absl::StatusOr<std::unique_ptr<Fp32Linear>> Create(const torch::Tensor& weight,
                                                            const torch::Tensor& bias,
                                                            LinearEpilogue epilogue);
  ~Fp32Linear();

  // x: [M, K] fp32 (any M >= 0). Returns [M, N] fp32: the epilogue applied to x W^T + b.
  // `out` (contiguous fp32 [M, N]): for kBiasAddInto the residual, required, updated in
  // place; for the other epilogues optional, where the result goes instead of a new
  // tensor (the caller's reused buffer). The result is `out` where it is given.
  torch::Tensor Forward(const torch::Tensor& x, torch::Tensor out = {}) const;

  int64_t in_features() const { return k_; }
  int64_t out_features() const { return n_; }
  LinearEpilogue epilogue() const { return epilogue_; }

 private:
  struct Impl;  // oneDNN objects (cpu_fp32_linear.cc)
  Fp32Linear() = default;

  int64_t n_ = 0, k_ = 0;
  LinearEpilogue epilogue_ = LinearEpilogue::kBias;
  torch::Tensor bias_;  // [N] fp32 (zeros without a bias)
  std::unique_ptr<Impl> impl_;
};

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_CPU_FP32_LINEAR_H_
