#include "cpu_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu_vector.h"

namespace embedserve {
namespace internal_model {
namespace {

using namespace cpu_vector;  // NOLINT: the kernel vocabulary of cpu_vector.h

// Query rows handled together: their dot products share every key load.
constexpr int64_t kRows = 4;
static_assert(kRows == 4, "the score and output loops keep one accumulator per row: 4");

int64_t RoundUp(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Scratch floats that AttendItems needs for sequences of at most max_len tokens.
int64_t ScratchFloats(int64_t max_len, int64_t d) {
  const int64_t lp = RoundUp(max_len), dp = RoundUp(d);
  return d * lp + lp * dp + kRows * lp + kRows * d + kRows * dp;
}

// Attention for the (sequence, head) items [begin, end) (item = sequence * heads + head).
// Per item, scratch holds the keys transposed [d, lp] and the values [lp, dp] in fp32
// (lp, dp: length and head size rounded up to kLanes, padding zero), then per group of
// kRows query rows their scores [kRows, lp], scaled queries [kRows, d] and output rows
// [kRows, dp].
template <typename T>
ES_INLINE void AttendItems(const T* __restrict qkv, T* __restrict ctx,
                           const int64_t* offsets, const int64_t* lengths, int64_t heads,
                           int64_t d, float scale, int64_t begin, int64_t end,
                           float* __restrict scratch) {
  const int64_t h = heads * d, row = 3 * h, dp = RoundUp(d);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t seq = item / heads, head = item % heads;
    const int64_t len = lengths[seq], lp = RoundUp(len);
    float* kt = scratch;
    float* v = kt + d * lp;
    float* p = v + lp * dp;
    float* q = p + kRows * lp;
    float* out_rows = q + kRows * d;
    const T* base = qkv + offsets[seq] * row + head * d;
    for (int64_t j = 0; j < lp; ++j) {
      float* vj = v + j * dp;
      const bool real = j < len;
      const T* kj = base + j * row + h;
      const T* vsrc = base + j * row + 2 * h;
      for (int64_t c = 0; c < d; ++c) kt[c * lp + j] = real ? Widen(kj[c]) : 0.0f;
      for (int64_t c = 0; c < d; ++c) vj[c] = real ? Widen(vsrc[c]) : 0.0f;
      for (int64_t c = d; c < dp; ++c) vj[c] = 0.0f;
    }
    for (int64_t ib = 0; ib < len; ib += kRows) {
      const int64_t rows = std::min(kRows, len - ib);
      for (int64_t r = 0; r < kRows; ++r) {
        const T* qi = base + (ib + r) * row;
        for (int64_t c = 0; c < d; ++c) q[r * d + c] = r < rows ? Widen(qi[c]) * scale : 0.0f;
      }
      // Scores p[r][j] = q_r . k_j (scale folded into q), kLanes keys at a time.
      for (int64_t jb = 0; jb < lp; jb += kLanes) {
        VF s0 = {}, s1 = {}, s2 = {}, s3 = {};
        for (int64_t c = 0; c < d; ++c) {
          const VF k = Load(kt + c * lp + jb);
          s0 += q[c] * k;
          s1 += q[d + c] * k;
          s2 += q[2 * d + c] * k;
          s3 += q[3 * d + c] * k;
        }
        Store(p + jb, s0);
        Store(p + lp + jb, s1);
        Store(p + 2 * lp + jb, s2);
        Store(p + 3 * lp + jb, s3);
      }
      // Softmax of each row over its len real keys (padding gets exactly 0).
      float inv[kRows];
      for (int64_t r = 0; r < kRows; ++r) {
        float* pr = p + r * lp;
        for (int64_t j = len; j < lp; ++j) pr[j] = -std::numeric_limits<float>::infinity();
        VF m = Load(pr);
        for (int64_t jb = kLanes; jb < lp; jb += kLanes) {
          const VF x = Load(pr + jb);
          m = m > x ? m : x;
        }
        const float mx = HorizontalMax(m);
        VF sum = {};
        for (int64_t jb = 0; jb < lp; jb += kLanes) {
          const VF e = ExpNonPositive(Load(pr + jb) - mx);
          Store(pr + jb, e);
          sum += e;
        }
        float total = HorizontalSum(sum);
        for (int64_t j = len; j < lp; ++j) {
          total -= pr[j];
          pr[j] = 0.0f;
        }
        inv[r] = 1.0f / total;
      }
      // Output rows = sum_j p[r][j] v_j, kLanes columns at a time.
      for (int64_t cb = 0; cb < dp; cb += kLanes) {
        VF a0 = {}, a1 = {}, a2 = {}, a3 = {};
        for (int64_t j = 0; j < len; ++j) {
          const VF vv = Load(v + j * dp + cb);
          a0 += p[j] * vv;
          a1 += p[lp + j] * vv;
          a2 += p[2 * lp + j] * vv;
          a3 += p[3 * lp + j] * vv;
        }
        Store(out_rows + cb, a0 * inv[0]);
        Store(out_rows + dp + cb, a1 * inv[1]);
        Store(out_rows + 2 * dp + cb, a2 * inv[2]);
        Store(out_rows + 3 * dp + cb, a3 * inv[3]);
      }
      for (int64_t r = 0; r < rows; ++r) {
        T* out = ctx + (offsets[seq] + ib + r) * h + head * d;
        for (int64_t c = 0; c < d; ++c) StoreScalar(out_rows[r * dp + c], out + c);
      }
    }
  }
}

// One entry point per instruction set, each a copy of AttendItems<T> for T = float and
// bfloat16, and the dispatcher that picks the best for this CPU once.
using AttendFloatFn = void (*)(const float*, float*, const int64_t*, const int64_t*, int64_t,
                               int64_t, float, int64_t, int64_t, float*);
using AttendBFloat16Fn = void (*)(const c10::BFloat16*, c10::BFloat16*, const int64_t*,
                                  const int64_t*, int64_t, int64_t, float, int64_t, int64_t,
                                  float*);

#define ES_ATTEND_VARIANT(SUFFIX, ATTRIBUTE)                                                   \
  ATTRIBUTE void AttendFloat##SUFFIX(const float* qkv, float* ctx, const int64_t* offsets,     \
                                     const int64_t* lengths, int64_t heads, int64_t d,         \
                                     float scale, int64_t begin, int64_t end,                  \
                                     float* scratch) {                                         \
    AttendItems(qkv, ctx, offsets, lengths, heads, d, scale, begin, end, scratch);             \
  }                                                                                            \
  ATTRIBUTE void AttendBFloat16##SUFFIX(const c10::BFloat16* qkv, c10::BFloat16* ctx,          \
                                        const int64_t* offsets, const int64_t* lengths,        \
                                        int64_t heads, int64_t d, float scale, int64_t begin,  \
                                        int64_t end, float* scratch) {                         \
    AttendItems(qkv, ctx, offsets, lengths, heads, d, scale, begin, end, scratch);             \
  }

ES_ATTEND_VARIANT(Baseline, )
#ifdef ES_X86_DISPATCH
ES_ATTEND_VARIANT(Avx2, ES_TARGET_AVX2)
ES_ATTEND_VARIANT(Avx512, ES_TARGET_AVX512)
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
                                     const torch::Tensor& lengths, int64_t heads, double scale) {
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
  torch::Tensor ctx = torch::empty({total, h}, qkv.options());
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
