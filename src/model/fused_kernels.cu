// Fused residual add + bias + LayerNorm, and bias + GELU, for the CUDA forward
// (fused_kernels.h says what and why). Memory-bound kernels: each element is read once
// and written once, in 16-byte accesses where the width allows.
#include "fused_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace embedserve {
namespace cuda_kernels {
namespace {

constexpr int kThreads = 128;  // per block, for every kernel here

// ---- 8-element loads and stores, converted to and from fp32 -------------------------
// 8 halves or bf16s are one 16-byte access; 8 floats are two.
__device__ __forceinline__ void Load8(const __half* p, float (&f)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __half22float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ void Load8(const __nv_bfloat16* p, float (&f)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ void Load8(const float* p, float (&f)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
  f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
__device__ __forceinline__ void Store8(__half* p, const float (&f)[8]) {
  uint4 u;
  __half2* h = reinterpret_cast<__half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ void Store8(__nv_bfloat16* p, const float (&f)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ void Store8(float* p, const float (&f)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(float v) { return v; }
template <typename T> __device__ __forceinline__ T FromFloat(float v);
template <> __device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ float FromFloat<float>(float v) { return v; }

// Sum over each aligned group of kLanes lanes of a warp (every lane of the warp takes
// part, so the full mask is right).
template <int kLanes>
__device__ __forceinline__ float GroupSum(float v) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
struct LnParams {
  T* out;
  const T* x;
  const int64_t* x_index;
  const T* residual;
  const int64_t* residual_index;
  const T* bias;
  const T* gamma;
  const T* beta;
  int64_t rows;
  int width;
  float eps;
};

// One row per group of kLanes threads; lane l holds 8-element vectors l, l + kLanes, ...
// (kIters of them, in registers), so the row is read once from memory. Rows past the end
// still run the shuffles (with zeros) and skip loads and stores.
template <typename T, int kLanes, int kIters>
__global__ void __launch_bounds__(kThreads) AddLayerNormVec(LnParams<T> p) {
  constexpr int kRowsPerBlock = kThreads / kLanes;
  const int lane = threadIdx.x % kLanes;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kLanes;
  const bool active = row < p.rows;
  float v[kIters][8];
  float sum = 0.f;
  if (active) {
    const T* xr = p.x + (p.x_index != nullptr ? p.x_index[row] : row) * p.width;
    const T* rr = nullptr;
    if (p.residual != nullptr) {
      rr = p.residual + (p.residual_index != nullptr ? p.residual_index[row] : row) * p.width;
    }
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int c = (lane + i * kLanes) * 8;
      if (c < p.width) {
        Load8(xr + c, v[i]);
        if (rr != nullptr) {
          float t[8];
          Load8(rr + c, t);
#pragma unroll
          for (int j = 0; j < 8; ++j) v[i][j] += t[j];
        }
        if (p.bias != nullptr) {
          float t[8];
          Load8(p.bias + c, t);
#pragma unroll
          for (int j = 0; j < 8; ++j) v[i][j] += t[j];
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) sum += v[i][j];
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) v[i][j] = 0.f;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[i][j] = 0.f;
    }
  }
  const float inv_width = 1.f / static_cast<float>(p.width);
  const float mean = GroupSum<kLanes>(sum) * inv_width;
  // Variance from the deviations (two passes over registers: no cancellation).
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kIters; ++i) {
    const int c = (lane + i * kLanes) * 8;
    if (active && c < p.width) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float d = v[i][j] - mean;
        sq += d * d;
      }
    }
  }
  const float rstd = rsqrtf(GroupSum<kLanes>(sq) * inv_width + p.eps);
  if (!active) return;
  T* orow = p.out + row * p.width;
#pragma unroll
  for (int i = 0; i < kIters; ++i) {
    const int c = (lane + i * kLanes) * 8;
    if (c < p.width) {
      float g[8], b[8], o[8];
      Load8(p.gamma + c, g);
      Load8(p.beta + c, b);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = (v[i][j] - mean) * rstd * g[j] + b[j];
      Store8(orow + c, o);
    }
  }
}

// Any width, any alignment: one warp per row, scalar accesses, the inputs read three
// times (sum, squared deviations, output). Each lane touches the same columns in every
// pass, so out may alias x or residual here too.
template <typename T>
__global__ void __launch_bounds__(kThreads) AddLayerNormScalar(LnParams<T> p) {
  constexpr int kRowsPerBlock = kThreads / 32;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (row >= p.rows) return;  // whole warps leave together: the shuffles below stay full
  const T* xr = p.x + (p.x_index != nullptr ? p.x_index[row] : row) * p.width;
  const T* rr = nullptr;
  if (p.residual != nullptr) {
    rr = p.residual + (p.residual_index != nullptr ? p.residual_index[row] : row) * p.width;
  }
  auto value = [&](int c) {
    float v = ToFloat(xr[c]);
    if (rr != nullptr) v += ToFloat(rr[c]);
    if (p.bias != nullptr) v += ToFloat(p.bias[c]);
    return v;
  };
  float sum = 0.f;
  for (int c = lane; c < p.width; c += 32) sum += value(c);
  const float inv_width = 1.f / static_cast<float>(p.width);
  const float mean = GroupSum<32>(sum) * inv_width;
  float sq = 0.f;
  for (int c = lane; c < p.width; c += 32) {
    const float d = value(c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(GroupSum<32>(sq) * inv_width + p.eps);
  T* orow = p.out + row * p.width;
  for (int c = lane; c < p.width; c += 32) {
    const float o = (value(c) - mean) * rstd * ToFloat(p.gamma[c]) + ToFloat(p.beta[c]);
    orow[c] = FromFloat<T>(o);
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T, int kLanes, int kIters>
cudaError_t LaunchVec(const LnParams<T>& p, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kThreads / kLanes;
  const int64_t blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  AddLayerNormVec<T, kLanes, kIters><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t AddLayerNormTyped(const AddLayerNormArgs& a, cudaStream_t stream) {
  LnParams<T> p;
  p.out = static_cast<T*>(a.out);
  p.x = static_cast<const T*>(a.x);
  p.x_index = a.x_index;
  p.residual = static_cast<const T*>(a.residual);
  p.residual_index = a.residual_index;
  p.bias = static_cast<const T*>(a.bias);
  p.gamma = static_cast<const T*>(a.gamma);
  p.beta = static_cast<const T*>(a.beta);
  p.rows = a.rows;
  p.width = static_cast<int>(a.width);
  p.eps = a.eps;
  const int64_t nvec = a.width / 8;
  const bool vec = a.width % 8 == 0 && a.width <= 4096 && Aligned16(a.out) && Aligned16(a.x) &&
                   (a.residual == nullptr || Aligned16(a.residual)) &&
                   (a.bias == nullptr || Aligned16(a.bias)) && Aligned16(a.gamma) &&
                   Aligned16(a.beta);
  if (vec) {
    // The fewest lanes per row that keep each lane at <= 4 vectors (more rows per warp
    // for narrow rows: hidden 384 is 48 vectors, 16 lanes x 3, every lane busy).
    if (nvec <= 8) return LaunchVec<T, 8, 1>(p, stream);
    if (nvec <= 16) return LaunchVec<T, 8, 2>(p, stream);
    if (nvec <= 24) return LaunchVec<T, 8, 3>(p, stream);
    if (nvec <= 32) return LaunchVec<T, 16, 2>(p, stream);
    if (nvec <= 48) return LaunchVec<T, 16, 3>(p, stream);
    if (nvec <= 64) return LaunchVec<T, 16, 4>(p, stream);
    if (nvec <= 96) return LaunchVec<T, 32, 3>(p, stream);
    if (nvec <= 128) return LaunchVec<T, 32, 4>(p, stream);
    if (nvec <= 256) return LaunchVec<T, 32, 8>(p, stream);
    return LaunchVec<T, 32, 16>(p, stream);  // nvec <= 512 (width <= 4,096)
  }
  constexpr int kRowsPerBlock = kThreads / 32;
  const int64_t blocks = (a.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  AddLayerNormScalar<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// ---- bias + activation ----------------------------------------------------------------

template <Activation kAct>
__device__ __forceinline__ float Act(float v) {
  if (kAct == Activation::kGeluErf) return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
  // 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))
  const float inner = 0.79788456080286536f * (v + 0.044715f * v * v * v);
  return 0.5f * v * (1.f + tanhf(inner));
}

// Each block takes kUnroll * kThreads consecutive 8-element vectors, each thread
// kUnroll of them, all loads issued before the math (more bytes in flight per thread).
// On an H200, 16,384 x 1,536 fp16: a grid-stride loop of one vector per thread ran 38.8
// us against at::gelu's 35.2 (commit 3c46b86); this form 36.8 against 35.7 (d7d68b5),
// i.e. memory-bound at ~2.8 TB/s like ATen's: no faster, which is why fp16/bf16 take
// cuBLASLt's GEMM epilogue instead (docs/gpu.md). width % 8 == 0, so a vector never
// crosses a row.
constexpr int kUnroll = 4;
template <typename T, Activation kAct>
__global__ void __launch_bounds__(kThreads)
    BiasActVec(T* x, const T* bias, int64_t vectors, int width) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x;
  float v[kUnroll][8];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t i = first + static_cast<int64_t>(u) * kThreads;
    if (i < vectors) Load8(x + i * 8, v[u]);
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t i = first + static_cast<int64_t>(u) * kThreads;
    if (i >= vectors) continue;
    if (bias != nullptr) {
      float b[8];
      Load8(bias + (i * 8) % width, b);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[u][j] += b[j];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) v[u][j] = Act<kAct>(v[u][j]);
    Store8(x + i * 8, v[u]);
  }
}

template <typename T, Activation kAct>
__global__ void __launch_bounds__(kThreads)
    BiasActScalar(T* x, const T* bias, int64_t n, int width) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    float v = ToFloat(x[i]);
    if (bias != nullptr) v += ToFloat(bias[i % width]);
    x[i] = FromFloat<T>(Act<kAct>(v));
  }
}

// Enough blocks to fill the card several times over; the grid-stride loop takes the rest.
unsigned GridFor(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  constexpr int64_t kMaxBlocks = 132 * 16;  // a cap: 16 blocks of 128 per SM of an H100/H200
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

template <typename T, Activation kAct>
cudaError_t BiasActTyped(void* x, const void* bias, int64_t rows, int64_t width,
                         cudaStream_t stream) {
  T* xt = static_cast<T*>(x);
  const T* bt = static_cast<const T*>(bias);
  const int64_t n = rows * width;
  if (width % 8 == 0 && Aligned16(x) && (bias == nullptr || Aligned16(bias))) {
    const int64_t vectors = n / 8;
    const int64_t blocks = (vectors + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;  // grid.x limit (> 8e12 elements)
    BiasActVec<T, kAct><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        xt, bt, vectors, static_cast<int>(width));
  } else {
    BiasActScalar<T, kAct><<<GridFor(n), kThreads, 0, stream>>>(xt, bt, n, static_cast<int>(width));
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t BiasActDispatch(void* x, const void* bias, int64_t rows, int64_t width,
                            Activation act, cudaStream_t stream) {
  if (act == Activation::kGeluErf) return BiasActTyped<T, Activation::kGeluErf>(x, bias, rows, width, stream);
  return BiasActTyped<T, Activation::kGeluTanh>(x, bias, rows, width, stream);
}

// ---- self-attention of short packed sequences (fused_kernels.h: PackedAttention) ----
template <typename T>
struct AttnParams {
  T* out;
  const T* qkv;
  const int64_t* offsets;
  const int64_t* lengths;
  int64_t longest;
  int heads;
  float scale;
};

constexpr int kAttnWarps = kThreads / 32;
constexpr int kAttnMaxL = static_cast<int>(kPackedAttentionMaxTokens);  // two keys per lane

// The SIMT form. Block (blockIdx.x = sequence, blockIdx.y = head). Shared: K and V rows
// with one float of padding (lane j reads row j of K: the pad puts the lanes in different
// banks), each warp's query row and probabilities.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) PackedAttentionKernel(AttnParams<T> p) {
  __shared__ float ks[kAttnMaxL][D + 1];
  __shared__ float vs[kAttnMaxL][D + 1];
  __shared__ float qs[kAttnWarps][D];
  __shared__ float ps[kAttnWarps][kAttnMaxL];
  const int64_t b = blockIdx.x;
  const int h = blockIdx.y;
  const int len = static_cast<int>(p.lengths[b]);
  const int64_t row0 = p.offsets != nullptr ? p.offsets[b] : b * p.longest;
  const int rows = p.offsets != nullptr ? len : static_cast<int>(p.longest);
  const int64_t hidden = static_cast<int64_t>(p.heads) * D;
  const int64_t stride = 3 * hidden;
  const T* base = p.qkv + row0 * stride + static_cast<int64_t>(h) * D;
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < len * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    float f[8];
    Load8(base + r * stride + hidden + c, f);
#pragma unroll
    for (int j = 0; j < 8; ++j) ks[r][c + j] = f[j];
    Load8(base + r * stride + 2 * hidden + c, f);
#pragma unroll
    for (int j = 0; j < 8; ++j) vs[r][c + j] = f[j];
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int q = warp; q < rows; q += kAttnWarps) {
    T* out = p.out + (row0 + q) * hidden + static_cast<int64_t>(h) * D;
    if (q >= len) {  // padded layout: a padding row
#pragma unroll
      for (int c = lane; c < D; c += 32) out[c] = FromFloat<T>(0.f);
      continue;
    }
#pragma unroll
    for (int c = lane; c < D; c += 32) qs[warp][c] = ToFloat(base[q * stride + c]) * p.scale;
    __syncwarp();
    float s0 = -INFINITY, s1 = -INFINITY;
    if (lane < len) {
      s0 = 0.f;
#pragma unroll
      for (int c = 0; c < D; ++c) s0 += qs[warp][c] * ks[lane][c];
    }
    if (lane + 32 < len) {
      s1 = 0.f;
#pragma unroll
      for (int c = 0; c < D; ++c) s1 += qs[warp][c] * ks[lane + 32][c];
    }
    float m = fmaxf(s0, s1);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float e0 = lane < len ? expf(s0 - m) : 0.f;
    const float e1 = lane + 32 < len ? expf(s1 - m) : 0.f;
    const float inv = 1.f / GroupSum<32>(e0 + e1);
    ps[warp][lane] = e0 * inv;
    ps[warp][lane + 32] = e1 * inv;
    __syncwarp();
#pragma unroll
    for (int c = lane; c < D; c += 32) {
      float acc = 0.f;
      for (int j = 0; j < len; ++j) acc += ps[warp][j] * vs[j][c];
      out[c] = FromFloat<T>(acc);
    }
    __syncwarp();  // qs and ps are rewritten by the next row
  }
}

// ---- the tensor-core form (fp16 / bf16, sm_80 and newer) ----
// One warp per 16 query rows of one (sequence, head), several warps per block, no shared
// memory and no block barrier: Q, K and V go from the packed QKV rows straight into mma
// fragments by 16-byte loads, S = Q K^T and the context P V are m16n8k16 products with
// fp32 accumulators, the softmax runs on the accumulators in fp32.
//
// Fragments (PTX ISA, mma.m16n8k16; lane = 4 g + t): A's registers hold rows g and g + 8
// at k = 2t, 2t + 1 (a0, a1) and k = 2t + 8, 2t + 9 (a2, a3); B's hold column n = g at
// k = 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1); the accumulator rows g and g + 8 at
// n = 2t, 2t + 1. A product sums over k, so any one-to-one map of the k slots onto head
// columns serves, if A and B use the same: lane (g, t) loads columns 8t .. 8t + 7 (and
// 32 + 8t .. for head_dim 64) of its rows as one 16-byte word quadruple and feeds words
// (0, 1) to one k step and (2, 3) to the next. For P V the k slots are the keys and V's
// rows must be read across: movmatrix transposes 8 x 8 blocks of the V words a lane
// loaded the same way, which permutes the output columns so that lane (g, t) ends with
// columns 8t .. 8t + 7 of its two rows: one 16-byte store each.
//
// Numerics as the fp32 form: scores and softmax in fp32 (products of two fp16 or bf16
// values are exact in fp32; the sums are fp32), max subtracted. P enters the second
// product as two 16-bit parts, hi = round(p) and lo = round(p - hi), each multiplied by
// V with fp32 accumulation: p keeps 22 (fp16) or 16 (bf16) significant bits, against 11
// or 8 of the output it is rounded to once.
template <typename T>
struct MmaOps;
template <>
struct MmaOps<__half> {
  static __device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
  // (x, y) rounded to 16 bits each, x in the low half; and back.
  static __device__ __forceinline__ uint32_t Pack(float x, float y) {
    const __half2 h = __floats2half2_rn(x, y);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 Unpack(uint32_t w) {
    return __half22float2(*reinterpret_cast<const __half2*>(&w));
  }
};
template <>
struct MmaOps<__nv_bfloat16> {
  static __device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
  static __device__ __forceinline__ uint32_t Pack(float x, float y) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 Unpack(uint32_t w) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w));
  }
};

// (x, y) rounded to 16 bits each (x in the low half), and the parts they left out.
template <typename T>
__device__ __forceinline__ void SplitPair(float x, float y, uint32_t* hi, uint32_t* lo) {
  *hi = MmaOps<T>::Pack(x, y);
  const float2 f = MmaOps<T>::Unpack(*hi);
  *lo = MmaOps<T>::Pack(x - f.x, y - f.y);
}

// The 8 x 8 matrix of 16-bit elements whose row g, columns 2t and 2t + 1 lane 4 g + t
// holds, transposed (the same lane then holds row g, columns 2t, 2t + 1 of the transpose).
__device__ __forceinline__ uint32_t Transpose8x8(uint32_t x) {
  uint32_t y = x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
#endif
  return y;
}

// One 16-byte store (the plain struct assignment came out as four 4-byte stores).
__device__ __forceinline__ void Store16(void* p, const uint4& u) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(u.x), "r"(u.y),
               "r"(u.z), "r"(u.w)
               : "memory");
}

// Word i (a compile-time constant after unrolling) of a 16-byte quadruple.
__device__ __forceinline__ uint32_t Word(const uint4& u, int i) {
  return i == 0 ? u.x : i == 1 ? u.y : i == 2 ? u.z : u.w;
}

// Warp w (blockIdx.x * kAttnWarps + warp) takes one query tile (rows 16 qt .. 16 qt + 15)
// of one (sequence, head), head fastest among the (sequence, head) pairs, so that the
// warps of a block read neighbouring columns of the same rows. tiles_inner: the tiles of
// a pair are neighbours (qt = w % tiles): they read the same K and V rows, which the
// block's later warps then find in L1; for batches whose sequences mostly span every
// tile. Otherwise tile-major (qt = w / seq_heads): the tiles past most sequences' rows
// form whole blocks that return at once; for short sequences with a long one among them.
// A tile wholly past a sequence's length only writes its padding rows' zeros.
// KB: key blocks of 16, enough for the batch's longest sequence.
template <typename T, int D, int KB>
__global__ void __launch_bounds__(kThreads) PackedAttentionMmaKernel(AttnParams<T> p,
                                                                     int64_t seq_heads, int tiles,
                                                                     bool tiles_inner,
                                                                     int64_t warps) {
  using Ops = MmaOps<T>;
  constexpr int kChunks = D / 32;  // 16-byte quadruples of a row per lane
  constexpr int kSteps = D / 16;   // k steps of Q K^T
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kAttnWarps + threadIdx.x / 32;
  if (w >= warps) return;
  const int qt = static_cast<int>(tiles_inner ? w % tiles : w / seq_heads);
  const int64_t sh = tiles_inner ? w / tiles : w - qt * seq_heads;
  const int64_t b = sh / p.heads;
  const int h = static_cast<int>(sh - b * p.heads);
  const int len = static_cast<int>(p.lengths[b]);
  const int64_t row0 = p.offsets != nullptr ? p.offsets[b] : b * p.longest;
  const int rows = p.offsets != nullptr ? len : static_cast<int>(p.longest);
  const int q0 = qt * 16;
  if (q0 >= rows) return;
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t hidden = static_cast<int64_t>(p.heads) * D;
  const int64_t stride = 3 * hidden;
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  T* out = p.out + (row0 + q0) * hidden + static_cast<int64_t>(h) * D + 8 * t;
  if (q0 >= len) {  // padded layout: padding rows only
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (q0 + 8 * i + g >= rows) continue;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) Store16(out + (8 * i + g) * hidden + 32 * c, zero);
    }
    return;
  }
  const T* base = p.qkv + row0 * stride + static_cast<int64_t>(h) * D + 8 * t;

  // Every load first (rows past the sequence read as zeros: finite, and masked below).
  // q[i]: query row q0 + 8 i + g; k[kb][i], v[kb][i]: key row 16 kb + 8 i + g.
  uint4 q[2][kChunks], k[KB][2][kChunks], v[KB][2][kChunks];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = q0 + 8 * i + g;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      q[i][c] = r < len ? *reinterpret_cast<const uint4*>(base + r * stride + 32 * c) : zero;
    }
  }
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = 16 * kb + 8 * i + g;
      const T* row = base + r * stride + hidden;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        k[kb][i][c] = r < len ? *reinterpret_cast<const uint4*>(row + 32 * c) : zero;
        v[kb][i][c] = r < len ? *reinterpret_cast<const uint4*>(row + hidden + 32 * c) : zero;
      }
    }
  }

  // S = Q K^T: s[kb][n] holds rows g, g + 8 at keys 16 kb + 8 n + 2t, + 1.
  float s[KB][2][4];
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[kb][n][e] = 0.f;
#pragma unroll
      for (int step = 0; step < kSteps; ++step) {
        const int c = step / 2, i0 = 2 * (step % 2);
        const uint32_t a[4] = {Word(q[0][c], i0), Word(q[1][c], i0), Word(q[0][c], i0 + 1),
                               Word(q[1][c], i0 + 1)};
        Ops::Mma(s[kb][n], a, Word(k[kb][n][c], i0), Word(k[kb][n][c], i0 + 1));
      }
    }
  }

  // Softmax per row in fp32: a row's keys lie in the 4 lanes of its group.
  float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool valid = 16 * kb + 8 * n + 2 * t + e < len;
        s[kb][n][e] = valid ? s[kb][n][e] * p.scale : -INFINITY;
        s[kb][n][2 + e] = valid ? s[kb][n][2 + e] * p.scale : -INFINITY;
        m0 = fmaxf(m0, s[kb][n][e]);
        m1 = fmaxf(m1, s[kb][n][2 + e]);
      }
    }
  }
#pragma unroll
  for (int o = 1; o < 4; o *= 2) {
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, o));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, o));
  }
  float l0 = 0.f, l1 = 0.f;
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[kb][n][e] = expf(s[kb][n][e] - m0);
        s[kb][n][2 + e] = expf(s[kb][n][2 + e] - m1);
        l0 += s[kb][n][e];
        l1 += s[kb][n][2 + e];
      }
    }
  }
  l0 = GroupSum<4>(l0);
  l1 = GroupSum<4>(l1);
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;

  // O = P V, P as hi + lo parts. P's A fragment for keys 16 kb .. + 15 is s[kb] as it
  // stands: a0 = (row g, keys 2t, 2t + 1) = s[kb][0][0..1], a1 = row g + 8, a2 and a3 the
  // keys 8 + 2t, 9 + 2t of s[kb][1]. V's B fragment for output group (c, i): the
  // transposed words i of key rows 16 kb + g (b0) and 16 kb + 8 + g (b1); its column
  // n = g is head column 32 c + 8 (g / 2) + 2 i + g % 2, so accumulator o[c][i] holds
  // columns 32 c + 8t + 2i, + 1 of rows g and g + 8.
  float o[kChunks][4][4];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[c][i][e] = 0.f;
    }
  }
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
    uint32_t hi[4], lo[4];
    SplitPair<T>(s[kb][0][0] * inv0, s[kb][0][1] * inv0, &hi[0], &lo[0]);
    SplitPair<T>(s[kb][0][2] * inv1, s[kb][0][3] * inv1, &hi[1], &lo[1]);
    SplitPair<T>(s[kb][1][0] * inv0, s[kb][1][1] * inv0, &hi[2], &lo[2]);
    SplitPair<T>(s[kb][1][2] * inv1, s[kb][1][3] * inv1, &hi[3], &lo[3]);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t b0 = Transpose8x8(Word(v[kb][0][c], i));
        const uint32_t b1 = Transpose8x8(Word(v[kb][1][c], i));
        Ops::Mma(o[c][i], hi, b0, b1);
        Ops::Mma(o[c][i], lo, b0, b1);
      }
    }
  }

  // Rows of the sequence get the context, a padded layout's rows past it zeros.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = q0 + 8 * i + g;
    if (r >= rows) continue;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const uint4 u = make_uint4(Ops::Pack(o[c][0][2 * i], o[c][0][2 * i + 1]),
                                 Ops::Pack(o[c][1][2 * i], o[c][1][2 * i + 1]),
                                 Ops::Pack(o[c][2][2 * i], o[c][2][2 * i + 1]),
                                 Ops::Pack(o[c][3][2 * i], o[c][3][2 * i + 1]));
      Store16(out + (8 * i + g) * hidden + 32 * c, r < len ? u : zero);
    }
  }
}

// Whether the current device runs the tensor-core form (mma.m16n8k16 with fp16/bf16
// inputs and movmatrix need sm_80 or newer).
bool MmaAttentionRuns() {
  int device = 0, major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
         major >= 8;
}

// rows: qkv's rows (0: not known). The tiles of a (sequence, head) are neighbours
// (tiles_inner) in the padded layout, where every tile has rows to write, and in a packed
// batch whose sequences average more tokens than all but the last tile hold.
template <typename T, int D>
cudaError_t LaunchMmaAttention(const AttnParams<T>& p, int64_t batch, int64_t rows,
                               cudaStream_t stream) {
  const int tiles = static_cast<int>((p.longest + 15) / 16);
  const int64_t seq_heads = batch * p.heads;
  const int64_t warps = seq_heads * tiles;
  const int64_t blocks = (warps + kAttnWarps - 1) / kAttnWarps;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  const bool tiles_inner = p.offsets == nullptr || rows > batch * 16 * (tiles - 1);
  const dim3 grid(static_cast<unsigned>(blocks));
  if (p.longest <= 16) {
    PackedAttentionMmaKernel<T, D, 1><<<grid, kThreads, 0, stream>>>(p, seq_heads, tiles,
                                                                     tiles_inner, warps);
  } else if (p.longest <= 32) {
    PackedAttentionMmaKernel<T, D, 2><<<grid, kThreads, 0, stream>>>(p, seq_heads, tiles,
                                                                     tiles_inner, warps);
  } else {
    PackedAttentionMmaKernel<T, D, 4><<<grid, kThreads, 0, stream>>>(p, seq_heads, tiles,
                                                                     tiles_inner, warps);
  }
  return cudaGetLastError();
}

template <typename T>
AttnParams<T> MakeAttnParams(const PackedAttentionArgs& a) {
  AttnParams<T> p;
  p.out = static_cast<T*>(a.out);
  p.qkv = static_cast<const T*>(a.qkv);
  p.offsets = a.offsets;
  p.lengths = a.lengths;
  p.longest = a.longest;
  p.heads = a.heads;
  p.scale = a.scale;
  return p;
}

template <typename T>
cudaError_t PackedAttentionSimt(const PackedAttentionArgs& a, cudaStream_t stream) {
  const AttnParams<T> p = MakeAttnParams<T>(a);
  const dim3 grid(static_cast<unsigned>(a.batch), static_cast<unsigned>(a.heads));
  if (a.head_dim == 32) {
    PackedAttentionKernel<T, 32><<<grid, kThreads, 0, stream>>>(p);
  } else {
    PackedAttentionKernel<T, 64><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t PackedAttentionTyped(const PackedAttentionArgs& a, cudaStream_t stream) {
  if (a.form == AttentionForm::kSimt || !MmaAttentionRuns()) return PackedAttentionSimt<T>(a, stream);
  const AttnParams<T> p = MakeAttnParams<T>(a);
  if (a.head_dim == 32) return LaunchMmaAttention<T, 32>(p, a.batch, a.rows, stream);
  return LaunchMmaAttention<T, 64>(p, a.batch, a.rows, stream);
}

}  // namespace

cudaError_t PackedAttention(const PackedAttentionArgs& a, cudaStream_t stream) {
  if (!PackedAttentionRuns(a.head_dim, a.longest) || a.batch < 0 || a.heads < 1 ||
      a.heads > 65535 || a.batch > 0x7fffffffLL) {
    return cudaErrorInvalidValue;
  }
  if (a.batch == 0) return cudaSuccess;
  if (a.out == nullptr || a.qkv == nullptr || a.lengths == nullptr || !Aligned16(a.out) ||
      !Aligned16(a.qkv)) {
    return cudaErrorInvalidValue;
  }
  switch (a.dtype) {
    case Dtype::kFloat32: return PackedAttentionSimt<float>(a, stream);
    case Dtype::kFloat16: return PackedAttentionTyped<__half>(a, stream);
    case Dtype::kBFloat16: return PackedAttentionTyped<__nv_bfloat16>(a, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t AddLayerNorm(const AddLayerNormArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.width < 0 || a.width > (int64_t{1} << 30)) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  if (a.width == 0 || a.out == nullptr || a.x == nullptr || a.gamma == nullptr || a.beta == nullptr) {
    return cudaErrorInvalidValue;
  }
  // Every launch puts >= 4 rows in a block; grid.x is at most 2^31 - 1 blocks.
  if (a.rows / 4 >= 0x7fffffffLL) return cudaErrorInvalidValue;
  switch (a.dtype) {
    case Dtype::kFloat32: return AddLayerNormTyped<float>(a, stream);
    case Dtype::kFloat16: return AddLayerNormTyped<__half>(a, stream);
    case Dtype::kBFloat16: return AddLayerNormTyped<__nv_bfloat16>(a, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t BiasActivation(Dtype dtype, void* x, const void* bias, int64_t rows, int64_t width,
                           Activation act, cudaStream_t stream) {
  if (rows < 0 || width < 0 || width > (int64_t{1} << 30)) return cudaErrorInvalidValue;
  if (rows == 0 || width == 0) return cudaSuccess;
  if (x == nullptr) return cudaErrorInvalidValue;
  switch (dtype) {
    case Dtype::kFloat32: return BiasActDispatch<float>(x, bias, rows, width, act, stream);
    case Dtype::kFloat16: return BiasActDispatch<__half>(x, bias, rows, width, act, stream);
    case Dtype::kBFloat16: return BiasActDispatch<__nv_bfloat16>(x, bias, rows, width, act, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda_kernels
}  // namespace embedserve
