// main() of the CPU model benchmarks: Google Benchmark's, after the process has run itself
// again with the OpenBLAS kernels the server would run (cpu_environment.h).
#include "benchmark/benchmark.h"
#include "embedserve/model/cpu_environment.h"

int main(int argc, char** argv) {
  embedserve::ReexecWithCpuEnvironment(argv, embedserve::CpuEnvironmentOptions());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
