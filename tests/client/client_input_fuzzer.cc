// Fuzzes what embedserve-bench reads from users: experiment YAML (the benchmark:
// section), pair files (TSV / JSON Lines) and flag values. Bad input must give a
// status, never a crash. The first byte picks the parser.
#include <cstddef>
#include <cstdint>
#include <string>

#include "embedserve/client/benchmark_plan.h"
#include "embedserve/client/sentence_generator.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      auto file = embedserve::client::ParseExperimentYaml(text, "fuzz");
      if (file.ok()) (void)file->plan.Points();
      break;
    }
    case 1:
      (void)embedserve::client::ParsePairs(text, "fuzz");
      break;
    default:
      (void)embedserve::client::ParsePositiveIntList(text, "--batch-sizes");
      (void)embedserve::client::ParsePositiveDoubleList(text, "--rates");
      (void)embedserve::client::ParseSentenceLength(text);
      (void)embedserve::client::ParseMethod(text);
      break;
  }
  return 0;
}
