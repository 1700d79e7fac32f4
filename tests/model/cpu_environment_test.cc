// What an embedserve process sets in its environment for the CPU math libraries
// (cpu_environment.h).
#include "embedserve/model/cpu_environment.h"

#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace {

using ::testing::Contains;
using ::testing::IsEmpty;
using ::testing::Key;
using ::testing::Not;
using ::testing::Pair;

// Sets (or unsets, for nullopt) one variable for the test's scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(BetterOpenBlasCoreTest, OverridesOnlyAGenericPick) {
  // OpenBLAS 0.3.21 on a CPU model it does not know picks its generic kernels.
  EXPECT_EQ(BetterOpenBlasCore("Prescott", true, true), "SkylakeX");
  EXPECT_EQ(BetterOpenBlasCore("Prescott", true, false), "Haswell");
  EXPECT_EQ(BetterOpenBlasCore("Nehalem", true, false), "Haswell");
  EXPECT_EQ(BetterOpenBlasCore("Sandybridge", true, true), "SkylakeX");
  // A CPU without AVX2 keeps what OpenBLAS chose.
  EXPECT_EQ(BetterOpenBlasCore("Prescott", false, false), "");
  // A vector core, whatever its case, is OpenBLAS's informed choice: left alone.
  for (const char* core : {"Haswell", "SkylakeX", "Cooperlake", "SAPPHIRERAPIDS", "Zen"}) {
    EXPECT_EQ(BetterOpenBlasCore(core, true, true), "") << core;
  }
  EXPECT_EQ(BetterOpenBlasCore("", true, true), "");  // no OpenBLAS
}

TEST(CpuEnvironmentTest, BriefOpenMpSpinOnlyWhenAskedAndNothingChosen) {
  CpuEnvironmentOptions options;
  options.openblas_core = false;
  ScopedEnv no_spin("GOMP_SPINCOUNT", std::nullopt);
  {
    ScopedEnv no_policy("OMP_WAIT_POLICY", std::nullopt);
    EXPECT_THAT(CpuEnvironmentToSet(options), IsEmpty());
    options.brief_omp_spin = true;
    EXPECT_THAT(CpuEnvironmentToSet(options), Contains(Pair("GOMP_SPINCOUNT", "10000")));
    ScopedEnv spin("GOMP_SPINCOUNT", "500");  // the caller's choice stands
    EXPECT_THAT(CpuEnvironmentToSet(options), IsEmpty());
  }
  ScopedEnv chosen("OMP_WAIT_POLICY", "PASSIVE");  // so does a policy
  EXPECT_THAT(CpuEnvironmentToSet(options), IsEmpty());
}

TEST(CpuEnvironmentTest, OpenBlasCoreFollowsWhatThisProcessLoaded) {
  CpuEnvironmentOptions options;
  ScopedEnv unset("OPENBLAS_CORETYPE", std::nullopt);
  const std::string core = OpenBlasCoreName();  // as loaded, before the variable matters
  const std::string better = BetterOpenBlasCore(
      core, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"));
  if (better.empty()) {
    EXPECT_THAT(CpuEnvironmentToSet(options), Not(Contains(Key("OPENBLAS_CORETYPE"))))
        << "OpenBLAS core " << core;
  } else {
    EXPECT_THAT(CpuEnvironmentToSet(options), Contains(Pair("OPENBLAS_CORETYPE", better)))
        << "OpenBLAS core " << core;
  }
  ScopedEnv chosen("OPENBLAS_CORETYPE", "Haswell");  // the caller's choice stands
  EXPECT_THAT(CpuEnvironmentToSet(options), Not(Contains(Key("OPENBLAS_CORETYPE"))));
}

TEST(SchedSliceTest, RefusesSlicesOutsideTheKernelsRange) {
  EXPECT_EQ(SetThreadSchedSlice(99).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetThreadSchedSlice(100001).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetThreadSchedSlice(-1).code(), absl::StatusCode::kInvalidArgument);
}

// On a thread of its own, so the test binary's main thread keeps its slice; the
// assertions run on the test's thread.
TEST(SchedSliceTest, SetsTheCallersSliceWhichNewThreadsInheritAndZeroRestores) {
  absl::Status set, reset;
  int64_t before = 0, after_set = 0, child = 0, after_reset = 0;
  std::thread([&] {
    before = ThreadSchedSliceUs();
    set = SetThreadSchedSlice(250);
    after_set = ThreadSchedSliceUs();
    std::thread([&child] { child = ThreadSchedSliceUs(); }).join();
    reset = SetThreadSchedSlice(0);
    after_reset = ThreadSchedSliceUs();
  }).join();
  if (absl::IsUnimplemented(set)) {
    EXPECT_NE(after_set, 250) << "an older kernel: the call changed nothing, and says so";
    GTEST_SKIP() << "no custom slices here: " << set;
  }
  ASSERT_TRUE(set.ok()) << set;
  EXPECT_EQ(after_set, 250);
  EXPECT_EQ(child, 250) << "a thread created afterwards inherits the slice";
  ASSERT_TRUE(reset.ok()) << reset;
  EXPECT_EQ(after_reset, before) << "0 gives the kernel's default back";
  EXPECT_NE(before, 250);
}

}  // namespace
}  // namespace embedserve
