// The rule that decides between a CUDA graph replay and the eager forward
// (src/model/graph_padding.h). Pure arithmetic: runs without LibTorch or a GPU.
#include "graph_padding.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace embedserve {
namespace internal_model {
namespace {

TEST(GraphPaddingTest, SmallBucketsReplayWhateverTheirPadding) {
  const GraphPaddingLimit limit{4096, 2.0};
  EXPECT_TRUE(GraphReplayPays(1, 16, 3, limit));    // one 3-token text in 16 slots
  EXPECT_TRUE(GraphReplayPays(64, 64, 65, limit));  // 4,096 slots, 65 tokens
  EXPECT_FALSE(GraphReplayPays(128, 64, 65, limit));
}

TEST(GraphPaddingTest, LargeBucketsReplayOnlyUpToTheRatio) {
  const GraphPaddingLimit limit{4096, 2.0};
  // 512 x 64 = 32,768 slots: replayed for 16,384 real tokens or more.
  EXPECT_TRUE(GraphReplayPays(512, 64, 16384, limit));
  EXPECT_TRUE(GraphReplayPays(512, 64, 32768, limit));
  EXPECT_FALSE(GraphReplayPays(512, 64, 16383, limit));
  // The served case that motivated the rule: 300 texts of ~14 tokens, the longest 40.
  EXPECT_FALSE(GraphReplayPays(512, 64, 300 * 14, limit));
}

TEST(GraphPaddingTest, UnlimitedReplaysEveryBucket) {
  const GraphPaddingLimit any = UnlimitedGraphPadding();
  EXPECT_TRUE(GraphReplayPays(1024, 32, 1, any));
  EXPECT_TRUE(GraphReplayPays(512, 64, 300 * 14, any));
}

TEST(GraphPaddingTest, ZeroLimitReplaysOnlyFullBuckets) {
  const GraphPaddingLimit none{0, 1.0};
  EXPECT_TRUE(GraphReplayPays(8, 16, 128, none));
  EXPECT_FALSE(GraphReplayPays(8, 16, 127, none));
}

TEST(GraphPaddingTest, Fp32AllowsLessPaddingThanHalfPrecision) {
  const GraphPaddingLimit half = DefaultGraphPaddingLimit("fp16", false);
  const GraphPaddingLimit bf16 = DefaultGraphPaddingLimit("bf16", false);
  const GraphPaddingLimit tf32 = DefaultGraphPaddingLimit("fp32", true);
  const GraphPaddingLimit fp32 = DefaultGraphPaddingLimit("fp32", false);
  EXPECT_EQ(half.free_tokens, bf16.free_tokens);
  EXPECT_EQ(half.max_padding_ratio, bf16.max_padding_ratio);
  EXPECT_GE(half.free_tokens, tf32.free_tokens);
  EXPECT_GE(tf32.free_tokens, fp32.free_tokens);
  EXPECT_GE(half.max_padding_ratio, fp32.max_padding_ratio);
  for (const GraphPaddingLimit& limit : {half, tf32, fp32}) {
    EXPECT_GE(limit.max_padding_ratio, 1.0);   // a full bucket always replays
    EXPECT_GE(limit.free_tokens, 16);          // so does batch 1 x 16 tokens
    EXPECT_TRUE(GraphReplayPays(1, 16, 1, limit));
    EXPECT_TRUE(GraphReplayPays(1024, 32, 1024 * 32, limit));
  }
  // Half precision: the 512 x 64 bucket is not replayed for 300 short texts.
  EXPECT_FALSE(GraphReplayPays(512, 64, 300 * 14, half));
}

TEST(GraphPaddingTest, ParsesTheEnvironmentSpec) {
  const GraphPaddingLimit fallback{123, 4.5};
  auto kept = ParseGraphPaddingLimit("", fallback);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->free_tokens, 123);
  EXPECT_EQ(kept->max_padding_ratio, 4.5);
  auto any = ParseGraphPaddingLimit("any", fallback);
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE(GraphReplayPays(1024, 32, 1, *any));
  auto set = ParseGraphPaddingLimit("16384,1.5", fallback);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->free_tokens, 16384);
  EXPECT_EQ(set->max_padding_ratio, 1.5);
  for (const char* bad : {"16384", "x,2", "16384,y", "-1,2", "16384,-2", "1,2,3", "all"}) {
    auto r = ParseGraphPaddingLimit(bad, fallback);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace internal_model
}  // namespace embedserve
