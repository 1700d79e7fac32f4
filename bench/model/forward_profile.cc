// Command: build-gpu/bench/model/forward_profile [--precision=fp16] [--batch=1024]
//            [--tokens=16] [--iters=20] [--trace=forward_trace.json] [--model=DIR]
// Env: EMBEDSERVE_BENCH_DEVICE (default cuda), and whatever the backend reads
//      (EMBEDSERVE_FUSED_KERNELS, EMBEDSERVE_GEMM_TUNE).
// A kernel-level profile of Backend::Embed (issue 14): LibTorch's Kineto profiler (CUPTI)
// records every CUDA kernel, copy and memset of `iters` Embed calls of batch x tokens
// (each call inside a user scope named "embed"), and writes a Chrome trace that
// scripts/device/profile_split.py splits into GEMMs per shape, attention, LayerNorm,
// copies and gaps. Before the profiled calls it times `iters` unprofiled ones (median
// wall ms), since the profiler adds host time per launch. Synthetic minilm-l6 weights
// (seed 42) unless --model names a folder.
#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "embedserve/model/model_loader.h"
#include "synthetic_model.h"

namespace embedserve {
namespace {

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  const std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
  }
  return fallback;
}

int Main(int argc, char** argv) {
  const std::string precision = Flag(argc, argv, "precision", "fp16");
  const int64_t batch = std::atoll(Flag(argc, argv, "batch", "1024").c_str());
  const int64_t tokens = std::atoll(Flag(argc, argv, "tokens", "16").c_str());
  const int iters = std::atoi(Flag(argc, argv, "iters", "20").c_str());
  const std::string trace = Flag(argc, argv, "trace", "forward_trace.json");
  std::string model = Flag(argc, argv, "model", "");
  bool remove_model = false;
  if (model.empty()) {
    model = (std::filesystem::temp_directory_path() /
             ("embedserve_profile_minilm_l6_" + std::to_string(::getpid())))
                .string();
    SyntheticModelOptions options;  // minilm-l6, seed 42
    options.overwrite = true;
    const absl::Status s = WriteSyntheticModel(options, model);
    if (!s.ok()) {
      std::fprintf(stderr, "cannot write the synthetic model: %s\n", s.ToString().c_str());
      return 1;
    }
    remove_model = true;
  }
  ModelOptions options;
  options.path = model;
  const char* device = std::getenv("EMBEDSERVE_BENCH_DEVICE");
  options.device = device != nullptr && *device != '\0' ? device : "cuda";
  options.precision = precision;
  auto backend = LoadBackend(options);
  if (remove_model) std::filesystem::remove_all(model);
  if (!backend.ok()) {
    std::fprintf(stderr, "cannot load: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  std::printf("backend: %s\n", (*backend)->Info().runtime.c_str());

  // The same token ids as model_bench's BM_Embed.
  std::vector<TokenIds> seqs(batch);
  uint64_t x = 12345;
  for (TokenIds& s : seqs) s = SyntheticSequence(tokens, &x);
  std::vector<const TokenIds*> ptrs;
  for (const TokenIds& s : seqs) ptrs.push_back(&s);
  auto embed = [&] {
    auto r = (*backend)->Embed(ptrs);
    if (!r.ok()) {
      std::fprintf(stderr, "Embed failed: %s\n", r.status().ToString().c_str());
      std::exit(1);
    }
  };
  for (int i = 0; i < 5; ++i) embed();  // warm-up (allocator, cuBLAS handles)
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    embed();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf("unprofiled: %s %ld x %ld, median %.3f ms per Embed (%.0f sentences/s), min %.3f\n",
              precision.c_str(), static_cast<long>(batch), static_cast<long>(tokens), median,
              static_cast<double>(batch) / (median * 1e-3), ms.front());

  namespace prof = torch::profiler::impl;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  const std::set<prof::ActivityType> activities = {prof::ActivityType::CPU,
                                                   prof::ActivityType::CUDA};
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  for (int i = 0; i < iters; ++i) {
    RECORD_USER_SCOPE("embed");
    embed();
  }
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result =
      torch::autograd::profiler::disableProfiler();
  result->save(trace);
  std::printf("profiled %d Embed calls -> %s (%zu events)\n", iters, trace.c_str(),
              result->events().size());
  return 0;
}

}  // namespace
}  // namespace embedserve

int main(int argc, char** argv) { return embedserve::Main(argc, argv); }
