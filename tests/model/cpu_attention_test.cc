// PackedSelfAttentionCpu (src/model/cpu_attention.h) against a reference written with
// plain LibTorch ops on each sequence alone: shapes that exercise every tail of the
// kernel (lengths not a multiple of the 4-row groups or the 16-float blocks, head sizes
// below and above 16, not multiples of 16), fp32 and bf16, one and two threads, and the
// argument checks.
#include "cpu_attention.h"

#include <torch/torch.h>

#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace internal_model {
namespace {

// softmax(q k^T * scale) v for each sequence and head, in fp64.
torch::Tensor Reference(const torch::Tensor& qkv, const std::vector<int64_t>& lengths,
                        int64_t heads, double scale) {
  const int64_t h = qkv.size(1) / 3, d = h / heads;
  const torch::Tensor x = qkv.to(torch::kDouble);
  std::vector<torch::Tensor> rows;
  int64_t offset = 0;
  for (int64_t len : lengths) {
    const torch::Tensor s = x.narrow(0, offset, len);
    const torch::Tensor q = s.narrow(1, 0, h).view({len, heads, d}).transpose(0, 1);
    const torch::Tensor k = s.narrow(1, h, h).view({len, heads, d}).transpose(0, 1);
    const torch::Tensor v = s.narrow(1, 2 * h, h).view({len, heads, d}).transpose(0, 1);
    const torch::Tensor p = torch::softmax(torch::matmul(q, k.transpose(1, 2)) * scale, -1);
    rows.push_back(torch::matmul(p, v).transpose(0, 1).reshape({len, h}));
    offset += len;
  }
  return torch::cat(rows, 0);
}

struct Case {
  std::vector<int64_t> lengths;
  int64_t heads, head_dim;
};

torch::Tensor Offsets(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> off;
  int64_t o = 0;
  for (int64_t len : lengths) {
    off.push_back(o);
    o += len;
  }
  return torch::tensor(off, torch::kLong);
}

int64_t Total(const std::vector<int64_t>& lengths) {
  int64_t t = 0;
  for (int64_t len : lengths) t += len;
  return t;
}

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {{1}, 1, 8},                      // a single token attends to itself only
      {{3, 17, 1, 64, 5}, 4, 8},        // tails of the row groups and the key blocks
      {{16, 16, 16}, 12, 32},           // minilm shape, uniform
      {{2, 30, 129, 7}, 2, 20},         // head size not a multiple of 16
      {{40, 9}, 3, 64},                 // bert-base head size
  };
  return cases;
}

class CpuAttentionTest : public testing::TestWithParam<int> {
 protected:
  void SetUp() override { at::set_num_threads(GetParam()); }
};

TEST_P(CpuAttentionTest, Fp32MatchesReference) {
  torch::manual_seed(7);
  for (const Case& c : Cases()) {
    const int64_t h = c.heads * c.head_dim;
    // Scores of a few units, as in a trained model, so the softmax is not flat.
    const torch::Tensor qkv = torch::randn({Total(c.lengths), 3 * h}) * 1.5;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    const torch::Tensor got = PackedSelfAttentionCpu(
        qkv, Offsets(c.lengths), torch::tensor(c.lengths, torch::kLong), c.heads, scale);
    ASSERT_EQ(got.scalar_type(), torch::kFloat);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{Total(c.lengths), h}));
    const double diff =
        (got.to(torch::kDouble) - Reference(qkv, c.lengths, c.heads, scale)).abs().max().item<double>();
    // fp32 rounding of sums of up to 64 products of size ~5 (the outputs are ~1-5).
    EXPECT_LT(diff, 1e-5) << "heads " << c.heads << " d " << c.head_dim;
  }
}

TEST_P(CpuAttentionTest, Bf16MatchesReferenceOfTheSameInputs) {
  torch::manual_seed(8);
  for (const Case& c : Cases()) {
    const int64_t h = c.heads * c.head_dim;
    const torch::Tensor qkv = (torch::randn({Total(c.lengths), 3 * h}) * 1.5).to(torch::kBFloat16);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    const torch::Tensor got = PackedSelfAttentionCpu(
        qkv, Offsets(c.lengths), torch::tensor(c.lengths, torch::kLong), c.heads, scale);
    ASSERT_EQ(got.scalar_type(), torch::kBFloat16);
    // Computed in fp32 from the bf16 inputs: only the final rounding to bf16 differs
    // (half an ulp: 2^-9 relative).
    const torch::Tensor want = Reference(qkv, c.lengths, c.heads, scale);
    const torch::Tensor err = (got.to(torch::kDouble) - want).abs();
    const torch::Tensor bound = want.abs() * (1.0 / 256) + 1e-6;
    EXPECT_TRUE(err.le(bound).all().item<bool>()) << "heads " << c.heads << " d " << c.head_dim
                                                  << " worst " << err.max().item<double>();
  }
}

TEST_P(CpuAttentionTest, EachSequenceSeesOnlyItsOwnTokens) {
  // Changing every other sequence leaves a sequence's output unchanged, bit for bit.
  torch::manual_seed(9);
  const std::vector<int64_t> lengths = {5, 12, 3};
  const torch::Tensor qkv = torch::randn({20, 3 * 16});
  torch::Tensor other = qkv.clone();
  other.narrow(0, 0, 5).normal_();
  other.narrow(0, 17, 3).normal_();
  const torch::Tensor off = Offsets(lengths), len = torch::tensor(lengths, torch::kLong);
  const torch::Tensor a = PackedSelfAttentionCpu(qkv, off, len, 2, 0.35);
  const torch::Tensor b = PackedSelfAttentionCpu(other, off, len, 2, 0.35);
  EXPECT_TRUE(torch::equal(a.narrow(0, 5, 12), b.narrow(0, 5, 12)));
  EXPECT_FALSE(torch::equal(a.narrow(0, 0, 5), b.narrow(0, 0, 5)));
}

TEST_P(CpuAttentionTest, WritesIntoAGivenOutput) {
  torch::manual_seed(10);
  const std::vector<int64_t> lengths = {7, 16, 1};
  const torch::Tensor qkv = torch::randn({24, 3 * 64});
  const torch::Tensor off = Offsets(lengths), len = torch::tensor(lengths, torch::kLong);
  const torch::Tensor fresh = PackedSelfAttentionCpu(qkv, off, len, 2, 0.2);
  // A reused buffer that holds garbage: every element is overwritten.
  torch::Tensor buffer = torch::full({24, 64}, std::numeric_limits<float>::quiet_NaN());
  const torch::Tensor got = PackedSelfAttentionCpu(qkv, off, len, 2, 0.2, buffer);
  EXPECT_EQ(got.data_ptr(), buffer.data_ptr());
  EXPECT_TRUE(torch::equal(got, fresh));
}

INSTANTIATE_TEST_SUITE_P(Threads, CpuAttentionTest, testing::Values(1, 2),
                         [](const testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "threads";
                         });

TEST(CpuAttentionArgsTest, RejectsWhatItCannotTake) {
  const torch::Tensor off = torch::tensor(std::vector<int64_t>{0}, torch::kLong);
  const torch::Tensor len = torch::tensor(std::vector<int64_t>{4}, torch::kLong);
  const torch::Tensor qkv = torch::randn({4, 24});
  auto message = [&](const torch::Tensor& x, const torch::Tensor& o, const torch::Tensor& l,
                     int64_t heads) -> std::string {
    try {
      PackedSelfAttentionCpu(x, o, l, heads, 1.0);
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "no error";
  };
  EXPECT_THAT(message(qkv.to(torch::kDouble), off, len, 2), testing::HasSubstr("float or bfloat16"));
  EXPECT_THAT(message(qkv.t(), off, len, 2), testing::HasSubstr("contiguous CPU matrix"));
  EXPECT_THAT(message(qkv, off, len, 5), testing::HasSubstr("do not split into 3 x 5 heads"));
  EXPECT_THAT(message(qkv, off.to(torch::kInt), len, 2), testing::HasSubstr("int64 vectors"));
  EXPECT_THAT(message(qkv, off, torch::tensor(std::vector<int64_t>{5}, torch::kLong), 2),
              testing::HasSubstr("sequence 0 (offset 0, length 5) lies outside the 4 rows"));
  EXPECT_THAT(message(qkv, off, torch::tensor(std::vector<int64_t>{0}, torch::kLong), 2),
              testing::HasSubstr("sequence 0 (offset 0, length 0)"));
  try {
    PackedSelfAttentionCpu(qkv, off, len, 2, 1.0, torch::empty({4, 9}));
    ADD_FAILURE() << "an output of the wrong shape was taken";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(),
                testing::HasSubstr("the output must be contiguous Float CPU [4, 8]"));
  }
}

}  // namespace
}  // namespace internal_model
}  // namespace embedserve
