#include "cpu_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_vector.h"

namespace embedserve {
namespace internal_model {
namespace {

using namespace cpu_vector;  // NOLINT: the kernel vocabulary of cpu_vector.h

// The kernel is written for vectors of any width V (VF on AVX-512, VF8 on AVX2, VF4
// elsewhere: one register each, cpu_vector.h). Query rows per block: one lane each, so
// softmax over a block's keys is elementwise across vectors (no horizontal max or sum
// per row); kQueries<V> of them.
template <typename V>
constexpr int64_t kQueries = kLanesOf<V>;
// Keys scored together: one load of the transposed queries feeds this many FMA chains
// (enough to cover the FMA latency on two pipes).
constexpr int64_t kKeys = 8;
// Query rows handled together in the output loop: each value load feeds this many rows.
constexpr int64_t kRows = 4;
static_assert(kQueries<VF4> % kRows == 0, "the output loop's row groups tile a query block");

// Scratch floats that AttendItems needs for sequences of at most max_len tokens, for
// every width (kLanes is the widest).
int64_t ScratchFloats(int64_t max_len, int64_t d) { return d * kLanes + max_len * kLanes; }

// kLanesOf<V> floats from p, widened from bf16 where T is bf16; `count` below that loads
// only that many (zeros after).
template <typename V>
ES_INLINE V LoadWide(const float* p) { return Load<V>(p); }
template <typename V>
ES_INLINE V LoadWide(const c10::BFloat16* p) {
  using L = Lanes<kLanesOf<V>>;
  typename L::Halves h;
  std::memcpy(&h, p, sizeof h);
  return BitCast<V>(__builtin_convertvector(h, typename L::Words) << 16);
}
template <typename V, typename T>
ES_INLINE V LoadWide(const T* p, int64_t count) {
  return count == kLanesOf<V> ? LoadWide<V>(p) : LoadPartial<V>(p, count);
}
template <typename V>
ES_INLINE void StoreNarrow(float* p, V v, int64_t count) {
  if (count == kLanesOf<V>) return Store(p, v);
  StorePartial(p, v, count);
}
template <typename V>
ES_INLINE void StoreNarrow(c10::BFloat16* p, V v, int64_t count) {
  StorePartial(p, v, count);
}

// Scores of NK keys (rows k0, k0 + row, ...) against the transposed query block qt
// [d, kQueries<V>]: st[j] (one lane per query) = q . k_j.
template <typename V, int NK, typename T>
ES_INLINE void ScoreKeys(const float* __restrict qt, const T* k0, int64_t row, int64_t d,
                         float* __restrict st) {
  constexpr int64_t kQ = kQueries<V>;
  V s[NK] = {};
  for (int64_t c = 0; c < d; ++c) {
    const V q = Load<V>(qt + c * kQ);
    for (int n = 0; n < NK; ++n) s[n] += Widen(k0[n * row + c]) * q;
  }
  for (int n = 0; n < NK; ++n) Store(st + n * kQ, s[n]);
}

// Output columns [cb, cb + NC * kLanesOf<V>) (the last vector `tail` wide) of query
// rows i0 .. i0 + rows - 1 of the block: sum_j p[j][i] v_j, times inv[i].
template <typename V, int NC, typename T>
ES_INLINE void WeightValues(const float* __restrict pt, const float* inv, const T* v0,
                            int64_t row, int64_t len, int64_t i0, int64_t rows, int64_t cb,
                            int64_t tail, T* out0, int64_t out_row) {
  constexpr int64_t kW = kLanesOf<V>;
  V a[kRows][NC] = {};
  for (int64_t j = 0; j < len; ++j) {
    const float* p = pt + j * kQueries<V> + i0;
    V v[NC];
    for (int c = 0; c < NC; ++c) {
      v[c] = LoadWide<V>(v0 + j * row + cb + c * kW, c == NC - 1 ? tail : kW);
    }
    for (int r = 0; r < kRows; ++r) {
      for (int c = 0; c < NC; ++c) a[r][c] += p[r] * v[c];
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < NC; ++c) {
      StoreNarrow(out0 + r * out_row + cb + c * kW, a[r][c] * inv[i0 + r],
                  c == NC - 1 ? tail : kW);
    }
  }
}

// Attention for the (sequence, head) items [begin, end) (item = sequence * heads + head).
// Per block of up to kQueries<V> query rows: the queries, scaled, transposed into
// scratch qt [d, kQueries<V>] (one lane per query); the scores of every key of the
// sequence against them, key-major, in st [len, kQueries<V>]; softmax down each lane
// (elementwise over the len vectors); then the output rows from the values read in place.
// Keys and values are never copied, and no key beyond the sequence's length is touched,
// so no masking.
template <typename V, typename T>
ES_INLINE void AttendItems(const T* __restrict qkv, T* __restrict ctx,
                           const int64_t* offsets, const int64_t* lengths, int64_t heads,
                           int64_t d, float scale, int64_t begin, int64_t end,
                           float* __restrict scratch) {
  constexpr int64_t kQ = kQueries<V>, kW = kLanesOf<V>;
  const int64_t h = heads * d, row = 3 * h;
  float* qt = scratch;
  float* st = qt + d * kQ;
  alignas(64) float inv[kQ];
  for (int64_t item = begin; item < end; ++item) {
    const int64_t seq = item / heads, head = item % heads;
    const int64_t len = lengths[seq];
    const T* q0 = qkv + offsets[seq] * row + head * d;
    const T* k0 = q0 + h;
    const T* v0 = q0 + 2 * h;
    T* out0 = ctx + offsets[seq] * h + head * d;
    for (int64_t qb = 0; qb < len; qb += kQ) {
      const int64_t nq = std::min(kQ, len - qb);
      for (int64_t i = 0; i < nq; ++i) {
        const T* qi = q0 + (qb + i) * row;
        for (int64_t c = 0; c < d; ++c) qt[c * kQ + i] = Widen(qi[c]) * scale;
      }
      for (int64_t c = 0; nq < kQ && c < d; ++c) {  // unused lanes: finite, ignored
        for (int64_t i = nq; i < kQ; ++i) qt[c * kQ + i] = 0.0f;
      }
      int64_t j = 0;
      for (; j + kKeys <= len; j += kKeys) {
        ScoreKeys<V, kKeys>(qt, k0 + j * row, row, d, st + j * kQ);
      }
      const T* kj = k0 + j * row;
      float* sj = st + j * kQ;
      switch (len - j) {
        case 7: ScoreKeys<V, 7>(qt, kj, row, d, sj); break;
        case 6: ScoreKeys<V, 6>(qt, kj, row, d, sj); break;
        case 5: ScoreKeys<V, 5>(qt, kj, row, d, sj); break;
        case 4: ScoreKeys<V, 4>(qt, kj, row, d, sj); break;
        case 3: ScoreKeys<V, 3>(qt, kj, row, d, sj); break;
        case 2: ScoreKeys<V, 2>(qt, kj, row, d, sj); break;
        case 1: ScoreKeys<V, 1>(qt, kj, row, d, sj); break;
        default: break;
      }
      // Softmax over the keys, per lane: max, e^(s - max), 1 / sum.
      V m = Load<V>(st);
      for (int64_t k = 1; k < len; ++k) {
        const V x = Load<V>(st + k * kQ);
        m = m > x ? m : x;
      }
      V sum = {};
      for (int64_t k = 0; k < len; ++k) {
        const V e = ExpNonPositive(Load<V>(st + k * kQ) - m);
        Store(st + k * kQ, e);
        sum += e;
      }
      Store(inv, 1.0f / sum);
      T* out = out0 + qb * h;
      for (int64_t i0 = 0; i0 < nq; i0 += kRows) {
        const int64_t rows = std::min(kRows, nq - i0);
        int64_t cb = 0;
        for (; cb + 2 * kW <= d; cb += 2 * kW) {
          WeightValues<V, 2>(st, inv, v0, row, len, i0, rows, cb, kW, out + i0 * h, h);
        }
        if (d - cb > kW) {
          WeightValues<V, 2>(st, inv, v0, row, len, i0, rows, cb, d - cb - kW, out + i0 * h, h);
        } else if (cb < d) {
          WeightValues<V, 1>(st, inv, v0, row, len, i0, rows, cb, d - cb, out + i0 * h, h);
        }
      }
    }
  }
}

// One entry point per instruction set, each a copy of AttendItems<V, T> at that set's
// register width for T = float and bfloat16, and the dispatcher that picks the best for
// this CPU once.
using AttendFloatFn = void (*)(const float*, float*, const int64_t*, const int64_t*, int64_t,
                               int64_t, float, int64_t, int64_t, float*);
using AttendBFloat16Fn = void (*)(const c10::BFloat16*, c10::BFloat16*, const int64_t*,
                                  const int64_t*, int64_t, int64_t, float, int64_t, int64_t,
                                  float*);

#define ES_ATTEND_VARIANT(SUFFIX, ATTRIBUTE, V)                                                \
  ATTRIBUTE void AttendFloat##SUFFIX(const float* qkv, float* ctx, const int64_t* offsets,     \
                                     const int64_t* lengths, int64_t heads, int64_t d,         \
                                     float scale, int64_t begin, int64_t end,                  \
                                     float* scratch) {                                         \
    AttendItems<V>(qkv, ctx, offsets, lengths, heads, d, scale, begin, end, scratch);          \
  }                                                                                            \
  ATTRIBUTE void AttendBFloat16##SUFFIX(const c10::BFloat16* qkv, c10::BFloat16* ctx,          \
                                        const int64_t* offsets, const int64_t* lengths,        \
                                        int64_t heads, int64_t d, float scale, int64_t begin,  \
                                        int64_t end, float* scratch) {                         \
    AttendItems<V>(qkv, ctx, offsets, lengths, heads, d, scale, begin, end, scratch);          \
  }

ES_ATTEND_VARIANT(Baseline, , VF4)
#ifdef ES_X86_DISPATCH
ES_ATTEND_VARIANT(Avx2, ES_TARGET_AVX2, VF8)
ES_ATTEND_VARIANT(Avx512, ES_TARGET_AVX512, VF)
#endif

struct AttendKernels {
  AttendFloatFn attend_float = AttendFloatBaseline;
  AttendBFloat16Fn attend_bfloat16 = AttendBFloat16Baseline;
};

const AttendKernels& Kernels() {
  static const AttendKernels kernels = [] {
    AttendKernels k;
#ifdef ES_X86_DISPATCH
    if (CpuHasAvx512()) {
      k.attend_float = AttendFloatAvx512;
      k.attend_bfloat16 = AttendBFloat16Avx512;
    } else if (CpuHasAvx2()) {
      k.attend_float = AttendFloatAvx2;
      k.attend_bfloat16 = AttendBFloat16Avx2;
    }
#endif
    return k;
  }();
  return kernels;
}

}  // namespace

torch::Tensor PackedSelfAttentionCpu(const torch::Tensor& qkv, const torch::Tensor& offsets,
                                     const torch::Tensor& lengths, int64_t heads, double scale,
                                     torch::Tensor out) {
  TORCH_CHECK(qkv.device().is_cpu() && qkv.dim() == 2 && qkv.is_contiguous(),
              "PackedSelfAttentionCpu: qkv must be a contiguous CPU matrix");
  TORCH_CHECK(qkv.scalar_type() == torch::kFloat || qkv.scalar_type() == torch::kBFloat16,
              "PackedSelfAttentionCpu: qkv must be float or bfloat16, not ", qkv.scalar_type());
  TORCH_CHECK(heads > 0 && qkv.size(1) % (3 * heads) == 0,
              "PackedSelfAttentionCpu: ", qkv.size(1), " columns do not split into 3 x ",
              heads, " heads");
  TORCH_CHECK(offsets.scalar_type() == torch::kLong && lengths.scalar_type() == torch::kLong &&
                  offsets.is_contiguous() && lengths.is_contiguous() &&
                  offsets.device().is_cpu() && lengths.device().is_cpu() &&
                  offsets.numel() == lengths.numel(),
              "PackedSelfAttentionCpu: offsets and lengths must be CPU int64 vectors of one size");
  const int64_t total = qkv.size(0), h = qkv.size(1) / 3, d = h / heads;
  const int64_t batch = offsets.numel();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();
  int64_t max_len = 0, work = 0;
  for (int64_t i = 0; i < batch; ++i) {
    TORCH_CHECK(len[i] > 0 && off[i] >= 0 && off[i] + len[i] <= total,
                "PackedSelfAttentionCpu: sequence ", i, " (offset ", off[i], ", length ",
                len[i], ") lies outside the ", total, " rows");
    max_len = std::max(max_len, len[i]);
    work += len[i] * len[i];
  }
  torch::Tensor ctx = out;
  if (ctx.defined()) {
    TORCH_CHECK(ctx.device().is_cpu() && ctx.scalar_type() == qkv.scalar_type() &&
                    ctx.is_contiguous() && ctx.dim() == 2 && ctx.size(0) == total &&
                    ctx.size(1) == h,
                "PackedSelfAttentionCpu: the output must be contiguous ", qkv.scalar_type(),
                " CPU [", total, ", ", h, "]");
  } else {
    ctx = torch::empty({total, h}, qkv.options());
  }
  if (batch == 0) return ctx;
  const int64_t items = batch * heads;
  // Run small inputs inline: about 16k multiply-adds per thread before forking pays.
  const int64_t per_item = std::max<int64_t>(1, 2 * d * work / batch);
  const int64_t grain = std::max<int64_t>(1, 16384 / per_item);
  const float fscale = static_cast<float>(scale);
  const AttendKernels& kernels = Kernels();
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(ScratchFloats(max_len, d)));
    if (qkv.scalar_type() == torch::kFloat) {
      kernels.attend_float(qkv.data_ptr<float>(), ctx.data_ptr<float>(), off, len, heads, d,
                       fscale, begin, end, scratch.data());
    } else {
      kernels.attend_bfloat16(qkv.data_ptr<c10::BFloat16>(), ctx.data_ptr<c10::BFloat16>(), off,
                          len, heads, d, fscale, begin, end, scratch.data());
    }
  });
  return ctx;
}

}  // namespace internal_model
}  // namespace embedserve
