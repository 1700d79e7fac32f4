#include "embedserve/model/cpu_environment.h"

#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "cpu_vector.h"

namespace embedserve {
namespace {

// struct sched_attr of <linux/sched/types.h> (glibc 2.36 has no wrapper for the calls).
struct SchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;  // SCHED_OTHER (Linux >= 6.12): the slice, in ns
  uint64_t sched_deadline;
  uint64_t sched_period;
};

bool GetSchedAttr(SchedAttr* attr) {
  *attr = SchedAttr{};
  return syscall(SYS_sched_getattr, 0, attr, sizeof(*attr), 0) == 0;
}

}  // namespace

absl::Status SetThreadSchedSlice(int64_t us) {
  if (us != 0 && (us < kMinSchedSliceUs || us > kMaxSchedSliceUs)) {
    return absl::InvalidArgumentError(absl::StrCat("scheduler slice must be 0 (the kernel's) or ",
                                                   kMinSchedSliceUs, "..", kMaxSchedSliceUs,
                                                   " us; was ", us));
  }
  SchedAttr attr;
  if (!GetSchedAttr(&attr)) {
    return absl::UnimplementedError("sched_getattr failed: this kernel reports no slice");
  }
  if (attr.sched_policy != 0) {  // SCHED_OTHER: a slice means nothing to the others
    return absl::FailedPreconditionError(
        absl::StrCat("the thread runs under scheduling policy ", attr.sched_policy,
                     ", not SCHED_OTHER; its slice is left alone"));
  }
  attr.size = sizeof(attr);
  attr.sched_flags = 0;
  attr.sched_runtime = static_cast<uint64_t>(us) * 1000;
  if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0) {
    return absl::UnimplementedError(absl::StrCat("sched_setattr failed (errno ", errno, ")"));
  }
  if (us != 0 && ThreadSchedSliceUs() != us) {
    return absl::UnimplementedError(
        "this kernel keeps its own slice (custom slices need Linux 6.12 or later)");
  }
  return absl::OkStatus();
}

int64_t ThreadSchedSliceUs() {
  SchedAttr attr;
  if (!GetSchedAttr(&attr) || attr.sched_runtime == 0) return -1;
  return static_cast<int64_t>(attr.sched_runtime / 1000);
}

std::string OpenBlasCoreName() {
  using CoreNameFn = char* (*)();
  // Looked up rather than linked: builds whose LibTorch uses MKL or no BLAS have none.
  auto fn = reinterpret_cast<CoreNameFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (fn == nullptr) return "";
  const char* name = fn();
  return name == nullptr ? "" : name;
}

std::string BetterOpenBlasCore(const std::string& current, bool cpu_avx2_fma, bool cpu_avx512) {
  // OpenBLAS 0.3.x core names whose kernels use AVX2 or AVX-512 (lower case, as
  // OPENBLAS_CORETYPE is matched case-insensitively); any other pick on an AVX2 CPU is
  // its generic fallback for a CPU model it does not know.
  static const absl::flat_hash_set<std::string> kVectorCores = {
      "haswell", "skylakex", "cooperlake", "sapphirerapids", "zen", "excavator"};
  std::string lower;
  for (char c : current) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (current.empty() || kVectorCores.contains(lower)) return "";
  if (cpu_avx512) return "SkylakeX";
  if (cpu_avx2_fma) return "Haswell";
  return "";
}

std::vector<std::pair<std::string, std::string>> CpuEnvironmentToSet(
    const CpuEnvironmentOptions& options) {
  std::vector<std::pair<std::string, std::string>> set;
  if (options.brief_omp_spin && std::getenv("OMP_WAIT_POLICY") == nullptr &&
      std::getenv("GOMP_SPINCOUNT") == nullptr) {
    set.emplace_back("GOMP_SPINCOUNT", "10000");
  }
  if (options.openblas_core && std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    const std::string better =
        BetterOpenBlasCore(OpenBlasCoreName(), internal_model::cpu_vector::CpuHasAvx2(),
                           internal_model::cpu_vector::CpuHasAvx512());
    if (!better.empty()) set.emplace_back("OPENBLAS_CORETYPE", better);
  }
  return set;
}

void ReexecWithCpuEnvironment(char** argv, const CpuEnvironmentOptions& options) {
  const auto set = CpuEnvironmentToSet(options);
  if (set.empty()) return;
  for (const auto& [name, value] : set) {
    if (setenv(name.c_str(), value.c_str(), 1) != 0) return;
  }
  execv("/proc/self/exe", argv);  // returns only when it failed: run as we are
}

namespace internal_model {
namespace cpu_vector {

CpuIsa CpuIsaCap() {
  static const CpuIsa cap = [] {
    const char* value = std::getenv("EMBEDSERVE_CPU_ISA");
    if (value == nullptr || *value == '\0') return CpuIsa::kAvx512;
    const std::string v(value);
    if (v == "avx512") return CpuIsa::kAvx512;
    if (v == "avx2") return CpuIsa::kAvx2;
    if (v == "baseline") return CpuIsa::kBaseline;
    std::fprintf(stderr,
                 "embedserve: EMBEDSERVE_CPU_ISA=%s ignored (avx512, avx2 or baseline)\n", value);
    return CpuIsa::kAvx512;
  }();
  return cap;
}

}  // namespace cpu_vector
}  // namespace internal_model
}  // namespace embedserve
