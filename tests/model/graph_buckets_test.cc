// Which padded buckets the CUDA path captures as graphs (src/model/graph_buckets.h).
// Pure arithmetic: runs without LibTorch or a GPU.
#include "graph_buckets.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace embedserve {
namespace internal_model {
namespace {

// bert_backend.cc's candidate buckets in its order, filtered as CaptureGraphs does (a
// batch's first bucket whose slots pass ends that batch's row).
std::vector<std::pair<int64_t, int64_t>> Captured(int64_t max_batch, int64_t max_slots) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t b : {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}) {
    for (int64_t len : {16, 32, 64, 128}) {
      if (!CaptureGraphBucket(b, len, max_batch, max_slots)) break;
      out.emplace_back(b, len);
    }
  }
  return out;
}

// The first captured bucket that holds `n` sequences of up to `longest` tokens, as
// BertBackend::FindGraph picks it; {0, 0}: none, the eager forward.
std::pair<int64_t, int64_t> Replayed(const std::vector<std::pair<int64_t, int64_t>>& captured,
                                     int64_t n, int64_t longest) {
  for (const auto& [b, len] : captured) {
    if (b >= n && len >= longest) return {b, len};
  }
  return {0, 0};
}

TEST(GraphBucketsTest, SlotLimitsByPrecision) {
  EXPECT_EQ(GraphMaxSlots("fp16", false), 8192);
  EXPECT_EQ(GraphMaxSlots("bf16", false), 8192);
  EXPECT_EQ(GraphMaxSlots("fp16", true), 8192);  // TF32 concerns fp32 matmuls only
  EXPECT_EQ(GraphMaxSlots("fp32", true), 4096);
  EXPECT_EQ(GraphMaxSlots("fp32", false), 1024);
}

TEST(GraphBucketsTest, CapturesUpToTheBatchAndSlotLimits) {
  EXPECT_TRUE(CaptureGraphBucket(1, 16, 64, 1024));
  EXPECT_TRUE(CaptureGraphBucket(64, 128, 64, 8192));
  EXPECT_FALSE(CaptureGraphBucket(128, 16, 64, 8192));  // past cuda_graph_max_batch
  EXPECT_TRUE(CaptureGraphBucket(512, 16, 1024, 8192));
  EXPECT_FALSE(CaptureGraphBucket(512, 32, 1024, 8192));
  EXPECT_FALSE(CaptureGraphBucket(16, 128, 64, 1024));
}

TEST(GraphBucketsTest, HalfPrecisionKeepsEverySmallBucketAndSmallLargeOnes) {
  const auto fp16 = Captured(1024, GraphMaxSlots("fp16", false));
  // The 28 buckets of up to 64 sequences, then 128 x 16..64, 256 x 16..32, 512 x 16.
  ASSERT_EQ(fp16.size(), 34u);
  EXPECT_EQ(fp16[27], std::make_pair(int64_t{64}, int64_t{128}));
  EXPECT_EQ(fp16.back(), std::make_pair(int64_t{512}, int64_t{16}));
  // The served case behind the limit: ~300 texts of ~14 tokens, the longest 40, would
  // have replayed 512 x 64 (32,768 slots); they run eagerly. ~100 such texts still replay.
  EXPECT_EQ(Replayed(fp16, 300, 40), std::make_pair(int64_t{0}, int64_t{0}));
  EXPECT_EQ(Replayed(fp16, 100, 40), std::make_pair(int64_t{128}, int64_t{64}));
  EXPECT_EQ(Replayed(fp16, 1, 3), std::make_pair(int64_t{1}, int64_t{16}));
  // The default cuda_graph_max_batch keeps the 28 small buckets.
  EXPECT_EQ(Captured(64, GraphMaxSlots("fp16", false)).size(), 28u);
}

TEST(GraphBucketsTest, Fp32KeepsOnlyBucketsOfUpTo1024Slots) {
  const auto fp32 = Captured(64, GraphMaxSlots("fp32", false));
  // 1, 2, 4, 8 x 16..128; 16 x 16..64; 32 x 16..32; 64 x 16.
  EXPECT_EQ(fp32.size(), 22u);
  for (const auto& [b, len] : fp32) EXPECT_LE(b * len, 1024);
  EXPECT_EQ(Replayed(fp32, 64, 20), std::make_pair(int64_t{0}, int64_t{0}));
  EXPECT_EQ(Replayed(fp32, 32, 20), std::make_pair(int64_t{32}, int64_t{32}));
  EXPECT_EQ(Captured(1024, GraphMaxSlots("fp32", true)).size(), 30u);  // TF32: 4,096
}

TEST(GraphBucketsTest, ParsesTheEnvironmentOverride) {
  auto kept = ParseGraphMaxSlots("", 1024);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, 1024);
  auto set = ParseGraphMaxSlots("32768", 1024);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(*set, 32768);
  // 32,768: the buckets captured before the limit (41 at cuda_graph_max_batch 1024).
  EXPECT_EQ(Captured(1024, *set).size(), 41u);
  for (const char* bad : {"0", "-1", "x", "8192x", "1.5"}) {
    auto r = ParseGraphMaxSlots(bad, 1024);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace internal_model
}  // namespace embedserve
