// libFuzzer target for the server's experiment YAML (src/config): any input must give a
// config or an INVALID_ARGUMENT status, never a crash or an uncaught exception. An
// accepted config must survive `--print-config`: its YAML parses back to the same
// settings (the printout's first line names its source, so it is not compared).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "embedserve/config/server_config.h"

namespace {

std::string WithoutFirstLine(const std::string& text) {
  const size_t newline = text.find('\n');
  return newline == std::string::npos ? "" : text.substr(newline + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  auto config = embedserve::ParseServerConfig(yaml, "fuzz");
  if (!config.ok()) {
    if (config.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  const std::string printed = embedserve::ServerConfigToYaml(*config);
  auto again = embedserve::ParseServerConfig(printed, "printed");
  if (!again.ok()) {
    std::fprintf(stderr, "printed config does not parse back:\n%s\n%s\n", printed.c_str(),
                 std::string(again.status().message()).c_str());
    std::abort();
  }
  const std::string reprinted = embedserve::ServerConfigToYaml(*again);
  if (WithoutFirstLine(reprinted) != WithoutFirstLine(printed)) {
    std::fprintf(stderr, "printed config changes when parsed back:\n%s\n----\n%s\n",
                 printed.c_str(), reprinted.c_str());
    std::abort();
  }
  return 0;
}
