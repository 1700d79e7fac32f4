#include "cpu_int8_linear.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include <ATen/Parallel.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "absl/strings/str_cat.h"
#include "cpu_vector.h"

namespace embedserve {
namespace internal_model {
namespace {

using dt = dnnl::memory::data_type;

namespace cv = cpu_vector;

// The row kernels are written for vectors of any width V (cv::VF on AVX-512, VF8 on
// AVX2, VF4 elsewhere: one register each, cpu_vector.h).

// Row r of x as lo + scale * q, q in 0..255 (nearest level). Returns {scale, lo}.
template <typename V>
ES_INLINE void QuantizeRowBody(const float* x, int64_t k, uint8_t* q, float* params) {
  constexpr int64_t kW = cv::kLanesOf<V>;
  using I = cv::IntOf<V>;
  float lo = x[0], hi = x[0];
  int64_t c = 0;
  if (k >= kW) {
    V vlo = cv::Load<V>(x), vhi = vlo;
    for (c = kW; c + kW <= k; c += kW) {
      const V v = cv::Load<V>(x + c);
      vlo = v < vlo ? v : vlo;
      vhi = v > vhi ? v : vhi;
    }
    lo = -cv::HorizontalMax(-vlo);
    hi = cv::HorizontalMax(vhi);
  }
  for (; c < k; ++c) {
    lo = std::min(lo, x[c]);
    hi = std::max(hi, x[c]);
  }
  const float scale = hi > lo ? (hi - lo) / 255.0f : 1.0f;
  const float inv = 1.0f / scale;
  params[0] = scale;
  params[1] = lo;
  for (c = 0; c + kW <= k; c += kW) {
    // x - lo >= 0, so truncating x + 0.5 rounds to nearest (ties up).
    I i = __builtin_convertvector((cv::Load<V>(x + c) - lo) * inv + 0.5f, I);
    i = i > 255 ? 255 : i;
    const typename cv::Lanes<kW>::Bytes b =
        __builtin_convertvector(i, typename cv::Lanes<kW>::Bytes);
    std::memcpy(q + c, &b, sizeof b);
  }
  for (; c < k; ++c) {
    q[c] = static_cast<uint8_t>(std::min(255.0f, (x[c] - lo) * inv + 0.5f));
  }
}

// The epilogue of one output value v = acc * scale * ws + (lo * wsum + bias); `prev` is
// what `out` held (the residual, for kBiasAddInto).
template <LinearEpilogue kEpilogue, typename V>
ES_INLINE V Finish(V v, V prev) {
  if constexpr (kEpilogue == LinearEpilogue::kBiasGelu) return cv::GeluErf(v);
  if constexpr (kEpilogue == LinearEpilogue::kBiasGeluTanh) return cv::GeluTanh(v);
  if constexpr (kEpilogue == LinearEpilogue::kBiasRelu) return cv::Relu(v);
  if constexpr (kEpilogue == LinearEpilogue::kBiasAddInto) return v + prev;
  (void)prev;
  return v;
}

// out[c] = epilogue(acc[c] * scale * ws[c] + (lo * wsum[c] + bias[c])).
template <LinearEpilogue kEpilogue, typename V>
ES_INLINE void DequantizeRowBody(const int32_t* acc, int64_t n, const float* params,
                                 const float* ws, const float* wsum, const float* bias,
                                 float* out) {
  constexpr int64_t kW = cv::kLanesOf<V>;
  const float scale = params[0], lo = params[1];
  constexpr bool kReads = kEpilogue == LinearEpilogue::kBiasAddInto;
  int64_t c = 0;
  for (; c + kW <= n; c += kW) {
    cv::IntOf<V> a;
    std::memcpy(&a, acc + c, sizeof a);
    const V v = __builtin_convertvector(a, V) * (cv::Load<V>(ws + c) * scale) +
                (cv::Load<V>(wsum + c) * lo + cv::Load<V>(bias + c));
    cv::Store(out + c, Finish<kEpilogue>(v, kReads ? cv::Load<V>(out + c) : V{}));
  }
  if (c < n) {  // the last n % kW columns through one zero-padded vector
    V v = {}, prev = {};
    for (int64_t i = 0; c + i < n; ++i) {
      v[i] = static_cast<float>(acc[c + i]) * scale * ws[c + i] + lo * wsum[c + i] + bias[c + i];
      if (kReads) prev[i] = out[c + i];
    }
    cv::StorePartial(out + c, Finish<kEpilogue>(v, prev), n - c);
  }
}

using QuantizeRowFn = void (*)(const float*, int64_t, uint8_t*, float*);
using DequantizeRowFn = void (*)(const int32_t*, int64_t, const float*, const float*,
                                 const float*, const float*, float*);

// One copy of each row kernel per instruction set, and for the dequantize one per
// epilogue, each picked once for this CPU.
#define ES_INT8_VARIANT(SUFFIX, ATTRIBUTE, V)                                                   \
  ATTRIBUTE void QuantizeRow##SUFFIX(const float* x, int64_t k, uint8_t* q, float* p) {         \
    QuantizeRowBody<V>(x, k, q, p);                                                             \
  }                                                                                             \
  template <LinearEpilogue kEpilogue>                                                           \
  ATTRIBUTE void DequantizeRow##SUFFIX(const int32_t* a, int64_t n, const float* p,             \
                                       const float* ws, const float* wsum, const float* b,      \
                                       float* o) {                                              \
    DequantizeRowBody<kEpilogue, V>(a, n, p, ws, wsum, b, o);                                   \
  }                                                                                             \
  DequantizeRowFn PickDequantize##SUFFIX(LinearEpilogue e) {                                    \
    switch (e) {                                                                                \
      case LinearEpilogue::kBiasGelu:                                                           \
        return DequantizeRow##SUFFIX<LinearEpilogue::kBiasGelu>;                                \
      case LinearEpilogue::kBiasGeluTanh:                                                       \
        return DequantizeRow##SUFFIX<LinearEpilogue::kBiasGeluTanh>;                            \
      case LinearEpilogue::kBiasRelu:                                                           \
        return DequantizeRow##SUFFIX<LinearEpilogue::kBiasRelu>;                                \
      case LinearEpilogue::kBiasAddInto:                                                        \
        return DequantizeRow##SUFFIX<LinearEpilogue::kBiasAddInto>;                             \
      case LinearEpilogue::kBias:                                                               \
        break;                                                                                  \
    }                                                                                           \
    return DequantizeRow##SUFFIX<LinearEpilogue::kBias>;                                        \
  }

ES_INT8_VARIANT(Base, , cv::VF4)
#ifdef ES_X86_DISPATCH
ES_INT8_VARIANT(Avx2, ES_TARGET_AVX2, cv::VF8)
ES_INT8_VARIANT(Avx512, ES_TARGET_AVX512, cv::VF)
#endif

QuantizeRowFn PickQuantize() {
#ifdef ES_X86_DISPATCH
  if (cv::CpuHasAvx512()) return QuantizeRowAvx512;
  if (cv::CpuHasAvx2()) return QuantizeRowAvx2;
#endif
  return QuantizeRowBase;
}
DequantizeRowFn PickDequantize(LinearEpilogue e) {
#ifdef ES_X86_DISPATCH
  if (cv::CpuHasAvx512()) return PickDequantizeAvx512(e);
  if (cv::CpuHasAvx2()) return PickDequantizeAvx2(e);
#endif
  return PickDequantizeBase(e);
}

const dnnl::engine& Engine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

}  // namespace

struct Int8Linear::Impl {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul matmul;
  dnnl::memory weights;  // s8, in the layout the primitive wants
  DequantizeRowFn dequantize = nullptr;  // for this CPU and the epilogue
};

Int8Linear::~Int8Linear() = default;

bool CpuHasInt8Dot() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Int8Linear>> Int8Linear::Create(const torch::Tensor& weight,
                                                               const torch::Tensor& bias,
                                                               LinearEpilogue epilogue) {
  if (!CpuHasInt8Dot()) {
    return absl::InvalidArgumentError(
        "Int8Linear: this cpu has no VNNI (avx512_vnni or avx_vnni)");
  }
  if (weight.dim() != 2 || weight.scalar_type() != torch::kFloat || !weight.device().is_cpu()) {
    return absl::InvalidArgumentError("Int8Linear: the weight must be a 2-d fp32 CPU tensor");
  }
  const int64_t n = weight.size(0), k = weight.size(1);
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8Linear: the bias must have ", n, " elements"));
  }
  std::unique_ptr<Int8Linear> l(new Int8Linear());
  l->n_ = n;
  l->k_ = k;
  l->epilogue_ = epilogue;
  l->bias_ = bias.defined() ? bias.to(torch::kFloat).contiguous() : torch::zeros({n});
  const torch::Tensor w = weight.contiguous();
  const float levels = 127.0f;
  l->weight_scale_ = torch::empty({n}, torch::kFloat);
  torch::Tensor wq = torch::empty({n, k}, torch::kChar);
  const float* src = w.data_ptr<float>();
  float* scale = l->weight_scale_.data_ptr<float>();
  int8_t* dst = wq.data_ptr<int8_t>();
  l->weight_sum_ = torch::empty({n}, torch::kFloat);
  float* sum = l->weight_sum_.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::abs(src[r * k + c]));
    scale[r] = amax > 0 ? amax / levels : 1.0f;
    const float inv = 1.0f / scale[r];
    int64_t total = 0;
    for (int64_t c = 0; c < k; ++c) {
      dst[r * k + c] = static_cast<int8_t>(std::clamp(std::nearbyint(src[r * k + c] * inv), -levels, levels));
      total += dst[r * k + c];
    }
    sum[r] = static_cast<float>(total) * scale[r];  // sum over k of the dequantized W[r, k]
  }
  try {
    const dnnl::engine& engine = Engine();
    // src [M, K] row-major with M known per call; weights [K, N] (our [N, K] read
    // transposed) in whatever blocked layout the kernel prefers; dst [M, N] int32.
    const dnnl::memory::dims rt = {DNNL_RUNTIME_DIM_VAL, k};
    dnnl::memory::desc src_md(rt, dt::u8, dnnl::memory::dims{k, 1});
    dnnl::memory::desc wei_md({k, n}, dt::s8, dnnl::memory::format_tag::any);
    dnnl::memory::desc dst_md({DNNL_RUNTIME_DIM_VAL, n}, dt::s32, dnnl::memory::dims{n, 1});
    auto impl = std::make_unique<Impl>();
    impl->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md), engine);
    impl->matmul = dnnl::matmul(impl->pd);
    impl->dequantize = PickDequantize(epilogue);
    dnnl::memory::desc user_md({k, n}, dt::s8, dnnl::memory::dims{1, k});
    dnnl::memory user(user_md, engine, wq.data_ptr());
    impl->weights = dnnl::memory(impl->pd.weights_desc(), engine);
    dnnl::stream stream(engine);
    dnnl::reorder(user, impl->weights).execute(stream, user, impl->weights);
    stream.wait();
    l->impl_ = std::move(impl);
  } catch (const dnnl::error& e) {
    return absl::InternalError(
        absl::StrCat("oneDNN has no int8 matmul for this cpu (", e.what(), ")"));
  }
  return l;
}

torch::Tensor Int8Linear::Forward(const torch::Tensor& input, torch::Tensor out) const {
  const torch::Tensor x = input.contiguous();
  const int64_t m = x.size(0), k = k_, n = n_;
  out = LinearOutput(std::move(out), m, n, epilogue_, "Int8Linear");
  // Each row as lo + scale * q with q in 0..255 (asymmetric: GELU outputs, say, span
  // [-0.17, max], which a symmetric code would spend half its levels on).
  static const QuantizeRowFn quantize = PickQuantize();
  const DequantizeRowFn dequantize = impl_->dequantize;
  torch::Tensor xq = torch::empty({m, k}, torch::kByte);
  torch::Tensor row_params = torch::empty({m, 2}, torch::kFloat);  // scale, lo
  const float* xs = x.data_ptr<float>();
  uint8_t* xd = xq.data_ptr<uint8_t>();
  float* rp = row_params.data_ptr<float>();
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) quantize(xs + r * k, k, xd + r * k, rp + 2 * r);
  });
  torch::Tensor acc = torch::empty({m, n}, torch::kInt);
  const dnnl::engine& engine = Engine();
  dnnl::memory src({{m, k}, dt::u8, dnnl::memory::dims{k, 1}}, engine, xq.data_ptr());
  dnnl::memory dst({{m, n}, dt::s32, dnnl::memory::dims{n, 1}}, engine, acc.data_ptr());
  dnnl::stream stream(engine);
  impl_->matmul.execute(stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, impl_->weights},
                                 {DNNL_ARG_DST, dst}});
  stream.wait();
  const int32_t* a = acc.data_ptr<int32_t>();
  const float* ws = weight_scale_.data_ptr<float>();
  const float* wsum = weight_sum_.data_ptr<float>();
  const float* bias = bias_.data_ptr<float>();
  float* o = out.data_ptr<float>();
  // x W^T = sum_k (lo + s q_k) W[n, k] = s * sw[n] * acc[n] + lo * sum_k W[n, k].
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      dequantize(a + r * n, n, rp + 2 * r, ws, wsum, bias, o + r * n);
    }
  });
  return out;
}

}  // namespace internal_model
}  // namespace embedserve
