// Command: build-model/bench/model/model_bench --benchmark_counters_tabular=true
//   Env: EMBEDSERVE_BENCH_DEVICE (cpu, cuda, cuda:N; default cpu),
//        EMBEDSERVE_BENCH_MODEL (model folder; default: a synthetic minilm-l6 written to
//        a temp folder, seed 42), EMBEDSERVE_BENCH_THREADS (intra-op threads, 0 = usable
//        cores), EMBEDSERVE_CPU_LINEAR=onednn (the alternative CPU linear kernel),
//        EMBEDSERVE_BENCH_CUDA_GRAPHS=0 (CUDA: the eager path for every batch; default 1,
//        CUDA graphs for batches up to 64 x 128 tokens), EMBEDSERVE_BENCH_GRAPH_MAX_BATCH
//        (CUDA: graphs up to this many sequences, 64..1024, ModelOptions'
//        cuda_graph_max_batch), EMBEDSERVE_BENCH_CALLERS (threads calling Embed at once,
//        default 1, as the server's batching.workers; sentences/s is their sum; on CUDA
//        each caller runs on a stream of its own unless EMBEDSERVE_CUDA_CALLER_STREAMS=0).
// Closed-loop backend throughput: sentences/s of Backend::Embed for batch 1, 8, 32, 128
// at 16 and 128 tokens, for each precision the device supports (cpu: fp32, bf16; cuda:
// fp32, fp16, bf16). Embed returns host vectors, so each iteration ends with the device
// synchronised (the device-to-host copy of the pooled rows waits for the GPU).
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "embedserve/model/cpu_environment.h"
#include "embedserve/model/model_loader.h"
#include "synthetic_model.h"

namespace embedserve {
namespace {

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

const std::string& ModelPath() {
  static const std::string path = [] {
    std::string p = Env("EMBEDSERVE_BENCH_MODEL", "");
    if (!p.empty()) return p;
    p = (std::filesystem::temp_directory_path() /
         ("embedserve_bench_minilm_l6_" + std::to_string(::getpid())))
            .string();
    SyntheticModelOptions options;  // minilm-l6, seed 42
    options.overwrite = true;
    absl::Status s = WriteSyntheticModel(options, p);
    if (!s.ok()) {
      std::fprintf(stderr, "cannot write the synthetic model: %s\n", s.ToString().c_str());
      std::exit(1);
    }
    std::atexit([] { std::filesystem::remove_all(ModelPath()); });
    return p;
  }();
  return path;
}

double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

Backend* GetBackend(const std::string& precision) {
  static std::mutex* mu = new std::mutex();  // EMBEDSERVE_BENCH_CALLERS threads ask at once
  std::lock_guard<std::mutex> lock(*mu);
  static std::map<std::string, std::unique_ptr<Backend>>* cache =
      new std::map<std::string, std::unique_ptr<Backend>>();
  auto it = cache->find(precision);
  if (it != cache->end()) return it->second.get();
  ModelOptions options;
  options.path = ModelPath();
  options.device = Env("EMBEDSERVE_BENCH_DEVICE", "cpu");
  options.precision = precision;
  options.num_threads = std::atoi(Env("EMBEDSERVE_BENCH_THREADS", "0").c_str());
  options.cuda_graphs = Env("EMBEDSERVE_BENCH_CUDA_GRAPHS", "1") != "0";
  const std::string graph_max = Env("EMBEDSERVE_BENCH_GRAPH_MAX_BATCH", "");
  if (!graph_max.empty()) options.cuda_graph_max_batch = std::atoi(graph_max.c_str());
  auto backend = LoadBackend(options);
  if (!backend.ok()) {
    std::fprintf(stderr, "cannot load %s: %s\n", precision.c_str(),
                 backend.status().ToString().c_str());
    return nullptr;
  }
  return cache->emplace(precision, *std::move(backend)).first->second.get();
}

void BM_Embed(benchmark::State& state, std::string precision) {
  Backend* backend = GetBackend(precision);
  if (backend == nullptr) {
    state.SkipWithError("precision not supported on this device");
    return;
  }
  const int64_t batch = state.range(0), tokens = state.range(1);
  // Random in-vocabulary word pieces between [CLS] and [SEP]; the same every run.
  std::vector<TokenIds> seqs(batch);
  uint64_t x = 12345;
  for (TokenIds& s : seqs) s = SyntheticSequence(tokens, &x);
  std::vector<const TokenIds*> ptrs;
  for (const TokenIds& s : seqs) ptrs.push_back(&s);
  for (int i = 0; i < 2; ++i) (void)backend->Embed(ptrs);  // warm-up
  const double cpu_start = ProcessCpuSeconds();
  for (auto _ : state) {
    auto r = backend->Embed(ptrs);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(r->values.data());
  }
  // With several callers each thread sets these and Google Benchmark sums them before
  // multiplying by the iterations of all threads: kAvgThreads keeps one batch per
  // iteration, so sentences/s is the callers' total.
  state.counters["sentences/s"] = benchmark::Counter(
      static_cast<double>(batch),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kAvgThreads);
  // Sentences per CPU-second of the whole process: robust when other work shares the
  // cores (wall-clock rates then mostly measure the scheduler), but it also counts
  // OpenMP spin-waiting, so it is a lower bound on what the kernels achieve.
  const double cpu_seconds = ProcessCpuSeconds() - cpu_start;
  if (cpu_seconds > 0) {
    // Each caller's own iterations over the process's CPU time: summed over callers.
    state.counters["sent/cpu-s"] =
        static_cast<double>(batch) * static_cast<double>(state.iterations()) / cpu_seconds;
  }
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(batch * tokens),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kAvgThreads);
  state.SetLabel(backend->Info().device + " " + backend->Info().precision + " " +
                 backend->Info().runtime);
}

void Register() {
  const std::string device = Env("EMBEDSERVE_BENCH_DEVICE", "cpu");
  std::vector<std::string> precisions = {"fp32", "bf16"};
  if (device != "cpu") precisions = {"fp32", "fp16", "bf16"};
  const std::string only = Env("EMBEDSERVE_BENCH_PRECISION", "");
  for (const std::string& p : precisions) {
    if (!only.empty() && only != p) continue;
    auto* b = benchmark::RegisterBenchmark(("BM_Embed/" + p).c_str(), BM_Embed, p);
    for (int64_t tokens : {16, 128}) {
      for (int64_t batch : {1, 8, 32, 128}) b->Args({batch, tokens});
    }
    if (device != "cpu") b->Args({1024, 16});  // the GPU target: batch 1,024 x 16 tokens
    b->ArgNames({"batch", "tokens"})->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
    const int callers = std::atoi(Env("EMBEDSERVE_BENCH_CALLERS", "1").c_str());
    if (callers > 1) b->Threads(callers);
  }
}

}  // namespace
}  // namespace embedserve

int main(int argc, char** argv) {
  // With the OpenBLAS kernels the server would run (cpu_environment.h).
  embedserve::ReexecWithCpuEnvironment(argv, embedserve::CpuEnvironmentOptions());
  benchmark::Initialize(&argc, argv);
  embedserve::Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
