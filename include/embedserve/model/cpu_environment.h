// The environment the CPU math libraries under LibTorch read once, as they load (before
// main), and the values an embedserve process should run with. A tool applies them by
// setting what is unset and running itself again, once (ReexecWithCpuEnvironment).
#ifndef EMBEDSERVE_MODEL_CPU_ENVIRONMENT_H_
#define EMBEDSERVE_MODEL_CPU_ENVIRONMENT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace embedserve {

struct CpuEnvironmentOptions {
  // GOMP_SPINCOUNT=10000 when neither it nor OMP_WAIT_POLICY is set: LibTorch's OpenMP
  // threads spin ~0.5 ms between parallel regions (the gaps inside one forward), then
  // sleep, instead of libgomp's ~9 ms default spin (the server: the cores stay free for
  // gRPC's threads and for refusing calls between batches).
  bool brief_omp_spin = false;
  // OPENBLAS_CORETYPE: OpenBLAS picks its kernels by CPU model, and an OpenBLAS older than
  // the CPU (Debian 12's 0.3.21 on Intel Emerald Rapids or AMD Zen 5) falls back to its
  // generic SSE3 kernels ("Prescott"), ~5x below the AVX-512 ones for the model's fp32
  // GEMMs. When it did, name the kernels the CPU's features allow (SkylakeX for AVX-512,
  // Haswell for AVX2 + FMA).
  bool openblas_core = true;
};

// The variables to set, (name, value), for what is unset in this process's environment.
// Empty when nothing needs to change (also when OpenBLAS is not loaded).
std::vector<std::pair<std::string, std::string>> CpuEnvironmentToSet(
    const CpuEnvironmentOptions& options);

// Sets CpuEnvironmentToSet(options) and executes /proc/self/exe with `argv` again, so the
// libraries load with them. Returns when nothing was missing, or when exec failed (the
// process then runs as it is).
void ReexecWithCpuEnvironment(char** argv, const CpuEnvironmentOptions& options);

// The kernels OpenBLAS runs with in this process (openblas_get_corename), or "" when
// OpenBLAS is not loaded.
std::string OpenBlasCoreName();

// The OPENBLAS_CORETYPE worth setting for OpenBLAS core `current` on a CPU with the given
// features, or "" to leave OpenBLAS's own choice. Only a generic pick (no AVX2 kernels)
// is overridden. Pure, for tests.
std::string BetterOpenBlasCore(const std::string& current, bool cpu_avx2_fma, bool cpu_avx512);

// The scheduler slice of the calling thread, in microseconds (Linux's EEVDF: how long a
// thread may run before a woken one with an earlier deadline takes its CPU; with a
// slice shorter than the running thread's, a woken thread preempts at once instead of
// at the running one's next tick). Threads the caller creates afterwards inherit it.
// `us` 0 returns the thread to the kernel's default; otherwise kMinSchedSliceUs..
// kMaxSchedSliceUs, the range Linux clamps a slice to. Linux 6.12 and later honour it;
// older kernels accept and ignore it: then Unimplemented, and the thread runs as before.
inline constexpr int64_t kMinSchedSliceUs = 100;
inline constexpr int64_t kMaxSchedSliceUs = 100000;
absl::Status SetThreadSchedSlice(int64_t us);

// The calling thread's slice in microseconds as the kernel reports it (its default one
// unless set), or -1 where the kernel reports none.
int64_t ThreadSchedSliceUs();

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_CPU_ENVIRONMENT_H_
