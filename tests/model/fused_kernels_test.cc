// The fused CUDA kernels (src/model/fused_kernels.cu through fused_ops.h) against
// ATen: residual + bias + LayerNorm against at::layer_norm(x + r + b) computed in fp64
// from the same inputs, in fp32, fp16 and bf16, at widths that take every kernel
// configuration (8..4,096 in multiples of 8, the vectorized kernel; 1, 7, 383 and 4,104,
// and a misaligned view, the scalar one), rows 0, 1, 3, 33 and 1,000; in place over x and
// over the residual; the embeddings' gathering form; bias + GELU (erf and tanh) against
// at::gelu; the packed self-attention (tensor-core and SIMT forms) against
// softmax(q k^T) v in fp64, packed and padded, head sizes 32 and 64, lengths 1..64. Outputs are poisoned (NaN) first, inputs are fresh random draws.
// Built in every build; without CUDA kernels (the CPU build) or without a CUDA device,
// each case is skipped.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#if defined(EMBEDSERVE_CUDA_KERNELS)
#include "fused_ops.h"
#endif

namespace embedserve {
namespace internal_model {
namespace {

#if defined(EMBEDSERVE_CUDA_KERNELS)

bool HaveCuda() { return torch::cuda::is_available(); }

const char* Name(torch::ScalarType t) {
  return t == torch::kFloat ? "fp32" : t == torch::kHalf ? "fp16" : "bf16";
}

// Largest |out - ref| allowed, with |ref| up to ~5 (unit-variance rows times gamma
// ~1 +- 0.1 plus beta): the output's own rounding in fp16/bf16, fp32 arithmetic in fp32.
double Tolerance(torch::ScalarType t) {
  return t == torch::kFloat ? 2e-5 : t == torch::kHalf ? 6e-3 : 5e-2;
}

torch::Tensor Rand(std::vector<int64_t> shape, torch::ScalarType t, double scale = 1.0,
                   double shift = 0.0) {
  return (torch::randn(shape, torch::TensorOptions().dtype(torch::kDouble)) * scale + shift)
      .to(torch::TensorOptions().device(torch::kCUDA).dtype(t));
}

torch::Tensor Poisoned(std::vector<int64_t> shape, torch::ScalarType t) {
  return torch::full(shape, std::numeric_limits<double>::quiet_NaN(),
                     torch::TensorOptions().device(torch::kCUDA).dtype(t));
}

// LayerNorm(x + r + b) * g + beta in fp64 on the CPU (r, b may be undefined).
torch::Tensor Reference(const torch::Tensor& x, const torch::Tensor& r, const torch::Tensor& b,
                        const torch::Tensor& g, const torch::Tensor& beta, double eps) {
  torch::Tensor s = x.to(torch::kCPU, torch::kDouble);
  if (r.defined()) s = s + r.to(torch::kCPU, torch::kDouble);
  if (b.defined()) s = s + b.to(torch::kCPU, torch::kDouble);
  return at::layer_norm(s, {x.size(1)}, g.to(torch::kCPU, torch::kDouble),
                        beta.to(torch::kCPU, torch::kDouble), eps);
}

double MaxDiff(const torch::Tensor& got, const torch::Tensor& ref) {
  if (got.numel() == 0) return 0.0;
  const torch::Tensor g = got.to(torch::kCPU, torch::kDouble);
  EXPECT_FALSE(g.isnan().any().item<bool>()) << "an output element was not written (NaN)";
  return (g - ref).abs().max().item<double>();
}

const std::vector<torch::ScalarType> kDtypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};

TEST(FusedKernelsCuda, AddLayerNormMatchesAtenLayerNorm) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(1);
  const double eps = 1e-12;
  const std::vector<int64_t> widths = {384, 8, 64, 128, 256, 392, 512, 768, 1024, 2048, 4096,
                                       1, 7, 383, 4104};
  const std::vector<int64_t> row_counts = {0, 1, 3, 33, 1000};
  for (torch::ScalarType t : kDtypes) {
    for (int64_t w : widths) {
      for (int64_t rows : row_counts) {
        SCOPED_TRACE(std::string(Name(t)) + " width " + std::to_string(w) + " rows " +
                     std::to_string(rows));
        const torch::Tensor x = Rand({rows, w}, t, 2.0, 0.5);
        const torch::Tensor r = Rand({rows, w}, t);
        const torch::Tensor b = Rand({w}, t, 0.1);
        const torch::Tensor g = Rand({w}, t, 0.1, 1.0);
        const torch::Tensor beta = Rand({w}, t, 0.1);
        const torch::Tensor ref = Reference(x, r, b, g, beta, eps);
        torch::Tensor out = Poisoned({rows, w}, t);
        FusedAddLayerNorm(x, r, b, g, beta, eps, out);
        const double fused = MaxDiff(out, ref);
        EXPECT_LE(fused, Tolerance(t));
        // ATen's own path in the storage dtype (x + r + b rounded, then layer_norm), the
        // unfused forward's: the fused kernel rounds once, so it should be no worse.
        const torch::Tensor aten = at::layer_norm(x + r + b, {w}, g, beta, eps);
        const double unfused = MaxDiff(aten, ref);
        EXPECT_LE(fused, unfused * 2 + Tolerance(t) * 0.25)
            << "fused " << fused << " vs at::layer_norm " << unfused;
        // No residual and no bias: plain LayerNorm.
        torch::Tensor plain = Poisoned({rows, w}, t);
        FusedAddLayerNorm(x, torch::Tensor(), torch::Tensor(), g, beta, eps, plain);
        EXPECT_LE(MaxDiff(plain, Reference(x, {}, {}, g, beta, eps)), Tolerance(t));
        // Default out (a new tensor).
        EXPECT_LE(MaxDiff(FusedAddLayerNorm(x, r, {}, g, beta, eps), Reference(x, r, {}, g, beta, eps)),
                  Tolerance(t));
      }
    }
  }
}

TEST(FusedKernelsCuda, AddLayerNormInPlaceAndMisaligned) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(2);
  const double eps = 1e-5;
  for (torch::ScalarType t : kDtypes) {
    for (int64_t w : {384, 1024, 7}) {
      SCOPED_TRACE(std::string(Name(t)) + " width " + std::to_string(w));
      const int64_t rows = 257;
      const torch::Tensor x = Rand({rows, w}, t);
      const torch::Tensor r = Rand({rows, w}, t);
      const torch::Tensor b = Rand({w}, t, 0.1);
      const torch::Tensor g = Rand({w}, t, 0.1, 1.0);
      const torch::Tensor beta = Rand({w}, t, 0.1);
      const torch::Tensor ref = Reference(x, r, b, g, beta, eps);
      // Over x (the forward's use: the GEMM output is overwritten).
      torch::Tensor x1 = x.clone();
      torch::Tensor got = FusedAddLayerNorm(x1, r, b, g, beta, eps, x1);
      EXPECT_EQ(got.data_ptr(), x1.data_ptr());
      EXPECT_LE(MaxDiff(x1, ref), Tolerance(t));
      // Over the residual.
      torch::Tensor r1 = r.clone();
      FusedAddLayerNorm(x, r1, b, g, beta, eps, r1);
      EXPECT_LE(MaxDiff(r1, ref), Tolerance(t));
      // Contiguous but not 16-byte aligned (one element into a buffer): the scalar kernel.
      torch::Tensor buf = Poisoned({rows * w + 1}, t);
      torch::Tensor xm = buf.narrow(0, 1, rows * w).view({rows, w});
      xm.copy_(x);
      torch::Tensor outm = Poisoned({rows * w + 1}, t).narrow(0, 1, rows * w).view({rows, w});
      FusedAddLayerNorm(xm, r, b, g, beta, eps, outm);
      EXPECT_LE(MaxDiff(outm, ref), Tolerance(t));
    }
  }
}

TEST(FusedKernelsCuda, GatherAddLayerNormMatchesIndexSelect) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(3);
  const double eps = 1e-12;
  for (torch::ScalarType t : kDtypes) {
    for (int64_t w : {384, 9}) {
      for (int64_t rows : {0, 1, 1000}) {
        SCOPED_TRACE(std::string(Name(t)) + " width " + std::to_string(w) + " rows " +
                     std::to_string(rows));
        const torch::Tensor word = Rand({1000, w}, t, 0.05);
        const torch::Tensor pos = Rand({512, w}, t, 0.02);
        const auto long_cuda = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong);
        const torch::Tensor ids = torch::randint(0, 1000, {rows}, long_cuda);
        const torch::Tensor positions = torch::randint(0, 512, {rows}, long_cuda);
        const torch::Tensor g = Rand({w}, t, 0.1, 1.0);
        const torch::Tensor beta = Rand({w}, t, 0.1);
        const torch::Tensor ref = Reference(word.index_select(0, ids), pos.index_select(0, positions),
                                            {}, g, beta, eps);
        const torch::Tensor got = FusedGatherAddLayerNorm(word, ids, pos, positions, g, beta, eps);
        ASSERT_EQ(got.sizes(), (std::vector<int64_t>{rows, w}));
        EXPECT_LE(MaxDiff(got, ref), Tolerance(t));
      }
    }
  }
}

TEST(FusedKernelsCuda, BiasGeluMatchesAtenGelu) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(4);
  for (torch::ScalarType t : kDtypes) {
    for (int64_t w : {1536, 384, 8, 7, 1}) {
      for (int64_t rows : {0, 1, 5, 1000}) {
        for (bool tanh : {false, true}) {
          SCOPED_TRACE(std::string(Name(t)) + " width " + std::to_string(w) + " rows " +
                       std::to_string(rows) + (tanh ? " tanh" : " erf"));
          const torch::Tensor x = Rand({rows, w}, t, 2.0);
          const torch::Tensor b = Rand({w}, t, 0.5);
          const torch::Tensor ref =
              at::gelu(x.to(torch::kCPU, torch::kDouble) + b.to(torch::kCPU, torch::kDouble),
                       tanh ? "tanh" : "none");
          torch::Tensor y = x.clone();
          FusedBiasGelu_(y, b, tanh);
          // |gelu| <= |v| ~ up to 10 here: one rounding of the output.
          const double tol = t == torch::kFloat ? 1e-5 : t == torch::kHalf ? 1e-2 : 8e-2;
          EXPECT_LE(MaxDiff(y, ref), tol);
          torch::Tensor nobias = x.clone();
          FusedBiasGelu_(nobias, torch::Tensor(), tanh);
          EXPECT_LE(MaxDiff(nobias, at::gelu(x.to(torch::kCPU, torch::kDouble), tanh ? "tanh" : "none")),
                    tol);
        }
      }
    }
  }
}

// softmax(q k^T * scale) v per sequence and head in fp64 on the CPU, from the same
// (rounded) qkv rows: [rows of the sequences, heads * head_dim] packed back to back.
torch::Tensor AttentionReference(const torch::Tensor& qkv, const std::vector<int64_t>& offsets,
                                 const std::vector<int64_t>& lengths, int64_t heads,
                                 double scale) {
  const torch::Tensor x = qkv.to(torch::kCPU, torch::kDouble);
  const int64_t hidden = x.size(1) / 3, d = hidden / heads;
  torch::Tensor out = torch::zeros({x.size(0), hidden}, x.options());
  for (size_t i = 0; i < lengths.size(); ++i) {
    const torch::Tensor rows = x.narrow(0, offsets[i], lengths[i]);
    for (int64_t h = 0; h < heads; ++h) {
      const torch::Tensor q = rows.narrow(1, h * d, d), k = rows.narrow(1, hidden + h * d, d),
                          v = rows.narrow(1, 2 * hidden + h * d, d);
      out.narrow(0, offsets[i], lengths[i]).narrow(1, h * d, d).copy_(
          torch::softmax(q.matmul(k.t()) * scale, 1).matmul(v));
    }
  }
  return out;
}

TEST(FusedKernelsCuda, PackedAttentionMatchesSoftmaxReference) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(5);
  const auto i64 = torch::TensorOptions().dtype(torch::kLong);
  // Longest 16, 32, 48 and 64 (the tensor-core form's key-block counts 1, 2 and 4), mixed
  // lengths in each, and every length of 1..64 in one batch.
  std::vector<int64_t> all(64);
  for (int64_t i = 0; i < 64; ++i) all[static_cast<size_t>(i)] = (i * 37) % 64 + 1;
  const std::vector<std::vector<int64_t>> batches = {
      {16, 16, 16}, {1, 16, 5, 9, 12, 3}, {17, 32, 1, 20, 31}, {33, 48, 2, 40},
      {16, 1, 5, 33, 64, 16, 2, 31, 32}, all};
  for (torch::ScalarType t : kDtypes) {
    for (const auto& [heads, d] : std::vector<std::pair<int64_t, int64_t>>{{12, 32}, {4, 64}}) {
      for (bool simt : {false, true}) {
        for (const std::vector<int64_t>& lengths : batches) {
          const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
          SCOPED_TRACE(std::string(Name(t)) + " heads " + std::to_string(heads) + " head_dim " +
                       std::to_string(d) + (simt ? " simt" : "") + " longest " +
                       std::to_string(longest) + " sequences " + std::to_string(lengths.size()));
          const double scale = 1.0 / std::sqrt(static_cast<double>(d));
          const torch::Tensor lengths_d = torch::tensor(lengths, i64).to(torch::kCUDA);
          // Packed: sequences back to back.
          std::vector<int64_t> offsets;
          int64_t rows = 0;
          for (int64_t len : lengths) {
            offsets.push_back(rows);
            rows += len;
          }
          const torch::Tensor qkv = Rand({rows, 3 * heads * d}, t, 2.0);
          // A NaN block of the output's size freed just before: the caching allocator hands
          // it to the output, so an element the kernel leaves unwritten shows.
          Poisoned({rows, heads * d}, t);
          const torch::Tensor got = FusedPackedAttention(
              qkv, torch::tensor(offsets, i64).to(torch::kCUDA), lengths_d, longest, heads,
              scale, simt);
          EXPECT_LE(MaxDiff(got, AttentionReference(qkv, offsets, lengths, heads, scale)),
                    Tolerance(t));
          // Padded: `longest` rows a sequence, rows past its length come back as zeros.
          std::vector<int64_t> padded_offsets;
          for (size_t i = 0; i < lengths.size(); ++i) {
            padded_offsets.push_back(static_cast<int64_t>(i) * longest);
          }
          const int64_t padded_rows = static_cast<int64_t>(lengths.size()) * longest;
          const torch::Tensor qkv_p = Rand({padded_rows, 3 * heads * d}, t, 2.0);
          Poisoned({padded_rows, heads * d}, t);
          const torch::Tensor got_p =
              FusedPackedAttention(qkv_p, torch::Tensor(), lengths_d, longest, heads, scale, simt);
          EXPECT_LE(
              MaxDiff(got_p, AttentionReference(qkv_p, padded_offsets, lengths, heads, scale)),
              Tolerance(t));
        }
      }
    }
  }
  // Shapes the kernel does not take are refused, not run.
  const torch::Tensor qkv = Rand({130, 3 * 12 * 32}, torch::kHalf);
  const torch::Tensor lengths1 = torch::tensor(std::vector<int64_t>{65, 65}, i64).to(torch::kCUDA);
  EXPECT_THROW(FusedPackedAttention(qkv, torch::Tensor(), lengths1, 65, 12, 1.0), c10::Error);
  const torch::Tensor qkv48 = Rand({16, 3 * 8 * 48}, torch::kHalf);
  const torch::Tensor lengths2 = torch::tensor(std::vector<int64_t>{16}, i64).to(torch::kCUDA);
  EXPECT_THROW(FusedPackedAttention(qkv48, torch::Tensor(), lengths2, 16, 8, 1.0), c10::Error);
}

TEST(FusedKernelsCuda, RejectsBadArguments) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  const torch::Tensor x = Rand({4, 16}, torch::kHalf);
  const torch::Tensor g = Rand({16}, torch::kHalf);
  EXPECT_THROW(FusedAddLayerNorm(x, {}, {}, Rand({8}, torch::kHalf), g, 1e-5), c10::Error);
  EXPECT_THROW(FusedAddLayerNorm(x, Rand({4, 16}, torch::kFloat), {}, g, g, 1e-5), c10::Error);
  EXPECT_THROW(FusedAddLayerNorm(x.cpu(), {}, {}, g.cpu(), g.cpu(), 1e-5), c10::Error);
  EXPECT_THROW(FusedAddLayerNorm(x.t(), {}, {}, Rand({4}, torch::kHalf), Rand({4}, torch::kHalf), 1e-5),
               c10::Error);
  torch::Tensor ints = torch::zeros({4, 16}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kInt));
  EXPECT_THROW(FusedBiasGelu_(ints, {}, false), c10::Error);
}

#else  // built without the CUDA kernels (the CPU build)

TEST(FusedKernelsCuda, NotBuilt) { GTEST_SKIP() << "this build has no CUDA kernels (CPU LibTorch)"; }

#endif

}  // namespace
}  // namespace internal_model
}  // namespace embedserve
