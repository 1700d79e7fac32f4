// For the server tests that serve a real model folder through the LibTorch backend: an
// in-process EmbedServer on a free gRPC port (metrics and HTTP off, 1 ms batching delay)
// that loads `path` in fp32 on the CPU. Test-only.
#ifndef EMBEDSERVE_TESTS_SERVER_MODEL_SERVER_UTIL_H_
#define EMBEDSERVE_TESTS_SERVER_MODEL_SERVER_UTIL_H_

#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "embedserve/model/model_loader.h"
#include "embedserve/server/server.h"

namespace embedserve {
namespace testing {

inline absl::StatusOr<std::unique_ptr<EmbedServer>> StartCpuModelServer(const std::string& path) {
  ServerConfig config;
  config.server.port = 0;
  config.server.metrics_port = -1;
  config.server.http_port = -1;
  config.batching.max_queue_delay_us = 1000;
  return EmbedServer::Start(config, [path]() -> absl::StatusOr<ServingModel> {
    ModelOptions options;
    options.path = path;
    options.device = "cpu";
    options.precision = "fp32";
    auto loaded = LoadModel(options);
    if (!loaded.ok()) return loaded.status();
    return ServingModel(std::move(loaded->tokenizer), std::move(loaded->backend));
  });
}

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_SERVER_MODEL_SERVER_UTIL_H_
