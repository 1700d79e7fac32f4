#include "config/to_options.h"

namespace embedserve {

Batcher::Options ToBatcherOptions(const ServerConfig& config, const BackendInfo& info) {
  const BatchingSection& b = config.batching;
  Batcher::Options o;
  o.enabled = b.enabled;
  o.max_batch_size = b.max_batch_size;
  o.max_batch_tokens = b.max_batch_tokens;
  o.count_padding = info.pads_inputs;
  o.max_queue_delay_us = b.max_queue_delay_us;
  o.max_queue_sequences = b.max_queue_sequences;
  o.max_queue_wait_us = b.max_queue_wait_ms * 1000;
  o.overload_queue_wait_us = b.overload_queue_wait_ms * 1000;
  o.max_request_tokens = b.max_request_tokens;
  // batching.workers per model instance: every instance (model.devices x
  // instances_per_device) has that many batches in flight.
  o.num_workers = b.workers * static_cast<int32_t>(config.model.InstanceDevices().size());
  o.idle_spin_us = b.idle_spin_us;
  o.completion_threads = b.completion_threads;
  o.express_max_tokens = b.enabled && info.device == "cpu" ? b.express_max_tokens : 0;
  o.express_cpu_threads = b.express_cpu_threads;
  return o;
}

EmbeddingPipeline::Options ToPipelineOptions(const ServerConfig& config) {
  EmbeddingPipeline::Options o;
  o.max_texts_per_request = config.server.max_texts_per_request;
  o.max_seq_length = config.model.max_seq_length;
  o.model_name = config.model.name;
  o.log_requests = config.logging.log_requests;
  return o;
}

HttpServer::Options ToHttpServerOptions(const ServerConfig& config, const TlsMaterial* tls) {
  const ServerSection& s = config.server;
  HttpServer::Options o;
  o.host = s.host;
  o.threads = s.http_threads;
  o.max_body_bytes = s.http_max_body_bytes;
  o.header_timeout_ms = s.http_header_timeout_ms;
  o.idle_timeout_ms = s.http_idle_timeout_ms;
  if (tls != nullptr) {
    o.tls_cert_chain_pem = tls->cert_chain_pem;
    o.tls_private_key_pem = tls->private_key_pem;
    o.tls_client_ca_pem = tls->client_ca_pem;
  }
  return o;
}

}  // namespace embedserve
