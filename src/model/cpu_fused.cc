#include "cpu_fused.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "cpu_vector.h"

namespace embedserve {
namespace internal_model {
namespace {

using namespace cpu_vector;  // NOLINT: the kernel vocabulary of cpu_vector.h

// Rows per task so that a task has about this many floats: below it a call runs on the
// calling thread (a fork/join costs more than a LayerNorm of a few dozen rows).
constexpr int64_t kFloatsPerTask = 32768;

int64_t RowGrain(int64_t n) { return std::max<int64_t>(1, kFloatsPerTask / std::max<int64_t>(1, n)); }

// The bodies below are written for vectors of any width V (VF on AVX-512, VF8 on AVX2,
// VF4 elsewhere: one register each, cpu_vector.h).

// y = LayerNorm(x) * g + b over one row of n floats; x and y may alias.
template <typename V>
ES_INLINE void LayerNormRowBody(const float* x, int64_t n, const float* g, const float* b,
                                float eps, float* y) {
  constexpr int64_t kW = kLanesOf<V>;
  const int64_t full = n / kW * kW, rest = n - full;
  V s = {};
  for (int64_t c = 0; c < full; c += kW) s += Load<V>(x + c);
  if (rest) s += LoadPartial<V>(x + full, rest);
  const float mean = HorizontalSum(s) / static_cast<float>(n);
  V q = {};
  for (int64_t c = 0; c < full; c += kW) {
    const V d = Load<V>(x + c) - mean;
    q += d * d;
  }
  if (rest) {
    V d = LoadPartial<V>(x + full, rest) - mean;
    for (int64_t i = rest; i < kW; ++i) d[i] = 0.0f;
    q += d * d;
  }
  const float rstd = 1.0f / std::sqrt(HorizontalSum(q) / static_cast<float>(n) + eps);
  for (int64_t c = 0; c < full; c += kW) {
    Store(y + c, (Load<V>(x + c) - mean) * rstd * Load<V>(g + c) + Load<V>(b + c));
  }
  if (rest) {
    StorePartial(y + full,
                 (LoadPartial<V>(x + full, rest) - mean) * rstd *
                         LoadPartial<V>(g + full, rest) +
                     LoadPartial<V>(b + full, rest),
                 rest);
  }
}

template <typename V>
ES_INLINE void LayerNormRowsBody(float* x, int64_t begin, int64_t end, int64_t n,
                                 const float* g, const float* b, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    LayerNormRowBody<V>(x + r * n, n, g, b, eps, x + r * n);
  }
}

template <typename V>
ES_INLINE void EmbedRowsBody(const float* word, const float* pos, const int64_t* ids,
                             const int64_t* positions, int64_t begin, int64_t end, int64_t n,
                             const float* g, const float* b, float eps, float* out) {
  constexpr int64_t kW = kLanesOf<V>;
  for (int64_t r = begin; r < end; ++r) {
    const float* w = word + ids[r] * n;
    const float* p = pos + positions[r] * n;
    float* y = out + r * n;
    const int64_t full = n / kW * kW;
    for (int64_t c = 0; c < full; c += kW) Store(y + c, Load<V>(w + c) + Load<V>(p + c));
    for (int64_t c = full; c < n; ++c) y[c] = w[c] + p[c];
    LayerNormRowBody<V>(y, n, g, b, eps, y);
  }
}

template <typename V>
ES_INLINE void GeluBody(float* x, int64_t count, bool tanh) {
  constexpr int64_t kW = kLanesOf<V>;
  const int64_t full = count / kW * kW, rest = count - full;
  if (tanh) {
    for (int64_t c = 0; c < full; c += kW) Store(x + c, GeluTanh(Load<V>(x + c)));
    if (rest) StorePartial(x + full, GeluTanh(LoadPartial<V>(x + full, rest)), rest);
  } else {
    for (int64_t c = 0; c < full; c += kW) Store(x + c, GeluErf(Load<V>(x + c)));
    if (rest) StorePartial(x + full, GeluErf(LoadPartial<V>(x + full, rest)), rest);
  }
}

// Rows [begin, end) of x [rows, n]: x = gelu_erf(x + b).
template <typename V>
ES_INLINE void BiasGeluRowsBody(float* x, int64_t begin, int64_t end, int64_t n, const float* b) {
  constexpr int64_t kW = kLanesOf<V>;
  const int64_t full = n / kW * kW, rest = n - full;
  for (int64_t r = begin; r < end; ++r) {
    float* y = x + r * n;
    for (int64_t c = 0; c < full; c += kW) {
      Store(y + c, GeluErf(Load<V>(y + c) + Load<V>(b + c)));
    }
    if (rest) {
      StorePartial(y + full,
                   GeluErf(LoadPartial<V>(y + full, rest) + LoadPartial<V>(b + full, rest)),
                   rest);
    }
  }
}

using LayerNormRowsFn = void (*)(float*, int64_t, int64_t, int64_t, const float*, const float*,
                                 float);
using EmbedRowsFn = void (*)(const float*, const float*, const int64_t*, const int64_t*, int64_t,
                             int64_t, int64_t, const float*, const float*, float, float*);
using GeluFn = void (*)(float*, int64_t, bool);
using BiasGeluRowsFn = void (*)(float*, int64_t, int64_t, int64_t, const float*);

#define ES_FUSED_VARIANT(SUFFIX, ATTRIBUTE, V)                                                  \
  ATTRIBUTE void LayerNormRows##SUFFIX(float* x, int64_t begin, int64_t end, int64_t n,         \
                                       const float* g, const float* b, float eps) {             \
    LayerNormRowsBody<V>(x, begin, end, n, g, b, eps);                                          \
  }                                                                                             \
  ATTRIBUTE void EmbedRows##SUFFIX(const float* word, const float* pos, const int64_t* ids,     \
                                   const int64_t* positions, int64_t begin, int64_t end,        \
                                   int64_t n, const float* g, const float* b, float eps,        \
                                   float* out) {                                                \
    EmbedRowsBody<V>(word, pos, ids, positions, begin, end, n, g, b, eps, out);                 \
  }                                                                                             \
  ATTRIBUTE void Gelu##SUFFIX(float* x, int64_t count, bool tanh) {                             \
    GeluBody<V>(x, count, tanh);                                                                \
  }                                                                                             \
  ATTRIBUTE void BiasGeluRows##SUFFIX(float* x, int64_t begin, int64_t end, int64_t n,          \
                                      const float* b) {                                         \
    BiasGeluRowsBody<V>(x, begin, end, n, b);                                                   \
  }

ES_FUSED_VARIANT(Baseline, , VF4)
#ifdef ES_X86_DISPATCH
ES_FUSED_VARIANT(Avx2, ES_TARGET_AVX2, VF8)
ES_FUSED_VARIANT(Avx512, ES_TARGET_AVX512, VF)
#endif

struct FusedKernels {
  LayerNormRowsFn layer_norm = LayerNormRowsBaseline;
  EmbedRowsFn embed = EmbedRowsBaseline;
  GeluFn gelu = GeluBaseline;
  BiasGeluRowsFn bias_gelu = BiasGeluRowsBaseline;
};

const FusedKernels& Kernels() {
  static const FusedKernels kernels = [] {
    FusedKernels k;
#ifdef ES_X86_DISPATCH
    if (CpuHasAvx512()) {
      k = {LayerNormRowsAvx512, EmbedRowsAvx512, GeluAvx512, BiasGeluRowsAvx512};
    } else if (CpuHasAvx2()) {
      k = {LayerNormRowsAvx2, EmbedRowsAvx2, GeluAvx2, BiasGeluRowsAvx2};
    }
#endif
    return k;
  }();
  return kernels;
}

void CheckVector(const torch::Tensor& t, int64_t n, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() &&
                  t.dim() == 1 && t.size(0) == n,
              what, " must be a contiguous fp32 CPU vector of ", n, " elements");
}

}  // namespace

torch::Tensor LinearOutput(torch::Tensor out, int64_t m, int64_t n, LinearEpilogue epilogue,
                           const char* layer) {
  if (!out.defined() && epilogue != LinearEpilogue::kBiasAddInto) {
    return torch::empty({m, n}, torch::kFloat);
  }
  TORCH_CHECK(out.defined() && out.device().is_cpu() && out.scalar_type() == torch::kFloat &&
                  out.is_contiguous() && out.dim() == 2 && out.size(0) == m && out.size(1) == n,
              layer, ": ",
              epilogue == LinearEpilogue::kBiasAddInto ? "kBiasAddInto needs a residual"
                                                       : "the output must be",
              " contiguous fp32 CPU [", m, ", ", n, "]");
  return out;
}

void LayerNormInPlaceCpu(torch::Tensor& x, const torch::Tensor& gamma, const torch::Tensor& beta,
                         double eps) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.is_contiguous() &&
                  x.dim() == 2,
              "LayerNormInPlaceCpu: x must be a contiguous fp32 CPU matrix");
  const int64_t rows = x.size(0), n = x.size(1);
  CheckVector(gamma, n, "LayerNormInPlaceCpu: gamma");
  CheckVector(beta, n, "LayerNormInPlaceCpu: beta");
  if (rows == 0 || n == 0) return;
  float* px = x.data_ptr<float>();
  const float* g = gamma.data_ptr<float>();
  const float* b = beta.data_ptr<float>();
  const LayerNormRowsFn fn = Kernels().layer_norm;
  const float feps = static_cast<float>(eps);
  at::parallel_for(0, rows, RowGrain(n), [&](int64_t begin, int64_t end) {
    fn(px, begin, end, n, g, b, feps);
  });
}

torch::Tensor EmbedLayerNormCpu(const torch::Tensor& word, const torch::Tensor& pos,
                                const torch::Tensor& ids, const torch::Tensor& positions,
                                const torch::Tensor& gamma, const torch::Tensor& beta,
                                double eps) {
  auto matrix = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() &&
           t.dim() == 2;
  };
  TORCH_CHECK(matrix(word) && matrix(pos) && word.size(1) == pos.size(1),
              "EmbedLayerNormCpu: word and pos must be contiguous fp32 CPU matrices of one width");
  auto index = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kLong && t.is_contiguous() &&
           t.dim() == 1;
  };
  TORCH_CHECK(index(ids) && index(positions) && ids.numel() == positions.numel(),
              "EmbedLayerNormCpu: ids and positions must be int64 CPU vectors of one size");
  const int64_t rows = ids.numel(), n = word.size(1);
  CheckVector(gamma, n, "EmbedLayerNormCpu: gamma");
  CheckVector(beta, n, "EmbedLayerNormCpu: beta");
  const int64_t* pi = ids.data_ptr<int64_t>();
  const int64_t* pp = positions.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(pi[r] >= 0 && pi[r] < word.size(0), "EmbedLayerNormCpu: id ", pi[r],
                " of row ", r, " is outside [0, ", word.size(0), ")");
    TORCH_CHECK(pp[r] >= 0 && pp[r] < pos.size(0), "EmbedLayerNormCpu: position ", pp[r],
                " of row ", r, " is outside [0, ", pos.size(0), ")");
  }
  torch::Tensor out = torch::empty({rows, n}, word.options());
  if (rows == 0 || n == 0) return out;
  const EmbedRowsFn fn = Kernels().embed;
  const float* w = word.data_ptr<float>();
  const float* p = pos.data_ptr<float>();
  const float* g = gamma.data_ptr<float>();
  const float* b = beta.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float feps = static_cast<float>(eps);
  at::parallel_for(0, rows, RowGrain(n), [&](int64_t begin, int64_t end) {
    fn(w, p, pi, pp, begin, end, n, g, b, feps, o);
  });
  return out;
}

void GeluInPlaceCpu(torch::Tensor& x, bool tanh) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.is_contiguous(),
              "GeluInPlaceCpu: x must be a contiguous fp32 CPU tensor");
  const int64_t count = x.numel();
  float* p = x.data_ptr<float>();
  const GeluFn fn = Kernels().gelu;
  at::parallel_for(0, count, kFloatsPerTask, [&](int64_t begin, int64_t end) {
    fn(p + begin, end - begin, tanh);
  });
}

void BiasGeluInPlaceCpu(torch::Tensor& x, const torch::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.is_contiguous() &&
                  x.dim() == 2,
              "BiasGeluInPlaceCpu: x must be a contiguous fp32 CPU matrix");
  const int64_t rows = x.size(0), n = x.size(1);
  CheckVector(bias, n, "bias");
  float* p = x.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  const BiasGeluRowsFn fn = Kernels().bias_gelu;
  at::parallel_for(0, rows, RowGrain(n), [&](int64_t begin, int64_t end) {
    fn(p, begin, end, n, b);
  });
}

}  // namespace internal_model
}  // namespace embedserve
