#include "batching/refused_demand.h"

#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace embedserve {
namespace batching_internal {
namespace {

constexpr int64_t kHold = 1'000'000;

TEST(RefusedDemandTest, ARequestRefusedAgainCountsOnceAndNoLongerOnceAdmitted) {
  RefusedDemand d(kHold, 16);
  EXPECT_TRUE(d.Empty());
  EXPECT_EQ(d.Outstanding(0), 0);
  for (int retry = 0; retry < 5; ++retry) d.Refused(1, 10, retry * 1000);
  EXPECT_FALSE(d.Empty());
  EXPECT_EQ(d.Outstanding(5000), 10);
  d.Refused(2, 5, 6000);
  EXPECT_EQ(d.Outstanding(6000), 15);
  d.Refused(1, 12, 7000);  // sent again with more texts: its latest size counts
  EXPECT_EQ(d.Outstanding(7000), 17);
  d.Admitted(1);
  EXPECT_EQ(d.Outstanding(7000), 5);
  d.Admitted(1);  // no longer there
  d.Admitted(3);  // never refused
  d.Admitted(0);  // content unknown: nothing to match
  EXPECT_EQ(d.Outstanding(7000), 5);
  d.Admitted(2);
  EXPECT_TRUE(d.Empty());
  EXPECT_EQ(d.Outstanding(7000), 0);
}

TEST(RefusedDemandTest, RequestsOfUnknownContentCountEachTime) {
  RefusedDemand d(kHold, 16);
  d.Refused(0, 3, 0);
  d.Refused(0, 3, 10);
  d.Refused(0, 4, 20);
  EXPECT_EQ(d.Outstanding(20), 10);
  d.Admitted(0);
  EXPECT_EQ(d.Outstanding(20), 10);
}

TEST(RefusedDemandTest, RefusalsExpireAfterTheHoldAndARefusalRenewsItsRequest) {
  RefusedDemand d(kHold, 16);
  d.Refused(1, 10, 0);
  d.Refused(2, 20, 0);
  d.Refused(2, 20, kHold / 2);  // caller 2 is still trying
  EXPECT_EQ(d.Outstanding(kHold - 1), 30);
  // Swept at most every kHold / 16: within that of the hold, 1 is gone.
  EXPECT_EQ(d.Outstanding(kHold + kHold / 16), 20);
  EXPECT_EQ(d.Outstanding(kHold / 2 + kHold + kHold / 8), 0);
  EXPECT_TRUE(d.Empty());
}

TEST(RefusedDemandTest, PastItsEntriesTheDemandIsUnboundedUntilTheHoldPasses) {
  RefusedDemand d(kHold, 2);
  d.Refused(1, 1, 0);
  d.Refused(2, 1, 0);
  EXPECT_EQ(d.Outstanding(0), 2);
  d.Refused(3, 1, 100);  // no room to tell it apart
  EXPECT_EQ(d.Outstanding(100), RefusedDemand::kSaturated);
  d.Refused(1, 1, 200);  // a known request still updates
  EXPECT_EQ(d.Outstanding(kHold), RefusedDemand::kSaturated);
  EXPECT_EQ(d.Outstanding(kHold + 100), 1);  // 2 expired, the saturation too; 1 renewed
  EXPECT_EQ(d.Outstanding(2 * kHold + kHold / 8), 0);
  EXPECT_TRUE(d.Empty());
}

// Under TSan (label tsan): refusals and admissions from several threads at once.
TEST(RefusedDemandTest, ThreadsRefusingAndAdmittingLeaveNothingOutstanding) {
  RefusedDemand d(kHold, 4096);
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&d, t] {
      for (uint64_t i = 0; i < 2000; ++i) {
        const uint64_t key = 1 + t * 100000 + i % 50;
        d.Refused(key, 2, static_cast<int64_t>(i));
        d.Refused(key, 2, static_cast<int64_t>(i));
        (void)d.Outstanding(static_cast<int64_t>(i));
        d.Admitted(key);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(d.Outstanding(2000), 0);
  EXPECT_TRUE(d.Empty());
}

}  // namespace
}  // namespace batching_internal
}  // namespace embedserve
