// Internal (src/model only): the small vocabulary of the hand-written CPU kernels
// (cpu_attention.cc, cpu_fused.cc, cpu_int8_linear.cc). Pipeline stage: forward.
//
// The kernels are written with GCC/Clang vector extensions, each at the register width
// of the instruction set it is compiled for: VF (16 floats) for AVX-512, VF8 for AVX2,
// VF4 for the x86-64 baseline (SSE) and other targets. On x86-64 each kernel body is
// compiled three times (ES_TARGET_AVX512, ES_TARGET_AVX2, no attribute) and the caller
// picks the first one this CPU supports with CpuHasAvx512() / CpuHasAvx2(): by feature,
// not by CPU model, so AMD's AVX-512 cores get the AVX-512 code (GCC's
// target_clones("arch=...") would not).
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
// One register of AVX2 and of SSE (the x86-64 baseline) or NEON. The kernels take their
// width as a template argument: a VF there is two or four registers, which GCC keeps in
// memory between operations (with VF the attention ran ~27x slower on AVX2 than on
// AVX-512, LayerNorm ~7x).
typedef float VF8 __attribute__((vector_size(8 * sizeof(float))));
typedef float VF4 __attribute__((vector_size(4 * sizeof(float))));
template <typename V>
constexpr int64_t kLanesOf = sizeof(V) / sizeof(float);
// The integer vectors of W lanes a kernel converts to and from (GCC takes no vector_size
// that depends on a template argument in __builtin_convertvector): uint8 (int8
// quantization), uint16 (bf16 bits) and uint32.
template <int64_t W>
struct Lanes;
#define ES_LANES(W)                                                         \
  template <>                                                               \
  struct Lanes<W> {                                                         \
    typedef uint8_t Bytes __attribute__((vector_size(W)));                  \
    typedef uint16_t Halves __attribute__((vector_size(W * 2)));            \
    typedef uint32_t Words __attribute__((vector_size(W * 4)));             \
  };
ES_LANES(4)
ES_LANES(8)
ES_LANES(16)
#undef ES_LANES

// The instruction sets the kernels come in, widest last.
enum class CpuIsa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest variant the kernels may use, from EMBEDSERVE_CPU_ISA: "avx2" or "baseline"
// picks that variant even where the CPU has more (so that the tests run every variant on
// one machine, and a bench can compare them); unset, empty or "avx512": no cap. Read once
// per process, before the first kernel is picked; another value is reported on stderr and
// ignored.
CpuIsa CpuIsaCap();

inline bool CpuHasAvx512() {
#ifdef ES_X86_DISPATCH
  return CpuIsaCap() >= CpuIsa::kAvx512 && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}
inline bool CpuHasAvx2() {
#ifdef ES_X86_DISPATCH
  return CpuIsaCap() >= CpuIsa::kAvx2 && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// The variant the kernels run here: "avx512", "avx2" or "baseline".
inline const char* CpuKernelIsaName() {
  return CpuHasAvx512() ? "avx512" : CpuHasAvx2() ? "avx2" : "baseline";
}

template <typename To, typename From>
ES_INLINE To BitCast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "BitCast needs equal sizes");
  To to;
  std::memcpy(&to, &from, sizeof to);
  return to;
}

template <typename V = VF>
ES_INLINE V Load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V>
ES_INLINE void Store(float* p, V v) { std::memcpy(p, &v, sizeof v); }

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

// The first `count` (< the width) values of p, widened to fp32, zeros after; and the
// first `count` lanes of v stored to p (rounded to bf16 where T is bf16).
template <typename V, typename T>
ES_INLINE V LoadPartial(const T* p, int64_t count) {
  V v = {};
  for (int64_t i = 0; i < count; ++i) v[i] = Widen(p[i]);
  return v;
}
template <typename V, typename T>
ES_INLINE void StorePartial(T* p, V v, int64_t count) {
  for (int64_t i = 0; i < count; ++i) StoreScalar(v[i], p + i);
}

// The helpers below take any width V (VF, VF8, VF4); I is the int32 vector of V's width.
template <typename V>
using IntOf = decltype(V{} < V{});

template <typename V>
ES_INLINE float HorizontalMax(V v) {
  float m = v[0];
  for (int w = 1; w < kLanesOf<V>; ++w) m = std::max(m, v[w]);
  return m;
}
template <typename V>
ES_INLINE float HorizontalSum(V v) {
  float s = 0.0f;
  for (int w = 0; w < kLanesOf<V>; ++w) s += v[w];
  return s;
}

// e^x for x <= 0, Cephes' polynomial as in ATen's vectorised exp; relative error ~1e-7.
// Rounds to the nearest integer with the 1.5 * 2^23 trick. Below -87 it returns e^-87.
template <typename V>
ES_INLINE V ExpNonPositive(V x) {
  using I = IntOf<V>;
  const V lowest = V{} - 87.0f;
  x = x < lowest ? lowest : x;
  const V magic = V{} + 12582912.0f;
  const V n = (x * 1.44269504088896341f + magic) - magic;  // round(x / ln 2)
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  const V z = x * x;
  V y = V{} + 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;  // 2^n
  return y * BitCast<V>(bits);
}

// |x|, and min(a, c) for a >= 0 (a NaN with its sign bit clear counts as above c) and a
// constant c > 0, exactly, with integer arithmetic only: non-negative floats order as
// their bit patterns do as int32, and d = a - c is negative (d >> 31 all ones) where a < c.
// Neither is a compare: on a vector wider than the target's registers (a VF on AVX2)
// GCC turns `a < b ? a : b` into scalar code (GeluErf with compares took 1,654 us for
// 448 x 1536 floats that way, one Zen 5 core, against 337 us without), and the integer
// form is exact for every input, NaN included.
template <typename V>
ES_INLINE V Abs(V x) {
  return BitCast<V>(BitCast<IntOf<V>>(x) & 0x7fffffff);
}
template <typename V>
ES_INLINE V MinNonNegative(V a, float c) {
  const int32_t ci = BitCast<int32_t>(c);
  const IntOf<V> d = BitCast<IntOf<V>>(a) - ci;
  return BitCast<V>(ci + (d & (d >> 31)));
}
// 1.0f in the lanes whose a (>= 0, as above) is below c, 0.0f in the others.
template <typename V>
ES_INLINE V BelowNonNegative(V a, float c) {
  const IntOf<V> d = BitCast<IntOf<V>>(a) - BitCast<int32_t>(c);
  return BitCast<V>((d >> 31) & BitCast<int32_t>(1.0f));
}

// erf(a) for a in [0, 4] as a P(a^2) / Q(a^2), P and Q of degree 5 (beyond 4 erf is 1 in
// fp32; at 4 the quotient is 1 or within an ulp of it). The coefficients are a weighted
// least-squares fit of this form to erf on [0, 4] (scripts/fit_erf.py): absolute error
// <= 2.2e-8 in exact arithmetic, <= 4e-7 evaluated in fp32. No exp.
template <typename V>
ES_INLINE V ErfRational(V a) {
  const V t = a * a;
  V p = V{} + 1.9746314592e-6f;
  p = p * t + 2.8801581357e-4f;
  p = p * t + 4.0033590049e-3f;
  p = p * t + 5.3466629237e-2f;
  p = p * t + 1.9624495506e-1f;
  p = p * t + 1.1283789873e+0f;
  V q = V{} + 3.7477409933e-5f;
  q = q * t + 1.2162522180e-3f;
  q = q * t + 1.5443900600e-2f;
  q = q * t + 1.1647446454e-1f;
  q = q * t + 5.0724869967e-1f;
  q = q * t + 1.0f;
  return a * p / q;
}

// GELU with the exact erf form, 0.5 x (1 + erf(x / sqrt 2)), as at::gelu(x, "none"),
// written as x/2 + |x/2| r with r = erf(|x| / sqrt 2) (erf is odd), so one clamp of
// |x| / sqrt 2 to [0, 4] and one of r to at most 1 cover every input, both exact. r is
// taken up by 1.2e-7 (two ulps of 1) before the clamp, so that it is exactly 1 where
// the fit rounds to just below 1 near 4: there x/2 + |x/2| r is 0 for negative x (not
// an ulp of |x|: for x = -1e4, 0 instead of -3e-4) and x for positive x, at any
// magnitude. Absolute error <= 2.7e-7 |x|, at most 1.3e-6 (against erf in float64, every
// 2^-18 on [-10, 10], the three variants); NaN stays NaN. 448 x 1536 floats on one Zen 5
// core with AVX-512: 125 us (the form with clamps of z to [-4, 4] and of 1 + erf to >= 0
// that this replaced: 172 us).
template <typename V>
ES_INLINE V GeluErf(V x) {
  const V half = 0.5f * x;  // halved first: x + |x| overflows for |x| > 1.7e38
  const V r = MinNonNegative(
      ErfRational(MinNonNegative(Abs(x) * 0.70710678118654752f, 4.0f)) + 1.2e-7f, 1.0f);
  return half + Abs(half) * r;
}

// GELU's tanh form, 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), as
// at::gelu(x, "tanh"): 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)), computed with
// e = e^(-2|u|) <= 1 as 1 / (1 + e) for u >= 0 and e / (1 + e) for u < 0. e is taken as
// 0 where 2|u| > 87 (ExpNonPositive stops at e^-87 there), so that a large negative x
// gives 0 rather than x e^-87 (-4.9 for x = -3e38).
template <typename V>
ES_INLINE V GeluTanh(V x) {
  const V u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  const V au = Abs(u);
  const V e = ExpNonPositive(-2.0f * au) * BelowNonNegative(au, 43.5f);
  // 1 for u >= 0, e for u < 0 (from u's sign bit: no compare).
  const V negative = BitCast<V>((BitCast<IntOf<V>>(u) >> 31) & BitCast<int32_t>(1.0f));
  const V num = 1.0f - negative * (1.0f - e);
  return x * num / (1.0f + e);
}

template <typename V>
ES_INLINE V Relu(V x) {
  return x > 0.0f ? x : V{};
}

}  // namespace cpu_vector
}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_CPU_VECTOR_H_
