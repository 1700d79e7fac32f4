// Command: EMBEDSERVE_BENCH_THREADS=1 build-model/bench/model/linear_kernels_bench
// The CPU kernel choice behind the encoder (docs/model.md): GF/s of the minilm-l6 linear
// layers (M = 512 rows = 32 x 16 tokens) through at::linear (OpenBLAS sgemm for fp32,
// oneDNN for bf16) and at::mkldnn_linear (with and without converting the activations),
// Fp32Linear (src/model/cpu_fp32_linear.h: oneDNN's matmul on weights reordered once,
// what the fp32 encoder runs; kernel 3, fp32 only, in builds with oneDNN's headers),
// and the FMA ceiling of the core (independent FMA chains, 256- and 512-bit). The
// "GF/cpu-s" counter divides by the process CPU time, which stays meaningful when other
// work shares the cores; "GF/s" uses wall time.
#include <time.h>

#include <cstdlib>
#include <string>

#include <ATen/ops/mkldnn_linear.h>
#include <torch/torch.h>

#include "benchmark/benchmark.h"
#if EMBEDSERVE_BENCH_FP32_LINEAR
#include "cpu_fp32_linear.h"
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void SetThreads() {
  const char* t = std::getenv("EMBEDSERVE_BENCH_THREADS");
  at::set_num_threads(t != nullptr && std::atoi(t) > 0 ? std::atoi(t) : 1);
}

enum Kernel { kAten = 0, kMkldnnConvert = 1, kMkldnnPure = 2, kPrepacked = 3 };

void BM_Linear(benchmark::State& state) {
  SetThreads();
  c10::InferenceMode guard;
  const auto kernel = static_cast<Kernel>(state.range(0));
  const auto dtype = state.range(1) == 16 ? torch::kBFloat16 : torch::kFloat;
  const int64_t m = 512, n = state.range(2), k = state.range(3);
  torch::Tensor x = torch::randn({m, k}).to(dtype);
  torch::Tensor w = (torch::randn({n, k}) * 0.02).to(dtype);
  torch::Tensor b = torch::randn({n}).to(dtype);
  torch::Tensor xm = x.to_mkldnn();
#if EMBEDSERVE_BENCH_FP32_LINEAR
  namespace im = embedserve::internal_model;
  std::unique_ptr<im::Fp32Linear> prepacked;
  if (kernel == kPrepacked) {
    auto l = im::Fp32Linear::Create(w, b, im::LinearEpilogue::kBias);
    if (!l.ok()) return state.SkipWithError(std::string(l.status().message()).c_str());
    prepacked = *std::move(l);
  }
#else
  if (kernel == kPrepacked) return state.SkipWithError("built without oneDNN's headers");
#endif
  auto run = [&] {
    switch (kernel) {
#if EMBEDSERVE_BENCH_FP32_LINEAR
      case kPrepacked: return prepacked->Forward(x);
#else
      case kPrepacked: break;
#endif
      case kAten: return at::linear(x, w, b);
      case kMkldnnConvert: return at::mkldnn_linear(x.to_mkldnn(), w, b).to_dense();
      case kMkldnnPure: return at::mkldnn_linear(xm, w, b);
    }
    return torch::Tensor();
  };
  for (int i = 0; i < 3; ++i) run();
  const double cpu0 = ProcessCpuSeconds();
  for (auto _ : state) benchmark::DoNotOptimize(run());
  const double flop = 2.0 * m * n * k * static_cast<double>(state.iterations());
  state.counters["GF/s"] = benchmark::Counter(2.0 * m * n * k / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GF/cpu-s"] = flop / 1e9 / (ProcessCpuSeconds() - cpu0);
  static const char* kNames[] = {"aten::linear", "mkldnn_linear+convert", "mkldnn_linear",
                                 "Fp32Linear (prepacked oneDNN)"};
  state.SetLabel(std::string(kNames[kernel]) + (dtype == torch::kFloat ? " fp32" : " bf16"));
}
BENCHMARK(BM_Linear)
    ->ArgNames({"kernel", "bits", "n", "k"})
    ->ArgsProduct({{kAten, kMkldnnConvert, kMkldnnPure}, {32, 16}, {1152, 384, 1536}, {384}})
    ->ArgsProduct({{kAten, kMkldnnConvert, kMkldnnPure}, {32, 16}, {384}, {1536}})
    ->ArgsProduct({{kPrepacked}, {32}, {1152, 384, 1536}, {384}})
    ->ArgsProduct({{kPrepacked}, {32}, {384}, {1536}})
    ->UseRealTime()
    ->MeasureProcessCPUTime();

#if defined(__x86_64__)
void ReportFma(benchmark::State& state, double flop_per_iteration, double cpu0) {
  state.counters["GF/s"] =
      benchmark::Counter(flop_per_iteration / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GF/cpu-s"] = flop_per_iteration * static_cast<double>(state.iterations()) /
                               1e9 / (ProcessCpuSeconds() - cpu0);
}

constexpr int64_t kFmaSteps = 20'000'000;

// Ten independent FMA chains (more than latency x ports), per vector width; each
// function is compiled for its ISA so the intrinsics inline.
#define EMBEDSERVE_FMA_LOOP(V, SET, FMA, LANES)                                         \
  V a0 = SET(1), a1 = SET(2), a2 = SET(3), a3 = SET(4), a4 = SET(5), a5 = SET(6),        \
    a6 = SET(7), a7 = SET(8), a8 = SET(9), a9 = SET(10);                                 \
  const V m = SET(0.999f), c = SET(0.001f);                                              \
  const double cpu0 = ProcessCpuSeconds();                                               \
  for (auto _ : state) {                                                                 \
    for (int64_t i = 0; i < kFmaSteps; ++i) {                                            \
      a0 = FMA(a0, m, c); a1 = FMA(a1, m, c); a2 = FMA(a2, m, c); a3 = FMA(a3, m, c);    \
      a4 = FMA(a4, m, c); a5 = FMA(a5, m, c); a6 = FMA(a6, m, c); a7 = FMA(a7, m, c);    \
      a8 = FMA(a8, m, c); a9 = FMA(a9, m, c);                                            \
    }                                                                                    \
    benchmark::DoNotOptimize(a0); benchmark::DoNotOptimize(a1);                          \
    benchmark::DoNotOptimize(a2); benchmark::DoNotOptimize(a3);                          \
    benchmark::DoNotOptimize(a4); benchmark::DoNotOptimize(a5);                          \
    benchmark::DoNotOptimize(a6); benchmark::DoNotOptimize(a7);                          \
    benchmark::DoNotOptimize(a8); benchmark::DoNotOptimize(a9);                          \
  }                                                                                      \
  ReportFma(state, 10.0 * 2 * (LANES) * kFmaSteps, cpu0)

__attribute__((target("avx2,fma"))) void FmaAvx2(benchmark::State& state) {
  EMBEDSERVE_FMA_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8);
}
__attribute__((target("avx512f"))) void FmaAvx512(benchmark::State& state) {
  EMBEDSERVE_FMA_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16);
}

void BM_FmaPeakAvx2(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    return state.SkipWithError("no AVX2/FMA");
  }
  FmaAvx2(state);
}
void BM_FmaPeakAvx512(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx512f")) return state.SkipWithError("no AVX-512");
  FmaAvx512(state);
}
BENCHMARK(BM_FmaPeakAvx2)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(BM_FmaPeakAvx512)->UseRealTime()->MeasureProcessCPUTime();
#endif

}  // namespace

// main(): cpu_bench_main.cc.
