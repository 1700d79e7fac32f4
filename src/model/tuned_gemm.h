// The CUDA forward's linear layers through cuBLASLt with an algorithm timed once per
// shape at load, instead of the one cuBLAS's heuristic picks per call.
// Compiled only in the GPU build (src/model/CMakeLists.txt, EMBEDSERVE_CUDA_KERNELS).
// Thread-safety: Create is not thread-safe (call it before any forward); Run is const and
// safe to call from any thread (the tuned table is immutable after Create).
//
// Why: at 16,384 tokens the model's four GEMM shapes ([M, 384] x [384, 1152 | 384 | 1536]
// and [M, 1536] x [1536, 384], M = tokens) ran at 182-392 TFLOP/s through cuBLAS against
// 707 at 8192^3 (docs/results/gpu-h200/bounds.md): with K = 384 the per-call choice of
// tile, cluster and split is what decides, so we time the heuristic's candidates on the
// real shapes and keep the fastest.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace embedserve {
namespace internal_model {

class TunedGemm {
 public:
  // What cuBLASLt's epilogue adds to x W^T. kBiasGeluTanh is the tanh-approximated GELU
  // (cuBLASLt has no erf form), the same epilogue at::_addmm_activation uses.
  enum class Epilogue { kNone, kBias, kBiasGeluTanh, kBiasRelu };

  struct Shape {
    int64_t n = 0;  // output features (rows of W)
    int64_t k = 0;  // input features
    Epilogue epilogue = Epilogue::kNone;
  };

  struct Options {
    // Token counts M tuned, powers of two: a call with M tokens uses the algorithm of the
    // smallest tuned M >= it (an algorithm valid at M_b is valid at fewer rows: same
    // alignment, no more workspace). Calls past the largest, or below the smallest / 2,
    // return an undefined tensor (the caller's ATen path).
    int64_t min_tokens = 512;
    int64_t max_tokens = 32768;
    // Candidates asked of cublasLtMatmulAlgoGetHeuristic per shape and M.
    int candidates = 16;
    // Back-to-back timed calls per candidate (after 3 untimed), CUDA events.
    int timed_calls = 20;
  };

  // Times the candidates for every shape in `shapes` (fp16 or bf16 `dtype`) on random
  // data on `device` (the current CUDA device and stream) and keeps the fastest. Returns
  // null when cuBLASLt offers nothing (the caller then keeps its ATen path). LibTorch
  // and cuBLAS errors throw c10::Error.
  static std::unique_ptr<TunedGemm> Create(const std::vector<Shape>& shapes,
                                           torch::ScalarType dtype, torch::Device device,
                                           const Options& options);

  // epilogue(x W^T + bias) as a new [M, N] tensor of x's dtype, with the algorithm tuned
  // for (N, K, epilogue) at M's bucket. x: [M, K] contiguous; w: [N, K] contiguous; bias
  // [N] (ignored for kNone). Returns an undefined tensor when nothing was tuned for this
  // call (shape, M range, dtype, alignment) or cuBLASLt refuses it: the caller then runs
  // its ATen op. Safe during CUDA graph capture (no sync, no allocation beyond the output).
  torch::Tensor Run(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                    Epilogue epilogue) const;

  // One line per tuned (shape, M): the heuristic's first choice and the kept one, in us.
  const std::vector<std::string>& Report() const { return report_; }

  TunedGemm(const TunedGemm&) = delete;
  TunedGemm& operator=(const TunedGemm&) = delete;
  ~TunedGemm();

  // Implementation details below.
 private:
  struct Entry;  // one (shape, M bucket) and its algorithm (tuned_gemm.cc)
  TunedGemm() = default;
  const Entry* Find(int64_t m, int64_t n, int64_t k, Epilogue epilogue) const;

  torch::ScalarType dtype_ = torch::kHalf;
  Options options_;
  std::vector<std::unique_ptr<Entry>> entries_;
  std::vector<std::string> report_;
};

}  // namespace internal_model
}  // namespace embedserve
