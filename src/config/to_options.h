// The one place where the YAML config (ServerConfig) becomes each stage's Options: the
// Batcher's, the EmbeddingPipeline's and the HTTP server's. The stages validate their
// own invariants; their messages name the YAML keys these functions read from.
// Thread-safe: pure functions.
#ifndef EMBEDSERVE_CONFIG_TO_OPTIONS_H_
#define EMBEDSERVE_CONFIG_TO_OPTIONS_H_

#include "embedserve/batching/batcher.h"
#include "embedserve/config/server_config.h"
#include "http/http_server.h"
#include "pipeline/embedding_pipeline.h"
#include "security/tls_files.h"

namespace embedserve {

// batching.* (workers: per model instance, times model.InstanceDevices()). From the
// loaded backend's `info`: count_padding (pads_inputs), and whether the express lane
// applies: only to one model copy on the CPU ("cpu"), where it shares the cores with the
// batch in flight; on a GPU or with several copies it would queue for the device as a
// worker does, so express_max_tokens is 0 there.
Batcher::Options ToBatcherOptions(const ServerConfig& config, const BackendInfo& info);
// server.max_texts_per_request, model.max_seq_length, model.name, logging.log_requests.
EmbeddingPipeline::Options ToPipelineOptions(const ServerConfig& config);
// server.host, server.http_* (timeouts, body limit, threads); the TLS PEM bytes from
// `tls` (read from server.tls's files at start; null: plaintext).
HttpServer::Options ToHttpServerOptions(const ServerConfig& config,
                                        const TlsMaterial* tls = nullptr);

}  // namespace embedserve

#endif  // EMBEDSERVE_CONFIG_TO_OPTIONS_H_
