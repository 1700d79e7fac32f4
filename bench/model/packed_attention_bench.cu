// Command: build-gpu/bench/model/packed_attention_bench [check] [time]   (both when none)
// or, without CMake (the kernels need no LibTorch):
//   nvcc -O3 -std=c++17 -arch=sm_90 -Isrc/model bench/model/packed_attention_bench.cu \
//     src/model/fused_kernels.cu -o /tmp/packed_attention_bench
// fused_kernels.h's PackedAttention alone, both forms (tensor cores and SIMT), on raw
// device buffers (issue 14):
//   check: every form, dtype and head size against softmax(q k^T * scale) v in fp64 on the
//          host from the same rounded inputs, on batches whose lengths take each key-block
//          count (longest 16, 32, 48, 64; all of 1..64 in one batch), packed and padded
//          (padding rows must come back as zeros); outputs poisoned (all bits set: NaN)
//          before each launch. Exit status 1 on any mismatch.
//   time:  us per launch (CUDA events around 50 launches, median of 7 rounds), rotating
//          over enough QKV buffers to exceed the L2 cache, with the bytes the launch must
//          move (q, k, v of the sequences' rows read once, the context written once) over
//          that time. The shapes: MiniLM-L6's (12 heads x 32) at 1,024 x 16 (BM_Embed),
//          uniform 32 and 64 tokens, short texts of 5-30 tokens, a padded 128 x 64 graph
//          bucket of short texts; head_dim 64 (6 heads) at 1,024 x 16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fused_kernels.h"

namespace ck = embedserve::cuda_kernels;

namespace {

#define CUDA_OK(x)                                                                  \
  do {                                                                              \
    const cudaError_t e_ = (x);                                                     \
    if (e_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,               \
                   cudaGetErrorString(e_));                                         \
      std::exit(2);                                                                 \
    }                                                                               \
  } while (0)

uint64_t g_state = 0x9e3779b97f4a7c15ull;
double Uniform() {  // (0, 1)
  g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
  return (static_cast<double>(g_state >> 11) + 0.5) / 9007199254740992.0;
}
double Normal() { return std::sqrt(-2.0 * std::log(Uniform())) * std::cos(6.283185307179586 * Uniform()); }

size_t ElemSize(ck::Dtype t) { return t == ck::Dtype::kFloat32 ? 4 : 2; }
const char* Name(ck::Dtype t) {
  return t == ck::Dtype::kFloat32 ? "fp32" : t == ck::Dtype::kFloat16 ? "fp16" : "bf16";
}
const char* Name(ck::AttentionForm f) { return f == ck::AttentionForm::kAuto ? "auto" : "simt"; }

// Host values rounded to `t`, stored as its bytes; `vals` gets the rounded values.
std::vector<uint8_t> Encode(ck::Dtype t, std::vector<double>* vals) {
  std::vector<uint8_t> bytes(vals->size() * ElemSize(t));
  for (size_t i = 0; i < vals->size(); ++i) {
    const float f = static_cast<float>((*vals)[i]);
    if (t == ck::Dtype::kFloat32) {
      std::memcpy(&bytes[4 * i], &f, 4);
      (*vals)[i] = f;
    } else if (t == ck::Dtype::kFloat16) {
      const __half h = __float2half_rn(f);
      std::memcpy(&bytes[2 * i], &h, 2);
      (*vals)[i] = __half2float(h);
    } else {
      const __nv_bfloat16 h = __float2bfloat16_rn(f);
      std::memcpy(&bytes[2 * i], &h, 2);
      (*vals)[i] = __bfloat162float(h);
    }
  }
  return bytes;
}
double Decode(ck::Dtype t, const uint8_t* p) {
  if (t == ck::Dtype::kFloat32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (t == ck::Dtype::kFloat16) {
    __half h;
    std::memcpy(&h, p, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, p, 2);
  return __bfloat162float(h);
}

struct Batch {
  std::vector<int64_t> lengths, offsets;  // offsets empty: padded layout
  int64_t longest = 0, rows = 0;
};
Batch MakeBatch(const std::vector<int64_t>& lengths, bool padded) {
  Batch b;
  b.lengths = lengths;
  b.longest = *std::max_element(lengths.begin(), lengths.end());
  for (int64_t len : lengths) {
    if (!padded) b.offsets.push_back(b.rows);
    b.rows += padded ? 0 : len;
  }
  if (padded) b.rows = b.longest * static_cast<int64_t>(lengths.size());
  return b;
}

struct DeviceBatch {
  int64_t* lengths = nullptr;
  int64_t* offsets = nullptr;
  explicit DeviceBatch(const Batch& b) {
    CUDA_OK(cudaMalloc(&lengths, b.lengths.size() * 8));
    CUDA_OK(cudaMemcpy(lengths, b.lengths.data(), b.lengths.size() * 8, cudaMemcpyHostToDevice));
    if (!b.offsets.empty()) {
      CUDA_OK(cudaMalloc(&offsets, b.offsets.size() * 8));
      CUDA_OK(cudaMemcpy(offsets, b.offsets.data(), b.offsets.size() * 8, cudaMemcpyHostToDevice));
    }
  }
  ~DeviceBatch() {
    cudaFree(lengths);
    cudaFree(offsets);
  }
};

ck::PackedAttentionArgs Args(ck::Dtype t, ck::AttentionForm form, const Batch& b,
                             const DeviceBatch& db, int heads, int d, void* out, const void* qkv) {
  ck::PackedAttentionArgs a;
  a.dtype = t;
  a.out = out;
  a.qkv = qkv;
  a.offsets = db.offsets;
  a.lengths = db.lengths;
  a.batch = static_cast<int64_t>(b.lengths.size());
  a.longest = b.longest;
  a.heads = heads;
  a.head_dim = d;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  a.form = form;
  a.rows = b.rows;
  return a;
}

// Largest |got - ref| over every element; unwritten (poisoned) or non-finite -> infinity.
double CheckOne(ck::Dtype t, ck::AttentionForm form, const Batch& b, int heads, int d) {
  const int64_t hidden = static_cast<int64_t>(heads) * d;
  std::vector<double> x(static_cast<size_t>(b.rows * 3 * hidden));
  for (double& v : x) v = 2.0 * Normal();
  const std::vector<uint8_t> bytes = Encode(t, &x);
  void *qkv = nullptr, *out = nullptr;
  const size_t out_bytes = static_cast<size_t>(b.rows * hidden) * ElemSize(t);
  CUDA_OK(cudaMalloc(&qkv, bytes.size()));
  CUDA_OK(cudaMalloc(&out, out_bytes));
  CUDA_OK(cudaMemcpy(qkv, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(out, 0xff, out_bytes));
  const DeviceBatch db(b);
  CUDA_OK(ck::PackedAttention(Args(t, form, b, db, heads, d, out, qkv), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> got(out_bytes);
  CUDA_OK(cudaMemcpy(got.data(), out, out_bytes, cudaMemcpyDeviceToHost));
  cudaFree(qkv);
  cudaFree(out);

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  double worst = 0.0;
  std::vector<double> s(64), ref(static_cast<size_t>(d));
  for (size_t i = 0; i < b.lengths.size(); ++i) {
    const int64_t len = b.lengths[i];
    const int64_t row0 = b.offsets.empty() ? static_cast<int64_t>(i) * b.longest : b.offsets[i];
    const int64_t rows = b.offsets.empty() ? b.longest : len;
    for (int h = 0; h < heads; ++h) {
      for (int64_t qr = 0; qr < rows; ++qr) {
        std::fill(ref.begin(), ref.end(), 0.0);
        if (qr < len) {
          const double* q = &x[static_cast<size_t>((row0 + qr) * 3 * hidden + h * d)];
          double m = -INFINITY, sum = 0.0;
          for (int64_t j = 0; j < len; ++j) {
            const double* k = &x[static_cast<size_t>((row0 + j) * 3 * hidden + hidden + h * d)];
            double dot = 0.0;
            for (int c = 0; c < d; ++c) dot += q[c] * k[c];
            s[j] = dot * scale;
            m = std::max(m, s[j]);
          }
          for (int64_t j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - m));
          for (int64_t j = 0; j < len; ++j) {
            const double* v =
                &x[static_cast<size_t>((row0 + j) * 3 * hidden + 2 * hidden + h * d)];
            for (int c = 0; c < d; ++c) ref[c] += s[j] / sum * v[c];
          }
        }
        for (int c = 0; c < d; ++c) {
          const double g = Decode(
              t, &got[static_cast<size_t>((row0 + qr) * hidden + h * d + c) * ElemSize(t)]);
          const double err = std::isfinite(g) ? std::fabs(g - ref[c]) : INFINITY;
          worst = std::max(worst, err);
        }
      }
    }
  }
  return worst;
}

int Check() {
  // Outputs |ref| <= ~2 x 4 (values of N(0, 4)): one rounding of the output, plus fp32
  // arithmetic.
  const auto tolerance = [](ck::Dtype t) {
    return t == ck::Dtype::kFloat32 ? 2e-5 : t == ck::Dtype::kFloat16 ? 6e-3 : 5e-2;
  };
  std::vector<int64_t> all;
  for (int64_t l = 1; l <= 64; ++l) all.push_back(l);
  for (size_t i = all.size() - 1; i > 0; --i) {
    std::swap(all[i], all[static_cast<size_t>(Uniform() * static_cast<double>(i + 1)) % (i + 1)]);
  }
  const std::vector<std::vector<int64_t>> batches = {
      {16, 16, 16}, {1, 16, 5, 9, 12, 3}, {17, 32, 1, 20, 31}, {33, 48, 2, 40}, all, {1}};
  int failed = 0, cases = 0;
  for (ck::Dtype t : {ck::Dtype::kFloat16, ck::Dtype::kBFloat16, ck::Dtype::kFloat32}) {
    for (ck::AttentionForm form : {ck::AttentionForm::kAuto, ck::AttentionForm::kSimt}) {
      if (t == ck::Dtype::kFloat32 && form == ck::AttentionForm::kAuto) continue;  // same
      for (const auto& [heads, d] : std::vector<std::pair<int, int>>{{12, 32}, {3, 64}}) {
        double worst = 0.0;
        for (const auto& lengths : batches) {
          for (bool padded : {false, true}) {
            worst = std::max(worst, CheckOne(t, form, MakeBatch(lengths, padded), heads, d));
            ++cases;
          }
        }
        const bool ok = worst <= tolerance(t);
        failed += ok ? 0 : 1;
        std::printf("check %s %s heads %2d x %d: max |err| %.3g (tolerance %.0e) %s\n", Name(t),
                    Name(form), heads, d, worst, tolerance(t), ok ? "ok" : "FAILED");
      }
    }
  }
  std::printf("check: %d launches, %s\n", cases, failed == 0 ? "all ok" : "FAILURES");
  return failed == 0 ? 0 : 1;
}

void TimeOne(const char* what, ck::Dtype t, const Batch& b, int heads, int d) {
  const int64_t hidden = static_cast<int64_t>(heads) * d;
  const size_t qkv_bytes = static_cast<size_t>(b.rows * 3 * hidden) * ElemSize(t);
  const size_t out_bytes = static_cast<size_t>(b.rows * hidden) * ElemSize(t);
  int64_t tokens = 0;
  for (int64_t len : b.lengths) tokens += len;
  const double moved = static_cast<double>(tokens * 4 * hidden) * ElemSize(t) +
                       (b.offsets.empty() ? static_cast<double>((b.rows - tokens) * hidden) *
                                                ElemSize(t)
                                          : 0.0);
  // Enough buffers for 200 MB (the L2 holds 50-60 MB), at least 2.
  const int nbuf = std::max<int>(2, static_cast<int>(200e6 / static_cast<double>(qkv_bytes)) + 1);
  std::vector<void*> qkv(nbuf), out(nbuf);
  std::vector<double> x(static_cast<size_t>(b.rows * 3 * hidden));
  for (double& v : x) v = 2.0 * Normal();
  const std::vector<uint8_t> bytes = Encode(t, &x);
  for (int i = 0; i < nbuf; ++i) {
    CUDA_OK(cudaMalloc(&qkv[i], qkv_bytes));
    CUDA_OK(cudaMalloc(&out[i], out_bytes));
    CUDA_OK(cudaMemcpy(qkv[i], bytes.data(), qkv_bytes, cudaMemcpyHostToDevice));
  }
  const DeviceBatch db(b);
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  std::printf("%-34s %s %2d x %d:", what, Name(t), heads, d);
  for (ck::AttentionForm form : {ck::AttentionForm::kSimt, ck::AttentionForm::kAuto}) {
    constexpr int kLaunches = 50, kRounds = 7;
    std::vector<double> us;
    for (int r = 0; r <= kRounds; ++r) {  // round 0: warm-up
      CUDA_OK(cudaEventRecord(e0));
      for (int i = 0; i < kLaunches; ++i) {
        const int k = (r * kLaunches + i) % nbuf;
        CUDA_OK(ck::PackedAttention(Args(t, form, b, db, heads, d, out[k], qkv[k]), nullptr));
      }
      CUDA_OK(cudaEventRecord(e1));
      CUDA_OK(cudaEventSynchronize(e1));
      float ms = 0.f;
      CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
      if (r > 0) us.push_back(1e3 * ms / kLaunches);
    }
    std::sort(us.begin(), us.end());
    const double med = us[us.size() / 2];
    std::printf("  %s %8.2f us (%6.0f GB/s)", Name(form), med, moved / (med * 1e3));
  }
  std::printf("\n");
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  for (int i = 0; i < nbuf; ++i) {
    cudaFree(qkv[i]);
    cudaFree(out[i]);
  }
}

void Time() {
  const auto uniform = [](int64_t n, int64_t len) { return std::vector<int64_t>(n, len); };
  std::vector<int64_t> shorts(2048), bucket(128);
  for (int64_t& l : shorts) l = 5 + static_cast<int64_t>(Uniform() * 26);  // 5..30
  for (int64_t& l : bucket) l = 5 + static_cast<int64_t>(Uniform() * 26);
  bucket[0] = 64;
  for (ck::Dtype t : {ck::Dtype::kFloat16, ck::Dtype::kBFloat16}) {
    TimeOne("1,024 x 16, packed", t, MakeBatch(uniform(1024, 16), false), 12, 32);
    TimeOne("1,024 x 16, padded", t, MakeBatch(uniform(1024, 16), true), 12, 32);
    TimeOne("1,024 x 32, packed", t, MakeBatch(uniform(1024, 32), false), 12, 32);
    TimeOne("512 x 64, packed", t, MakeBatch(uniform(512, 64), false), 12, 32);
    TimeOne("2,048 texts of 5-30 tokens, packed", t, MakeBatch(shorts, false), 12, 32);
    TimeOne("128 x 64 bucket, 5-30 tokens", t, MakeBatch(bucket, true), 12, 32);
    TimeOne("1,024 x 16, packed", t, MakeBatch(uniform(1024, 16), false), 6, 64);
  }
  TimeOne("1,024 x 16, packed", ck::Dtype::kFloat32, MakeBatch(uniform(1024, 16), false), 12, 32);
}

}  // namespace

int main(int argc, char** argv) {
  bool check = argc < 2, time = argc < 2;
  for (int i = 1; i < argc; ++i) {
    check = check || std::strcmp(argv[i], "check") == 0;
    time = time || std::strcmp(argv[i], "time") == 0;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, sm_%d%d, %d SMs, L2 %d MB\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
  int rc = 0;
  if (check) rc = Check();
  if (time) Time();
  return rc;
}
