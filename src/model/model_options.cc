#include "embedserve/model/model_options.h"

#include <sched.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace embedserve {
namespace {

bool IsValidDevice(const std::string& device) {
  if (device == "cpu" || device == "cuda" || device == "mps" || device == "auto") return true;
  absl::string_view rest = device;
  if (!absl::ConsumePrefix(&rest, "cuda:") || rest.empty() || rest.size() > 4) return false;
  for (char c : rest) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Returns the CPU quota of the cgroup (cores, fractional), or 0 when unlimited/unknown.
double CgroupCpuQuota() {
  // cgroup v2: "max 100000" or "150000 100000".
  std::ifstream v2("/sys/fs/cgroup/cpu.max");
  if (v2) {
    std::string quota, period;
    v2 >> quota >> period;
    double q = 0, p = 0;
    if (quota != "max" && absl::SimpleAtod(quota, &q) && absl::SimpleAtod(period, &p) &&
        q > 0 && p > 0) {
      return q / p;
    }
    return 0;
  }
  std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
  std::ifstream p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  double q = 0, p = 0;
  if (q1 && p1 && (q1 >> q) && (p1 >> p) && q > 0 && p > 0) return q / p;
  return 0;
}

}  // namespace

absl::Status ModelOptions::Validate() const {
  if (cuda_graph_max_batch < 64 || cuda_graph_max_batch > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.cuda_graph_max_batch must be in [64, 1024]; was ", cuda_graph_max_batch));
  }
  if (cpu_nice < 0 || cpu_nice > 19) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.cpu_nice must be in [0, 19]; was ", cpu_nice));
  }
  if (path.empty()) {
    return absl::InvalidArgumentError("model.path must name a model folder; was ''");
  }
  if (!IsValidDevice(device)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.device must be one of cpu, cuda, cuda:N, mps, auto; was '", device, "'"));
  }
  if (precision != "fp32" && precision != "fp16" && precision != "bf16" && precision != "int8") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.precision must be one of fp32, fp16, bf16, int8; was '", precision, "'"));
  }
  // The same limits as the config's model.threads and model.max_seq_length.
  if (num_threads < 0 || num_threads > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.threads must be in [0, 4096] (0 = usable cores); was ", num_threads));
  }
  if (max_seq_length < 0 || max_seq_length == 1 || max_seq_length > 8192) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.max_seq_length must be 0 (the folder's) or in [2, 8192]; was ",
                     max_seq_length));
  }
  return absl::OkStatus();
}

int UsableCpuCount() {
  int count = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) count = CPU_COUNT(&set);
  if (count <= 0) count = 1;
  const double quota = CgroupCpuQuota();
  if (quota > 0) {
    const int by_quota = static_cast<int>(std::ceil(quota - 1e-9));
    if (by_quota >= 1 && by_quota < count) count = by_quota;
  }
  return count;
}

}  // namespace embedserve
