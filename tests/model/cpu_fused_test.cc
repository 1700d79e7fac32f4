// The CPU kernels of src/model/cpu_fused.h against the plain LibTorch ops they replace:
// LayerNorm in place, the fused embedding gather + add + LayerNorm, and GELU (erf and
// tanh forms), over widths below, at and above one 16-float vector and not multiples of
// it, row counts that run inline and that fork, one and two threads, and edge cases
// (constant rows, large magnitudes, zero rows), plus the argument checks. ctest runs it
// also as cpu_fused_test_avx2 and _baseline (EMBEDSERVE_CPU_ISA), for those variants.
#include "cpu_fused.h"

#include <torch/torch.h>

#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "cpu_vector.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace internal_model {
namespace {

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

const std::vector<int64_t>& Widths() {
  static const std::vector<int64_t> widths = {1, 5, 16, 17, 31, 384, 1000};
  return widths;
}
const std::vector<int64_t>& RowCounts() {
  static const std::vector<int64_t> rows = {1, 3, 14, 200};  // 200 x 384 forks
  return rows;
}

class CpuFusedTest : public testing::TestWithParam<int> {
 protected:
  void SetUp() override { at::set_num_threads(GetParam()); }
};

TEST_P(CpuFusedTest, LayerNormMatchesAten) {
  torch::manual_seed(11);
  for (int64_t n : Widths()) {
    for (int64_t rows : RowCounts()) {
      // An offset and a spread as in a residual stream, so the mean matters.
      const torch::Tensor x = torch::randn({rows, n}) * 3.0 + 0.7;
      const torch::Tensor g = torch::randn({n});
      const torch::Tensor b = torch::randn({n});
      const torch::Tensor want = at::layer_norm(x.to(torch::kDouble), {n}, g.to(torch::kDouble),
                                                b.to(torch::kDouble), 1e-12);
      torch::Tensor got = x.clone();
      LayerNormInPlaceCpu(got, g, b, 1e-12);
      if (n == 1) {  // a one-element row normalises to 0: the output is beta
        EXPECT_LT(MaxDiff(got, b.expand({rows, 1})), 1e-6);
        continue;
      }
      EXPECT_LT(MaxDiff(got, want), 2e-5) << "rows " << rows << " n " << n;
    }
  }
}

TEST_P(CpuFusedTest, LayerNormOfAConstantRowIsBeta) {
  // Zero variance: (x - mean) is exactly 0, so eps alone keeps it finite.
  torch::Tensor x = torch::full({3, 40}, 2.5f);
  const torch::Tensor g = torch::randn({40});
  const torch::Tensor b = torch::randn({40});
  LayerNormInPlaceCpu(x, g, b, 1e-5);
  EXPECT_TRUE(torch::allclose(x, b.expand({3, 40}), 0, 1e-6));
}

TEST_P(CpuFusedTest, LayerNormOfLargeValuesMatchesAten) {
  torch::manual_seed(12);
  const torch::Tensor x = torch::randn({5, 384}) * 1e4 + 3e4;
  const torch::Tensor g = torch::ones({384}), b = torch::zeros({384});
  torch::Tensor got = x.clone();
  LayerNormInPlaceCpu(got, g, b, 1e-12);
  const torch::Tensor want =
      at::layer_norm(x.to(torch::kDouble), {384}, g.to(torch::kDouble), b.to(torch::kDouble), 1e-12);
  EXPECT_LT(MaxDiff(got, want), 1e-4);
}

TEST_P(CpuFusedTest, EmbedLayerNormMatchesAtenOps) {
  torch::manual_seed(13);
  for (int64_t n : {16, 20, 384}) {
    for (int64_t rows : {1, 14, 150}) {
      const torch::Tensor word = torch::randn({50, n});
      const torch::Tensor pos = torch::randn({20, n});
      const torch::Tensor ids = torch::randint(0, 50, {rows}, torch::kLong);
      const torch::Tensor positions = torch::randint(0, 20, {rows}, torch::kLong);
      const torch::Tensor g = torch::randn({n}), b = torch::randn({n});
      const torch::Tensor got = EmbedLayerNormCpu(word, pos, ids, positions, g, b, 1e-12);
      const torch::Tensor want = at::layer_norm(
          word.index_select(0, ids).add(pos.index_select(0, positions)), {n}, g, b, 1e-12);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_LT(MaxDiff(got, want), 2e-5) << "rows " << rows << " n " << n;
    }
  }
}

TEST_P(CpuFusedTest, GeluMatchesAten) {
  torch::manual_seed(14);
  for (bool tanh : {false, true}) {
    for (int64_t count : {1, 15, 16, 17, 1000, 70000}) {  // 70000 forks
      // Pre-activations of an FFN: mostly within a few units, a tail out to +-12.
      torch::Tensor x = torch::randn({count}) * 3.0;
      if (count > 2) {
        x[0] = -12.0f;
        x[1] = 12.0f;
        x[2] = 0.0f;
      }
      torch::Tensor got = x.clone();
      GeluInPlaceCpu(got, tanh);
      const torch::Tensor want = at::gelu(x.to(torch::kDouble), tanh ? "tanh" : "none");
      // erf to 4e-7 absolute (ErfRational) times |x| / 2, plus fp32 rounding.
      const torch::Tensor bound = x.abs().to(torch::kDouble) * 2e-7 + 1e-6;
      EXPECT_TRUE((got.to(torch::kDouble) - want).abs().le(bound).all().item<bool>())
          << (tanh ? "tanh" : "erf") << " count " << count << " worst "
          << MaxDiff(got, want);
    }
  }
}

TEST_P(CpuFusedTest, BiasGeluAddsTheBiasPerColumnThenAppliesGelu) {
  torch::manual_seed(15);
  for (int64_t n : {1, 17, 1536}) {
    for (int64_t rows : {1, 3, 100}) {  // 100 x 1536 forks
      const torch::Tensor x = torch::randn({rows, n}) * 3.0;
      const torch::Tensor bias = torch::randn({n});
      torch::Tensor got = x.clone();
      BiasGeluInPlaceCpu(got, bias);
      const torch::Tensor pre = x.to(torch::kDouble) + bias.to(torch::kDouble);
      const torch::Tensor want = at::gelu(pre, "none");
      const torch::Tensor bound = pre.abs() * 2e-7 + 1e-6;
      EXPECT_TRUE((got.to(torch::kDouble) - want).abs().le(bound).all().item<bool>())
          << "n " << n << " rows " << rows << " worst " << MaxDiff(got, want);
    }
  }
  torch::Tensor wrong = torch::zeros({2, 8});
  EXPECT_THROW(BiasGeluInPlaceCpu(wrong, torch::zeros({7})), c10::Error);
}

TEST_P(CpuFusedTest, GeluOfLargeNegativeInputsIsTinyNotNan) {
  torch::Tensor x = torch::tensor({-30.0f, -100.0f, -1e4f, 30.0f, 1e4f});
  GeluInPlaceCpu(x, false);
  EXPECT_TRUE(torch::isfinite(x).all().item<bool>());
  EXPECT_LT(x.narrow(0, 0, 3).abs().max().item<float>(), 1e-30f);
  EXPECT_FLOAT_EQ(x[3].item<float>(), 30.0f);
  EXPECT_FLOAT_EQ(x[4].item<float>(), 1e4f);
}

// Far beyond any pre-activation a model makes, but a kernel must not halve x where the
// clamp's arithmetic runs out of precision (|x| above ~1e8).
TEST_P(CpuFusedTest, GeluOfHugeInputsIsXOrZero) {
  const std::vector<float> big = {1e8f, 3e9f, 1e20f, 3e38f};
  for (bool tanh : {false, true}) {
    std::vector<float> v = big;
    for (float b : big) v.push_back(-b);
    torch::Tensor x = torch::tensor(v);
    GeluInPlaceCpu(x, tanh);
    for (size_t i = 0; i < big.size(); ++i) {
      EXPECT_EQ(x[static_cast<int64_t>(i)].item<float>(), big[i]) << (tanh ? "tanh " : "erf ") << big[i];
      EXPECT_EQ(x[static_cast<int64_t>(i + big.size())].item<float>(), 0.0f)
          << (tanh ? "tanh " : "erf ") << -big[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, CpuFusedTest, testing::Values(1, 2),
                         [](const testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "threads";
                         });

std::string Message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "no error";
}

// The kernels run the widest variant this CPU has, capped by EMBEDSERVE_CPU_ISA.
TEST(CpuKernelIsaTest, IsTheWidestTheCpuHasUnderTheCap) {
  std::string expected = __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512vl") &&
                                 __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512dq") &&
                                 __builtin_cpu_supports("fma")
                             ? "avx512"
                         : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                             ? "avx2"
                             : "baseline";
  const char* cap = std::getenv("EMBEDSERVE_CPU_ISA");
  const std::string c = cap == nullptr ? "" : cap;
  if (c == "baseline" || (c == "avx2" && expected == "avx512")) expected = c;
  EXPECT_EQ(cpu_vector::CpuKernelIsaName(), expected) << "EMBEDSERVE_CPU_ISA=" << c;
}

TEST(CpuFusedArgsTest, RejectsWhatItCannotTake) {
  torch::Tensor x = torch::randn({4, 8});
  const torch::Tensor g = torch::ones({8}), b = torch::zeros({8});
  torch::Tensor xd = x.to(torch::kDouble);
  EXPECT_THAT(Message([&] { LayerNormInPlaceCpu(xd, g, b, 1e-5); }),
              testing::HasSubstr("contiguous fp32 CPU matrix"));
  EXPECT_THAT(Message([&] { LayerNormInPlaceCpu(x, torch::ones({7}), b, 1e-5); }),
              testing::HasSubstr("gamma must be a contiguous fp32 CPU vector of 8"));
  const torch::Tensor word = torch::randn({10, 8}), pos = torch::randn({4, 8});
  const torch::Tensor ids = torch::tensor(std::vector<int64_t>{1, 10}, torch::kLong);
  const torch::Tensor positions = torch::tensor(std::vector<int64_t>{0, 1}, torch::kLong);
  EXPECT_THAT(Message([&] { EmbedLayerNormCpu(word, pos, ids, positions, g, b, 1e-5); }),
              testing::HasSubstr("id 10 of row 1 is outside [0, 10)"));
  const torch::Tensor bad_pos = torch::tensor(std::vector<int64_t>{0, 4}, torch::kLong);
  EXPECT_THAT(Message([&] {
                EmbedLayerNormCpu(word, pos, ids.clamp_max(9), bad_pos, g, b, 1e-5);
              }),
              testing::HasSubstr("position 4 of row 1 is outside [0, 4)"));
}

}  // namespace
}  // namespace internal_model
}  // namespace embedserve
