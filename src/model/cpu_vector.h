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

// |x|, and min / max against a constant, with arithmetic only. A compare of two VFs (16
// lanes) is one instruction with AVX-512, but where the target has no 16-lane masks (AVX2,
// the baseline) GCC turns `a < b ? c : d` into scalar code: GeluErf with two such selects
// took 1,654 us for 448 x 1536 floats on AVX2 against 337 us with these (one Zen 5 core,
// scratch benchmark). MinC / MaxC are exact up to one rounding of x + c and of |x - c|
// (absolute error <= ulp(|c| + |x|)).
ES_INLINE VF Abs(VF x) { return BitCast<VF>(BitCast<VI>(x) & 0x7fffffff); }
ES_INLINE VF MinC(VF x, float c) { return 0.5f * (x + c - Abs(x - c)); }
ES_INLINE VF MaxC(VF x, float c) { return 0.5f * (x + c + Abs(x - c)); }

// erf(z) as z P(z^2) / Q(z^2), P and Q of degree 5, on z clamped to [-4, 4] (beyond it
// erf is +-1 in fp32; at +-4 the quotient is +-1 or just past it in fp32). The
// coefficients are a weighted least-squares fit of this form to erf on [0, 4]
// (scripts/fit_erf.py): absolute error <= 2.2e-8 in exact arithmetic, <= 4e-7 evaluated
// in fp32 (the clamp's rounding included). No exp: GeluErf over 448 x 1536 floats takes
// 173 us on one Zen 5 core with AVX-512 against 204 us with Abramowitz & Stegun's 7.1.26,
// which this replaced (AVX2: 337 against 3,603 us).
ES_INLINE VF ErfRational(VF z) {
  z = MaxC(MinC(z, 4.0f), -4.0f);
  const VF t = z * z;
  VF p = VF{} + 1.9746314592e-6f;
  p = p * t + 2.8801581357e-4f;
  p = p * t + 4.0033590049e-3f;
  p = p * t + 5.3466629237e-2f;
  p = p * t + 1.9624495506e-1f;
  p = p * t + 1.1283789873e+0f;
  VF q = VF{} + 3.7477409933e-5f;
  q = q * t + 1.2162522180e-3f;
  q = q * t + 1.5443900600e-2f;
  q = q * t + 1.1647446454e-1f;
  q = q * t + 5.0724869967e-1f;
  q = q * t + 1.0f;
  return z * p / q;
}

// GELU with the exact erf form, 0.5 x (1 + erf(x / sqrt 2)), as at::gelu(x, "none"),
// with ErfRational: absolute error <= 2e-7 |x| + 1e-6. 1 + erf is taken down by 1.2e-7
// (two ulps of 1) and kept >= 0: where the clamp left z a rounding above -4 (a large
// negative x), 1 + erf would otherwise be an ulp above 0 and GELU that ulp times x (for
// x = -1e4, -3e-4 instead of 0); the shift costs at most 6e-8 |x|. Large negative inputs
// give -0, never a sign flip or NaN.
ES_INLINE VF GeluErf(VF x) {
  const VF one_plus_erf = 1.0f + ErfRational(x * 0.70710678118654752f);
  return 0.5f * x * MaxC(one_plus_erf - 1.2e-7f, 0.0f);
}

// GELU's tanh form, 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), as
// at::gelu(x, "tanh"): 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)), computed with
// e = e^(-2|u|) <= 1 as 1 / (1 + e) for u >= 0 and e / (1 + e) for u < 0.
ES_INLINE VF GeluTanh(VF x) {
  const VF u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  const VF au = Abs(u);
  const VF e = ExpNonPositive(-2.0f * au);
  const VF num = u < 0.0f ? e : VF{} + 1.0f;
  return x * num / (1.0f + e);
}

ES_INLINE VF Relu(VF x) { return x > 0.0f ? x : VF{}; }

}  // namespace cpu_vector
}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_CPU_VECTOR_H_
