// Internal (src/model only): the small vocabulary of the hand-written CPU kernels
// (cpu_attention.cc). Pipeline stage: forward.
//
// The kernels are written with GCC/Clang vector extensions (VF: 16 floats): compiled for
// AVX-512 a VF is one register, for AVX2 two, for the x86-64 baseline four SSE registers,
// elsewhere whatever the target has. On x86-64 each kernel body is compiled three times
// (ES_TARGET_AVX512, ES_TARGET_AVX2, no attribute) and the caller picks the first one this
// CPU supports with CpuHasAvx512() / CpuHasAvx2(): by feature, not by CPU model, so AMD's
// AVX-512 cores get the AVX-512 code (GCC's target_clones("arch=...") would not).
// Everything here is ES_INLINE, so it compiles into each variant with that variant's
// instruction set. Math is fp32 throughout; bf16 is widened on load and rounded to
// nearest-even on store.
//
// Thread-safety: pure functions.
#ifndef EMBEDSERVE_SRC_MODEL_CPU_VECTOR_H_
#define EMBEDSERVE_SRC_MODEL_CPU_VECTOR_H_

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__)
#define ES_X86_DISPATCH 1
#define ES_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")))
#define ES_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif
#define ES_INLINE inline __attribute__((always_inline))

// VF values only cross always-inlined helpers, never a real call, so the note that
// passing them changes the ABI without AVX-512 does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace embedserve {
namespace internal_model {
namespace cpu_vector {

constexpr int64_t kLanes = 16;
typedef float VF __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t VI __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline bool CpuHasAvx512() {
#ifdef ES_X86_DISPATCH
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("fma");
#else
  return false;
#endif
}
inline bool CpuHasAvx2() {
#ifdef ES_X86_DISPATCH
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

template <typename To, typename From>
ES_INLINE To BitCast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "BitCast needs equal sizes");
  To to;
  std::memcpy(&to, &from, sizeof to);
  return to;
}

ES_INLINE VF Load(const float* p) {
  VF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
ES_INLINE void Store(float* p, VF v) { std::memcpy(p, &v, sizeof v); }

ES_INLINE float Widen(float x) { return x; }
// The same as c10's BFloat16 -> float, but always inlined into each instruction-set
// variant: with c10's operator float the packed attention ran ~4% slower at 32 x 32..128
// tokens (attention_bench, 1 thread, two alternated runs).
ES_INLINE float Widen(c10::BFloat16 x) {
  return BitCast<float>(static_cast<uint32_t>(x.x) << 16);
}
ES_INLINE void StoreScalar(float x, float* out) { *out = x; }
ES_INLINE void StoreScalar(float x, c10::BFloat16* out) {
  *out = c10::BFloat16(x);  // round to nearest even, NaN kept
}

ES_INLINE float HorizontalMax(VF v) {
  float m = v[0];
  for (int w = 1; w < kLanes; ++w) m = std::max(m, v[w]);
  return m;
}
ES_INLINE float HorizontalSum(VF v) {
  float s = 0.0f;
  for (int w = 0; w < kLanes; ++w) s += v[w];
  return s;
}

// e^x for x <= 0, Cephes' polynomial as in ATen's vectorised exp; relative error ~1e-7.
// Rounds to the nearest integer with the 1.5 * 2^23 trick. Below -87 it returns e^-87.
ES_INLINE VF ExpNonPositive(VF x) {
  const VF lowest = VF{} - 87.0f;
  x = x < lowest ? lowest : x;
  const VF magic = VF{} + 12582912.0f;
  const VF n = (x * 1.44269504088896341f + magic) - magic;  // round(x / ln 2)
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  const VF z = x * x;
  VF y = VF{} + 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;  // 2^n
  return y * BitCast<VF>(bits);
}

// GELU with the exact erf form, 0.5 x (1 + erf(x / sqrt 2)), as at::gelu(x, "none").
// erf from Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7): for z >= 0,
// erf(z) = 1 - P(t) e^(-z^2), t = 1 / (1 + 0.3275911 z). 1 + erf(z) is formed as
// 2 - P e^(-z^2) for z >= 0 and P e^(-z^2) for z < 0, so large negative inputs keep
// their (tiny) relative precision instead of cancelling to 0.
ES_INLINE VF GeluErf(VF x) {
  const VF z = x * 0.70710678118654752f;
  const VF a = z < 0.0f ? -z : z;
  const VF t = 1.0f / (a * 0.3275911f + 1.0f);
  VF p = VF{} + 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  p = p * t;
  const VF tail = p * ExpNonPositive(-(a * a));  // 1 - erf(|z|)
  const VF one_plus_erf = z < 0.0f ? tail : 2.0f - tail;
  return 0.5f * x * one_plus_erf;
}

// GELU's tanh form, 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), as
// at::gelu(x, "tanh"): 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)), computed with
// e = e^(-2|u|) <= 1 as 1 / (1 + e) for u >= 0 and e / (1 + e) for u < 0.
ES_INLINE VF GeluTanh(VF x) {
  const VF u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  const VF au = u < 0.0f ? -u : u;
  const VF e = ExpNonPositive(-2.0f * au);
  const VF num = u < 0.0f ? e : VF{} + 1.0f;
  return x * num / (1.0f + e);
}

ES_INLINE VF Relu(VF x) { return x > 0.0f ? x : VF{}; }

}  // namespace cpu_vector
}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_CPU_VECTOR_H_
