#include "tuned_gemm.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <memory>
#include <type_traits>

namespace embedserve {
namespace internal_model {
namespace {

void CheckLt(cublasStatus_t s, const char* what) {
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt ", what, " failed: ", static_cast<int>(s));
}

void CheckCuda(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, what, ": ", cudaGetErrorString(e));
}

cublasLtEpilogue_t LtEpilogue(TunedGemm::Epilogue e) {
  switch (e) {
    case TunedGemm::Epilogue::kBias: return CUBLASLT_EPILOGUE_BIAS;
    case TunedGemm::Epilogue::kBiasGeluTanh: return CUBLASLT_EPILOGUE_GELU_BIAS;
    case TunedGemm::Epilogue::kBiasRelu: return CUBLASLT_EPILOGUE_RELU_BIAS;
    case TunedGemm::Epilogue::kNone: break;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

const char* EpilogueName(TunedGemm::Epilogue e) {
  switch (e) {
    case TunedGemm::Epilogue::kBias: return "bias";
    case TunedGemm::Epilogue::kBiasGeluTanh: return "bias+gelu";
    case TunedGemm::Epilogue::kBiasRelu: return "bias+relu";
    case TunedGemm::Epilogue::kNone: break;
  }
  return "none";
}

// The descriptors of one call, destroyed with it. Row-major y[M, N] = x[M, K] W[N, K]^T
// is column-major D[N, M] = op(A) B with A = W (stored as a K x N column-major matrix,
// transposed: op(A) is N x K) and B = x (K x M column-major, not transposed); the bias
// (length N) is per row of D, which is what cuBLASLt's bias epilogue adds.
class LtCall {
 public:
  LtCall(cudaDataType_t type, int64_t m, int64_t n, int64_t k, TunedGemm::Epilogue epilogue,
         const void* bias) {
    CheckLt(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CheckLt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
            "TRANSA");
    CheckLt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
            "TRANSB");
    const cublasLtEpilogue_t epi = LtEpilogue(epilogue);
    CheckLt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)),
            "EPILOGUE");
    if (epilogue != TunedGemm::Epilogue::kNone) {
      CheckLt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                             sizeof(bias)),
              "BIAS_POINTER");
    }
    CheckLt(cublasLtMatrixLayoutCreate(&a_, type, k, n, k), "layout A");
    CheckLt(cublasLtMatrixLayoutCreate(&b_, type, k, m, k), "layout B");
    CheckLt(cublasLtMatrixLayoutCreate(&d_, type, n, m, n), "layout D");
  }
  ~LtCall() {
    if (d_ != nullptr) cublasLtMatrixLayoutDestroy(d_);
    if (b_ != nullptr) cublasLtMatrixLayoutDestroy(b_);
    if (a_ != nullptr) cublasLtMatrixLayoutDestroy(a_);
    if (desc_ != nullptr) cublasLtMatmulDescDestroy(desc_);
  }
  LtCall(const LtCall&) = delete;
  LtCall& operator=(const LtCall&) = delete;

  cublasStatus_t Matmul(cublasLtHandle_t handle, const cublasLtMatmulAlgo_t* algo, const void* w,
                        const void* x, void* y, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream) const {
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(handle, desc_, &alpha, w, a_, x, b_, &beta, y, d_, y, d_, algo,
                          workspace, workspace_bytes, stream);
  }
  cublasLtMatmulDesc_t desc() const { return desc_; }
  cublasLtMatrixLayout_t a() const { return a_; }
  cublasLtMatrixLayout_t b() const { return b_; }
  cublasLtMatrixLayout_t d() const { return d_; }

 private:
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, d_ = nullptr;
};

// Every pointer we hand cuBLASLt is 16-byte aligned (Run checks): the heuristic is told so.
constexpr uint32_t kAlignment = 16;

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlignment == 0; }

}  // namespace

struct TunedGemm::Entry {
  int64_t m = 0, n = 0, k = 0;
  Epilogue epilogue = Epilogue::kNone;
  cublasLtMatmulAlgo_t algo{};
};

TunedGemm::~TunedGemm() = default;

std::unique_ptr<TunedGemm> TunedGemm::Create(const std::vector<Shape>& shapes,
                                             torch::ScalarType dtype, torch::Device device,
                                             const Options& options) {
  TORCH_CHECK(device.is_cuda(), "TunedGemm needs a CUDA device");
  TORCH_CHECK(dtype == torch::kHalf || dtype == torch::kBFloat16,
              "TunedGemm tunes fp16 and bf16 only, got ", dtype);
  const c10::cuda::CUDAGuard guard(device);
  std::unique_ptr<TunedGemm> t(new TunedGemm());
  t->dtype_ = dtype;
  t->options_ = options;
  const cudaDataType_t type = dtype == torch::kHalf ? CUDA_R_16F : CUDA_R_16BF;
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  void* workspace = at::cuda::getCUDABlasLtWorkspace();
  const uint64_t workspace_bytes = at::cuda::getCUDABlasLtWorkspaceSize();

  cublasLtMatmulPreference_t pref = nullptr;
  CheckLt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                  cublasStatus_t (*)(cublasLtMatmulPreference_t)>
      pref_owner(pref, cublasLtMatmulPreferenceDestroy);
  CheckLt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                               &workspace_bytes, sizeof(workspace_bytes)),
          "PREF_MAX_WORKSPACE_BYTES");
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    CheckLt(cublasLtMatmulPreferenceSetAttribute(pref, attr, &kAlignment, sizeof(kAlignment)),
            "PREF_MIN_ALIGNMENT");
  }

  cudaEvent_t start = nullptr, stop = nullptr;
  CheckCuda(cudaEventCreate(&start), "cudaEventCreate");
  CheckCuda(cudaEventCreate(&stop), "cudaEventCreate");
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  std::vector<cublasLtMatmulHeuristicResult_t> found(std::max(1, options.candidates));
  for (const Shape& s : shapes) {
    // Random data (never zeros: they run faster than real data); one x buffer of the
    // largest M, its leading rows for the smaller ones.
    const torch::Tensor x = torch::randn({options.max_tokens, s.k}, opts);
    const torch::Tensor w = torch::randn({s.n, s.k}, opts).mul_(0.05);
    const torch::Tensor bias = torch::randn({s.n}, opts);
    const torch::Tensor y = torch::empty({options.max_tokens, s.n}, opts);
    for (int64_t m = options.min_tokens; m <= options.max_tokens; m *= 2) {
      const LtCall call(type, m, s.n, s.k, s.epilogue, bias.data_ptr());
      int returned = 0;
      const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
          handle, call.desc(), call.a(), call.b(), call.d(), call.d(), pref,
          static_cast<int>(found.size()), found.data(), &returned);
      if (hs != CUBLAS_STATUS_SUCCESS || returned == 0) continue;  // Run falls back
      float best_us = std::numeric_limits<float>::max(), first_us = 0;
      int best = -1, timed = 0;
      for (int i = 0; i < returned; ++i) {
        if (found[i].state != CUBLAS_STATUS_SUCCESS) continue;
        auto run = [&] {
          return call.Matmul(handle, &found[i].algo, w.data_ptr(), x.data_ptr(), y.data_ptr(),
                             workspace, workspace_bytes, stream);
        };
        bool ok = true;
        for (int r = 0; r < 3 && ok; ++r) ok = run() == CUBLAS_STATUS_SUCCESS;
        if (!ok) continue;
        CheckCuda(cudaEventRecord(start, stream), "cudaEventRecord");
        for (int r = 0; r < options.timed_calls; ++r) run();
        CheckCuda(cudaEventRecord(stop, stream), "cudaEventRecord");
        CheckCuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0;
        CheckCuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        const float us = 1000.0f * ms / static_cast<float>(options.timed_calls);
        if (timed++ == 0) first_us = us;
        if (us < best_us) {
          best_us = us;
          best = i;
        }
      }
      if (best < 0) continue;
      auto e = std::make_unique<Entry>();
      e->m = m;
      e->n = s.n;
      e->k = s.k;
      e->epilogue = s.epilogue;
      e->algo = found[best].algo;
      t->entries_.push_back(std::move(e));
      char line[200];
      std::snprintf(line, sizeof(line),
                    "gemm %ld x %ld -> %ld (%s): heuristic first %.1f us, kept #%d of %d %.1f us "
                    "(%.0f TFLOP/s)",
                    static_cast<long>(m), static_cast<long>(s.k), static_cast<long>(s.n),
                    EpilogueName(s.epilogue), first_us, best, returned, best_us,
                    2.0 * m * s.n * s.k / (best_us * 1e-6) / 1e12);
      t->report_.emplace_back(line);
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  CheckCuda(cudaGetLastError(), "TunedGemm::Create");
  if (t->entries_.empty()) return nullptr;
  return t;
}

const TunedGemm::Entry* TunedGemm::Find(int64_t m, int64_t n, int64_t k,
                                        Epilogue epilogue) const {
  if (m <= 0 || m > options_.max_tokens || 2 * m <= options_.min_tokens) return nullptr;
  int64_t bucket = options_.min_tokens;
  while (bucket < m) bucket *= 2;
  for (const auto& e : entries_) {
    if (e->m == bucket && e->n == n && e->k == k && e->epilogue == epilogue) return e.get();
  }
  return nullptr;
}

torch::Tensor TunedGemm::Run(const torch::Tensor& x, const torch::Tensor& w,
                             const torch::Tensor& bias, Epilogue epilogue) const {
  if (x.dim() != 2 || w.dim() != 2 || x.scalar_type() != dtype_ || w.scalar_type() != dtype_ ||
      !x.is_cuda() || !x.is_contiguous() || !w.is_contiguous() || x.size(1) != w.size(1)) {
    return torch::Tensor();
  }
  const bool with_bias = epilogue != Epilogue::kNone;
  if (with_bias && (!bias.defined() || bias.scalar_type() != dtype_ || !bias.is_contiguous() ||
                    bias.numel() != w.size(0) || !Aligned(bias.data_ptr()))) {
    return torch::Tensor();
  }
  const int64_t m = x.size(0), n = w.size(0), k = x.size(1);
  const Entry* e = Find(m, n, k, epilogue);
  if (e == nullptr || !Aligned(x.data_ptr()) || !Aligned(w.data_ptr())) return torch::Tensor();
  torch::Tensor y = torch::empty({m, n}, x.options());
  const cudaDataType_t type = dtype_ == torch::kHalf ? CUDA_R_16F : CUDA_R_16BF;
  const LtCall call(type, m, n, k, epilogue, with_bias ? bias.data_ptr() : nullptr);
  const cublasStatus_t s =
      call.Matmul(at::cuda::getCurrentCUDABlasLtHandle(), &e->algo, w.data_ptr(), x.data_ptr(),
                  y.data_ptr(), at::cuda::getCUDABlasLtWorkspace(),
                  at::cuda::getCUDABlasLtWorkspaceSize(),
                  c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  if (s != CUBLAS_STATUS_SUCCESS) return torch::Tensor();
  return y;
}

}  // namespace internal_model
}  // namespace embedserve
