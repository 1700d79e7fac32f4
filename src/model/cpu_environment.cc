#include "embedserve/model/cpu_environment.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>

#include "absl/container/flat_hash_set.h"
#include "cpu_vector.h"

namespace embedserve {

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

}  // namespace embedserve
