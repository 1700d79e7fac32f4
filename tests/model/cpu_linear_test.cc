// The CPU linear layers with fused epilogues (src/model/cpu_fp32_linear.h,
// cpu_int8_linear.h) against plain LibTorch ops: Fp32Linear's x W^T + b with each
// epilogue against at::linear followed by at::gelu / at::relu / add; Int8Linear's
// epilogues against its own plain (kBias) output followed by the same ops, so that the
// int8 rounding cancels and only the fused pass is compared. Row counts that run inline
// and that fork, widths that are and are not multiples of 16, one and two threads, the
// result written into a given output (for kBiasAddInto the residual, added to), and the
// argument checks. Built only with oneDNN's headers.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cpu_fp32_linear.h"
#include "cpu_fused.h"
#include "cpu_int8_linear.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace internal_model {
namespace {

struct Shape {
  int64_t n, k;
};
const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {{16, 16}, {20, 7}, {384, 384}, {1536, 384},
                                            {384, 1536}};
  return shapes;
}
// 301: enough rows that Fp32Linear splits them among two threads itself (an odd count:
// unequal shares).
const std::vector<int64_t>& RowCounts() {
  static const std::vector<int64_t> rows = {1, 14, 100, 301};
  return rows;
}
const std::vector<LinearEpilogue>& Epilogues() {
  static const std::vector<LinearEpilogue> e = {
      LinearEpilogue::kBias, LinearEpilogue::kBiasGelu, LinearEpilogue::kBiasGeluTanh,
      LinearEpilogue::kBiasRelu, LinearEpilogue::kBiasAddInto};
  return e;
}
const char* Name(LinearEpilogue e) {
  switch (e) {
    case LinearEpilogue::kBias: return "bias";
    case LinearEpilogue::kBiasGelu: return "gelu";
    case LinearEpilogue::kBiasGeluTanh: return "gelu_tanh";
    case LinearEpilogue::kBiasRelu: return "relu";
    case LinearEpilogue::kBiasAddInto: return "add_into";
  }
  return "?";
}

// What the epilogue does to y = x W^T + b, with plain ops; `residual` for kBiasAddInto.
torch::Tensor Apply(LinearEpilogue e, const torch::Tensor& y, const torch::Tensor& residual) {
  switch (e) {
    case LinearEpilogue::kBias: return y;
    case LinearEpilogue::kBiasGelu: return at::gelu(y, "none");
    case LinearEpilogue::kBiasGeluTanh: return at::gelu(y, "tanh");
    case LinearEpilogue::kBiasRelu: return at::relu(y);
    case LinearEpilogue::kBiasAddInto: return residual + y;
  }
  return y;
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

class CpuLinearTest : public testing::TestWithParam<int> {
 protected:
  void SetUp() override { at::set_num_threads(GetParam()); }
};

TEST_P(CpuLinearTest, Fp32MatchesAtenLinearAndOps) {
  torch::manual_seed(21);
  for (const Shape& s : Shapes()) {
    // Weights as in a trained layer (~1/sqrt(k)), so outputs are a few units.
    const torch::Tensor w = torch::randn({s.n, s.k}) / std::sqrt(static_cast<double>(s.k));
    const torch::Tensor b = torch::randn({s.n}) * 0.1;
    for (LinearEpilogue e : Epilogues()) {
      auto l = Fp32Linear::Create(w, b, e);
      ASSERT_TRUE(l.ok()) << l.status();
      for (int64_t m : RowCounts()) {
        const torch::Tensor x = torch::randn({m, s.k}) * 2.0;
        const torch::Tensor residual = torch::randn({m, s.n});
        // kBiasAddInto adds into `out` (the residual); the others overwrite it.
        torch::Tensor out = residual.clone();
        const torch::Tensor got = (*l)->Forward(x, out);
        const torch::Tensor want = Apply(e, at::linear(x.to(torch::kDouble), w.to(torch::kDouble),
                                                       b.to(torch::kDouble)),
                                         residual.to(torch::kDouble));
        ASSERT_EQ(got.sizes(), (std::vector<int64_t>{m, s.n}));
        EXPECT_EQ(got.data_ptr(), out.data_ptr()) << "the result goes into `out`";
        // fp32 sums of k products of ~2 x 1/sqrt(k) terms; the GELU approximations
        // (oneDNN's tanh form, our erf form).
        EXPECT_LT(MaxDiff(got, want), 5e-5) << Name(e) << " m " << m << " n " << s.n << " k " << s.k;
        if (e != LinearEpilogue::kBiasAddInto) {
          const torch::Tensor fresh = (*l)->Forward(x);
          EXPECT_NE(fresh.data_ptr(), out.data_ptr());
          EXPECT_TRUE(torch::equal(fresh, got)) << "a new tensor or `out`: the same values";
        }
      }
    }
  }
}

TEST_P(CpuLinearTest, Int8EpiloguesMatchPlainInt8AndOps) {
  if (!CpuHasInt8Dot()) GTEST_SKIP() << "no VNNI on this CPU";
  torch::manual_seed(22);
  for (const Shape& s : Shapes()) {
    const torch::Tensor w = torch::randn({s.n, s.k}) / std::sqrt(static_cast<double>(s.k));
    const torch::Tensor b = torch::randn({s.n}) * 0.1;
    auto plain = Int8Linear::Create(w, b, LinearEpilogue::kBias);
    ASSERT_TRUE(plain.ok()) << plain.status();
    for (LinearEpilogue e : Epilogues()) {
      auto l = Int8Linear::Create(w, b, e);
      ASSERT_TRUE(l.ok()) << l.status();
      for (int64_t m : RowCounts()) {
        const torch::Tensor x = torch::randn({m, s.k}) * 2.0;
        const torch::Tensor residual = torch::randn({m, s.n});
        torch::Tensor out = residual.clone();
        const torch::Tensor got = (*l)->Forward(x, out);
        const torch::Tensor y = (*plain)->Forward(x);
        const torch::Tensor want =
            Apply(e, y.to(torch::kDouble), residual.to(torch::kDouble));
        ASSERT_EQ(got.sizes(), (std::vector<int64_t>{m, s.n}));
        // Same int8 product; the fused GELU's erf to 4e-7 and fp32 rounding.
        EXPECT_LT(MaxDiff(got, want), 1e-5) << Name(e) << " m " << m << " n " << s.n << " k " << s.k;
        EXPECT_EQ(got.data_ptr(), out.data_ptr()) << "the result goes into `out`";
        // And the int8 product itself is near the fp32 one (per-token, per-channel).
        if (e == LinearEpilogue::kBias) {
          const torch::Tensor exact = at::linear(x, w, b);
          EXPECT_LT(MaxDiff(got, exact), 0.05 * exact.abs().max().item<double>() + 1e-3);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, CpuLinearTest, testing::Values(1, 2),
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

TEST(CpuLinearArgsTest, RejectsWhatItCannotTake) {
  const torch::Tensor w = torch::randn({8, 4}), b = torch::randn({8});
  EXPECT_FALSE(Fp32Linear::Create(w.to(torch::kDouble), b, LinearEpilogue::kBias).ok());
  EXPECT_FALSE(Fp32Linear::Create(w, torch::randn({7}), LinearEpilogue::kBias).ok());
  auto add = Fp32Linear::Create(w, b, LinearEpilogue::kBiasAddInto);
  ASSERT_TRUE(add.ok());
  const torch::Tensor x = torch::randn({3, 4});
  EXPECT_THAT(Message([&] { (*add)->Forward(x); }),
              testing::HasSubstr("kBiasAddInto needs a residual contiguous fp32 CPU [3, 8]"));
  EXPECT_THAT(Message([&] { (*add)->Forward(x, torch::zeros({8, 3}).t()); }),
              testing::HasSubstr("kBiasAddInto needs"));
  auto plain = Fp32Linear::Create(w, b, LinearEpilogue::kBias);
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(Message([&] { (*plain)->Forward(x, torch::zeros({4, 8})); }),
              testing::HasSubstr("the output must be contiguous fp32 CPU [3, 8]"));
  EXPECT_THAT(Message([&] { (*add)->Forward(torch::randn({3, 5}), torch::zeros({3, 8})); }),
              testing::HasSubstr("fp32 CPU matrix of 4 columns"));
  if (CpuHasInt8Dot()) {
    auto add8 = Int8Linear::Create(w, b, LinearEpilogue::kBiasAddInto);
    ASSERT_TRUE(add8.ok());
    EXPECT_THAT(Message([&] { (*add8)->Forward(x); }),
                testing::HasSubstr("kBiasAddInto needs a residual contiguous fp32 CPU [3, 8]"));
    auto plain8 = Int8Linear::Create(w, b, LinearEpilogue::kBias);
    ASSERT_TRUE(plain8.ok());
    EXPECT_THAT(Message([&] { (*plain8)->Forward(x, torch::zeros({3, 8}, torch::kDouble)); }),
                testing::HasSubstr("the output must be contiguous fp32 CPU [3, 8]"));
  }
}

TEST(CpuLinearArgsTest, ZeroRowsGiveAnEmptyResult) {
  auto l = Fp32Linear::Create(torch::randn({8, 4}), torch::randn({8}), LinearEpilogue::kBiasGelu);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ((*l)->Forward(torch::zeros({0, 4})).sizes(), (std::vector<int64_t>{0, 8}));
}

}  // namespace
}  // namespace internal_model
}  // namespace embedserve
