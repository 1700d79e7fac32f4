#include "embedserve/config/server_config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/model/cpu_environment.h"  // the scheduler slice's range

namespace embedserve {
namespace {

namespace fs = std::filesystem;

// "field must be in [lo, hi]; was v"
template <typename T>
absl::Status CheckRange(absl::string_view field, T value, T lo, T hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be in [", lo, ", ", hi, "]; was ", value));
}

absl::Status CheckOneOf(absl::string_view field, const std::string& value,
                        std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " must be one of ",
                                                 absl::StrJoin(allowed, ", "),
                                                 "; was '", value, "'"));
}

// A POSIX environment variable name: letters, digits and '_', not starting with a digit.
bool IsEnvName(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

bool IsValidDevice(const std::string& device) {
  if (device == "auto" || device == "cpu" || device == "cuda" || device == "mps") return true;
  if (!absl::StartsWith(device, "cuda:")) return false;
  int index = 0;
  return absl::SimpleAtoi(device.substr(5), &index) && index >= 0 && index < 1024;
}

}  // namespace

absl::Status TlsSection::Validate() const {
  // Named by the key that is set, so that the message points at its line.
  if (cert_file.empty() != key_file.empty()) {
    const bool has_cert = !cert_file.empty();
    return absl::InvalidArgumentError(absl::StrCat(
        has_cert ? "server.tls.cert_file" : "server.tls.key_file", " needs ",
        has_cert ? "server.tls.key_file" : "server.tls.cert_file",
        " (TLS needs the certificate and its key); that was ''"));
  }
  if (!client_ca_file.empty() && cert_file.empty()) {
    return absl::InvalidArgumentError(
        "server.tls.client_ca_file needs server.tls.cert_file and server.tls.key_file (mTLS "
        "runs over TLS); was set without them");
  }
  return absl::OkStatus();
}

absl::Status AuthSection::Validate() const {
  if (!api_keys_env.empty() && !IsEnvName(api_keys_env)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.auth.api_keys_env must be an environment variable name (letters, digits, "
        "'_', not starting with a digit), e.g. EMBEDSERVE_API_KEYS; was '", api_keys_env, "'"));
  }
  return absl::OkStatus();
}

absl::Status ServerSection::Validate() const {
  if (host.empty()) {
    return absl::InvalidArgumentError(
        "server.host must be a host name or address (e.g. 127.0.0.1, 0.0.0.0); was ''");
  }
  ES_RETURN_IF_ERROR(CheckRange("server.port", port, 0, 65535));
  ES_RETURN_IF_ERROR(CheckRange("server.metrics_port", metrics_port, -1, 65535));
  if (metrics_port > 0 && metrics_port == port) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.metrics_port must differ from server.port; both were ", port));
  }
  ES_RETURN_IF_ERROR(CheckRange("server.http_port", http_port, -1, 65535));
  if (http_port > 0 && (http_port == port || http_port == metrics_port)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.http_port must differ from server.port and server.metrics_port; was ",
        http_port));
  }
  ES_RETURN_IF_ERROR(CheckRange("server.http_threads", http_threads, 1, 256));
  ES_RETURN_IF_ERROR(CheckRange("server.grpc_queues", grpc_queues, 0, 64));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.http_max_body_bytes", http_max_body_bytes,
                                         1024, int64_t{1} << 32));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.http_header_timeout_ms",
                                         http_header_timeout_ms, 1, 3600 * 1000));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.http_idle_timeout_ms", http_idle_timeout_ms,
                                         1, 24 * 3600 * 1000));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.max_message_bytes", max_message_bytes,
                                         1024, std::numeric_limits<int32_t>::max()));
  ES_RETURN_IF_ERROR(CheckRange("server.threads", threads, 0, 4096));
  ES_RETURN_IF_ERROR(
      CheckRange("server.max_texts_per_request", max_texts_per_request, 1, 1000000));
  ES_RETURN_IF_ERROR(
      CheckRange("server.max_stream_backlog", max_stream_backlog, 1, 1000000));
  ES_RETURN_IF_ERROR(CheckRange("server.stream_queue_percent", stream_queue_percent, 1, 100));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.max_stream_backlog_bytes",
                                         max_stream_backlog_bytes, 1024, int64_t{1} << 34));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.shutdown_grace_ms", shutdown_grace_ms,
                                         0, 3600 * 1000));
  if (cpu_slice_us != 0) {
    ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.cpu_slice_us (0: the kernel's)",
                                           cpu_slice_us, kMinSchedSliceUs, kMaxSchedSliceUs));
  }
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("server.shutdown_delay_ms", shutdown_delay_ms,
                                         0, 3600 * 1000));
  ES_RETURN_IF_ERROR(tls.Validate());
  ES_RETURN_IF_ERROR(auth.Validate());
  return absl::OkStatus();
}

std::vector<std::string> ModelSection::InstanceDevices() const {
  std::vector<std::string> out;
  for (const std::string& d : devices.empty() ? std::vector<std::string>{device} : devices) {
    for (int i = 0; i < instances_per_device; ++i) out.push_back(d);
  }
  return out;
}

absl::Status ModelSection::Validate() const {
  if (!IsValidDevice(device)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.device must be one of auto, cpu, cuda, cuda:N, mps; was '", device, "'"));
  }
  if (!devices.empty() && device != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.device and model.devices are exclusive: leave model.device unset (auto) "
        "when listing model.devices; was device '", device, "' with ", devices.size(),
        " devices"));
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i] == "auto" || !IsValidDevice(devices[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.devices[", i, "] must be one of cpu, cuda, cuda:N, mps; was '", devices[i],
          "'"));
    }
    if ((devices[i] == "cpu") != (devices[0] == "cpu")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.devices must be all cpu or all GPUs (one precision serves them all); was '",
          devices[0], "' and '", devices[i], "'"));
    }
  }
  ES_RETURN_IF_ERROR(CheckRange("model.devices (count)", static_cast<int>(devices.size()),
                                0, 64));
  ES_RETURN_IF_ERROR(CheckRange("model.instances_per_device", instances_per_device, 1, 64));
  ES_RETURN_IF_ERROR(
      CheckOneOf("model.precision", precision, {"fp32", "fp16", "bf16", "int8"}));
  if (quantized && precision != "fp32") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.quantized must be false when model.precision is set (quantized: true "
        "means fp16 on a GPU; on a CPU bf16 with native bf16, else int8); was true with precision '",
        precision, "'"));
  }
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("model.max_seq_length", max_seq_length, 0, 8192));
  ES_RETURN_IF_ERROR(CheckRange("model.threads", threads, 0, 4096));
  ES_RETURN_IF_ERROR(CheckRange("model.cpu_nice", cpu_nice, 0, 19));
  ES_RETURN_IF_ERROR(CheckRange("model.cuda_graph_max_batch", cuda_graph_max_batch, 64, 1024));
  ES_RETURN_IF_ERROR(CheckOneOf("model.backend", backend, {"libtorch"}));
  return absl::OkStatus();
}

absl::Status BatchingSection::Validate() const {
  ES_RETURN_IF_ERROR(CheckRange("batching.max_batch_size", max_batch_size, 1, 65536));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("batching.max_batch_tokens", max_batch_tokens, 1,
                                         int64_t{1} << 24));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("batching.max_queue_delay_us",
                                         max_queue_delay_us, 0, 10 * 1000 * 1000));
  ES_RETURN_IF_ERROR(CheckRange("batching.max_queue_sequences", max_queue_sequences, 1,
                                10 * 1000 * 1000));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("batching.max_queue_wait_ms", max_queue_wait_ms, 0,
                                         600 * 1000));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("batching.overload_queue_wait_ms",
                                         overload_queue_wait_ms, 0, 600 * 1000));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("batching.max_request_tokens", max_request_tokens, 0,
                                         std::numeric_limits<int32_t>::max()));
  ES_RETURN_IF_ERROR(CheckRange("batching.workers", workers, 1, 256));
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("batching.idle_spin_us", idle_spin_us, 0,
                                         10 * 1000));  // Batcher::Options::kMaxIdleSpinUs
  ES_RETURN_IF_ERROR(CheckRange("batching.completion_threads", completion_threads, 0,
                                 64));  // Batcher::Options::kMaxCompletionThreads
  ES_RETURN_IF_ERROR(CheckRange<int64_t>("batching.express_max_tokens", express_max_tokens, 0,
                                         max_batch_tokens));
  ES_RETURN_IF_ERROR(CheckRange("batching.express_cpu_threads", express_cpu_threads, 0, 256));
  return absl::OkStatus();
}

absl::Status LoggingSection::Validate() const {
  return CheckOneOf("logging.level", level,
                    {"trace", "debug", "info", "warn", "error", "critical", "off"});
}

absl::Status BenchmarkSection::Validate() const {
  if (batch_sizes.empty()) {
    return absl::InvalidArgumentError(
        "benchmark.batch_sizes must list at least one size, e.g. [1, 8, 32]; was []");
  }
  for (size_t i = 0; i < batch_sizes.size(); ++i) {
    ES_RETURN_IF_ERROR(CheckRange(absl::StrCat("benchmark.batch_sizes[", i, "]"),
                                  batch_sizes[i], 1, 1000000));
  }
  if (concurrencies.empty()) {
    return absl::InvalidArgumentError(
        "benchmark.concurrencies must list at least one value, e.g. [1, 4, 16]; was []");
  }
  for (size_t i = 0; i < concurrencies.size(); ++i) {
    ES_RETURN_IF_ERROR(CheckRange(absl::StrCat("benchmark.concurrencies[", i, "]"),
                                  concurrencies[i], 1, 100000));
  }
  if (!(duration_s > 0 && duration_s <= 86400)) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.duration_s must be in (0, 86400]; was ", duration_s));
  }
  if (!(warmup_s >= 0 && warmup_s <= 86400)) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.warmup_s must be in [0, 86400]; was ", warmup_s));
  }
  return CheckOneOf("benchmark.method", method, {"embed", "similarity"});
}

absl::Status ServerConfig::Validate() const {
  ES_RETURN_IF_ERROR(server.Validate());
  ES_RETURN_IF_ERROR(model.Validate());
  ES_RETURN_IF_ERROR(batching.Validate());
  ES_RETURN_IF_ERROR(logging.Validate());
  ES_RETURN_IF_ERROR(benchmark.Validate());
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------
// YAML parsing.

namespace {

// Parses one file; remembers where each key was so that Validate() errors can point at
// the line.
class Parser {
 public:
  explicit Parser(absl::string_view source) : source_(source) {}

  absl::Status Parse(const YAML::Node& root, ServerConfig* config) {
    if (!root.IsDefined() || root.IsNull()) return absl::OkStatus();  // empty file
    if (!root.IsMap()) {
      return Error(root, "", "the file must be a mapping of sections (server, model, "
                             "batching, logging, benchmark)");
    }
    using Handler = std::function<absl::Status(const YAML::Node&, const std::string&)>;
    const std::vector<std::pair<const char*, Handler>> sections = {
        {"server", [&](const YAML::Node& n, const std::string& k) { return Server(n, k, &config->server); }},
        {"model", [&](const YAML::Node& n, const std::string& k) { return Model(n, k, &config->model); }},
        {"batching", [&](const YAML::Node& n, const std::string& k) { return Batching(n, k, &config->batching); }},
        {"logging", [&](const YAML::Node& n, const std::string& k) { return Logging(n, k, &config->logging); }},
        {"benchmark", [&](const YAML::Node& n, const std::string& k) { return Benchmark(n, k, &config->benchmark); }},
        // Seed keys, kept working: top-level `backend` and `quantized`.
        {"backend", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &config->model.backend); }},
        {"quantized", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &config->model.quantized); }},
    };
    return Map(root, "", sections);
  }

  // Prefixes a Validate() message "a.b must ..." with the location of key a.b.
  absl::Status Locate(const absl::Status& status) const {
    if (status.ok()) return status;
    std::string field(status.message().substr(0, status.message().find(' ')));
    const size_t bracket = field.find('[');
    auto it = marks_.find(field);
    if (it == marks_.end() && bracket != std::string::npos) {
      it = marks_.find(field.substr(0, bracket));
    }
    if (it == marks_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": ", status.message()));
    }
    return absl::InvalidArgumentError(absl::StrCat(source_, ":", it->second.line + 1, ":",
                                                   it->second.column + 1, ": ",
                                                   status.message()));
  }

 private:
  using Handler = std::function<absl::Status(const YAML::Node&, const std::string&)>;

  absl::Status Error(const YAML::Node& node, const std::string& key,
                     absl::string_view what) const {
    const YAML::Mark mark = node.Mark();
    std::string where = source_;
    if (mark.line >= 0) absl::StrAppend(&where, ":", mark.line + 1, ":", mark.column + 1);
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", key.empty() ? "" : absl::StrCat(key, ": "), what));
  }

  static std::string Show(const YAML::Node& node) {
    if (node.IsNull()) return "null (no value)";
    if (node.IsScalar()) return absl::StrCat("'", node.Scalar(), "'");
    if (node.IsSequence()) return "a list";
    if (node.IsMap()) return "a mapping";
    return "nothing";
  }

  absl::Status Map(const YAML::Node& node, const std::string& prefix,
                   const std::vector<std::pair<const char*, Handler>>& handlers) {
    std::vector<std::string> allowed;
    for (const auto& h : handlers) allowed.push_back(h.first);
    if (!node.IsMap()) {
      return Error(node, prefix,
                   absl::StrCat("must be a mapping with keys ", absl::StrJoin(allowed, ", "),
                                "; was ", Show(node)));
    }
    for (const auto& kv : node) {
      const std::string name = kv.first.Scalar();
      const std::string key = prefix.empty() ? name : absl::StrCat(prefix, ".", name);
      const Handler* handler = nullptr;
      for (const auto& h : handlers) {
        if (name == h.first) handler = &h.second;
      }
      if (handler == nullptr) {
        return Error(kv.first, key,
                     absl::StrCat("unknown key '", name, "'; allowed ",
                                  prefix.empty() ? "top-level keys" : "keys in " + prefix,
                                  ": ", absl::StrJoin(allowed, ", ")));
      }
      if (marks_.contains(key)) {
        return Error(kv.first, key, "given twice");
      }
      marks_[key] = kv.first.Mark();
      ES_RETURN_IF_ERROR((*handler)(kv.second, key));
    }
    return absl::OkStatus();
  }

  absl::Status String(const YAML::Node& node, const std::string& key, std::string* out) {
    if (!node.IsScalar()) {
      return Error(node, key, absl::StrCat("must be a string; was ", Show(node)));
    }
    *out = node.Scalar();
    return absl::OkStatus();
  }

  absl::Status Bool(const YAML::Node& node, const std::string& key, bool* out) {
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, *out)) {
      return Error(node, key, absl::StrCat("must be true or false; was ", Show(node)));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Int(const YAML::Node& node, const std::string& key, T* out) {
    int64_t v = 0;
    if (!node.IsScalar() || !YAML::convert<int64_t>::decode(node, v) ||
        v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
      return Error(node, key, absl::StrCat("must be an integer; was ", Show(node)));
    }
    *out = static_cast<T>(v);
    return absl::OkStatus();
  }

  absl::Status Double(const YAML::Node& node, const std::string& key, double* out) {
    if (!node.IsScalar() || !YAML::convert<double>::decode(node, *out) ||
        !std::isfinite(*out)) {
      return Error(node, key, absl::StrCat("must be a number; was ", Show(node)));
    }
    return absl::OkStatus();
  }

  // A YAML sequence, each element read by `read` (e.g. Int, String) under "key[i]".
  template <typename T, typename Read>
  absl::Status List(const YAML::Node& node, const std::string& key, const char* what,
                    Read read, std::vector<T>* out) {
    if (!node.IsSequence()) {
      return Error(node, key, absl::StrCat("must be a list of ", what, "; was ", Show(node)));
    }
    out->clear();
    for (size_t i = 0; i < node.size(); ++i) {
      T v{};
      ES_RETURN_IF_ERROR(read(node[i], absl::StrCat(key, "[", i, "]"), &v));
      out->push_back(std::move(v));
    }
    return absl::OkStatus();
  }

  absl::Status IntList(const YAML::Node& node, const std::string& key,
                       std::vector<int>* out) {
    return List(node, key, "integers, e.g. [1, 8, 32]",
                [this](const YAML::Node& n, const std::string& k, int* v) { return Int(n, k, v); },
                out);
  }

  absl::Status StringList(const YAML::Node& node, const std::string& key,
                          std::vector<std::string>* out) {
    return List(node, key, "strings, e.g. [cuda:0, cuda:1]",
                [this](const YAML::Node& n, const std::string& k, std::string* v) {
                  return String(n, k, v);
                },
                out);
  }

  // A delay given in one of several units; only one of them may be set.
  absl::Status DelayUs(const YAML::Node& node, const std::string& key, double scale,
                       int64_t* out_us) {
    double v = 0;
    ES_RETURN_IF_ERROR(Double(node, key, &v));
    if (delay_key_set_) {
      return Error(node, key,
                   "the queue delay is given twice; keep one of batching.timeout_ms, "
                   "batching.max_queue_delay_ms, batching.max_queue_delay_us");
    }
    delay_key_set_ = true;
    const double us = v * scale;
    if (!(us >= 0 && us <= 10e6)) {
      return Error(node, key,
                   absl::StrCat("must be in [0, ", 10e6 / scale, "]; was ", v));
    }
    *out_us = static_cast<int64_t>(std::llround(us));
    return absl::OkStatus();
  }

  absl::Status Server(const YAML::Node& node, const std::string& p, ServerSection* s) {
    if (node.IsMap() && node["http_api_key"].IsDefined()) {
      return Error(node["http_api_key"], "server.http_api_key",
                   "is no longer read: a key in the config would be printed by "
                   "--print-config; write the key to a file and set "
                   "server.auth.api_keys_file, or name an environment variable that holds "
                   "it in server.auth.api_keys_env (docs/security.md)");
    }
    return Map(node, p, {
        {"host", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &s->host); }},
        {"port", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->port); }},
        {"metrics_port", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->metrics_port); }},
        {"http_port", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->http_port); }},
        {"http_threads", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->http_threads); }},
        {"http_max_body_bytes", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->http_max_body_bytes); }},
        {"http_header_timeout_ms", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->http_header_timeout_ms); }},
        {"http_idle_timeout_ms", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->http_idle_timeout_ms); }},
        {"max_message_bytes", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->max_message_bytes); }},
        {"threads", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->threads); }},
        {"grpc_queues", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->grpc_queues); }},
        {"max_texts_per_request", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->max_texts_per_request); }},
        {"max_stream_backlog", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->max_stream_backlog); }},
        {"stream_queue_percent", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->stream_queue_percent); }},
        {"max_stream_backlog_bytes", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->max_stream_backlog_bytes); }},
        {"shutdown_grace_ms", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->shutdown_grace_ms); }},
        {"shutdown_delay_ms", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->shutdown_delay_ms); }},
        {"cpu_slice_us", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &s->cpu_slice_us); }},
        {"warmup", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &s->warmup); }},
        {"tls", [&](const YAML::Node& n, const std::string& k) { return Tls(n, k, &s->tls); }},
        {"auth", [&](const YAML::Node& n, const std::string& k) { return Auth(n, k, &s->auth); }},
    });
  }

  absl::Status Tls(const YAML::Node& node, const std::string& p, TlsSection* t) {
    return Map(node, p, {
        {"cert_file", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &t->cert_file); }},
        {"key_file", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &t->key_file); }},
        {"client_ca_file", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &t->client_ca_file); }},
    });
  }

  absl::Status Auth(const YAML::Node& node, const std::string& p, AuthSection* a) {
    return Map(node, p, {
        {"api_keys_file", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &a->api_keys_file); }},
        {"api_keys_env", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &a->api_keys_env); }},
        {"exempt_health_and_metrics", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &a->exempt_health_and_metrics); }},
    });
  }

  absl::Status Model(const YAML::Node& node, const std::string& p, ModelSection* m) {
    return Map(node, p, {
        {"name", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &m->name); }},
        {"path", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &m->path); }},
        {"fallback_path", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &m->fallback_path); }},
        {"device", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &m->device); }},
        {"devices", [&](const YAML::Node& n, const std::string& k) { return StringList(n, k, &m->devices); }},
        {"instances_per_device", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &m->instances_per_device); }},
        {"precision", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &m->precision); }},
        {"quantized", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &m->quantized); }},
        {"max_seq_length", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &m->max_seq_length); }},
        {"threads", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &m->threads); }},
        {"cuda_graphs", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &m->cuda_graphs); }},
        {"cuda_graph_max_batch", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &m->cuda_graph_max_batch); }},
        {"tf32", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &m->tf32); }},
        {"cpu_nice", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &m->cpu_nice); }},
        {"cpu_pin_threads", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &m->cpu_pin_threads); }},
        {"cpu_sched_idle", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &m->cpu_sched_idle); }},
        {"backend", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &m->backend); }},
    });
  }

  absl::Status Batching(const YAML::Node& node, const std::string& p, BatchingSection* b) {
    return Map(node, p, {
        {"enabled", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &b->enabled); }},
        {"max_batch_size", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->max_batch_size); }},
        {"max_batch_tokens", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->max_batch_tokens); }},
        {"timeout_ms", [&](const YAML::Node& n, const std::string& k) { return DelayUs(n, k, 1000.0, &b->max_queue_delay_us); }},
        {"max_queue_delay_ms", [&](const YAML::Node& n, const std::string& k) { return DelayUs(n, k, 1000.0, &b->max_queue_delay_us); }},
        {"max_queue_delay_us", [&](const YAML::Node& n, const std::string& k) { return DelayUs(n, k, 1.0, &b->max_queue_delay_us); }},
        {"max_queue_sequences", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->max_queue_sequences); }},
        {"max_queue_wait_ms", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->max_queue_wait_ms); }},
        {"overload_queue_wait_ms", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->overload_queue_wait_ms); }},
        {"max_request_tokens", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->max_request_tokens); }},
        {"workers", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->workers); }},
        {"idle_spin_us", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->idle_spin_us); }},
        {"completion_threads", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->completion_threads); }},
        {"express_max_tokens", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->express_max_tokens); }},
        {"express_cpu_threads", [&](const YAML::Node& n, const std::string& k) { return Int(n, k, &b->express_cpu_threads); }},
    });
  }

  absl::Status Logging(const YAML::Node& node, const std::string& p, LoggingSection* l) {
    return Map(node, p, {
        {"level", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &l->level); }},
        {"log_requests", [&](const YAML::Node& n, const std::string& k) { return Bool(n, k, &l->log_requests); }},
    });
  }

  // A key of the benchmark launcher's: kept as YAML text.
  absl::Status Opaque(const YAML::Node& node, const std::string& key, BenchmarkSection* b) {
    YAML::Emitter out;
    out.SetSeqFormat(YAML::Flow);
    out.SetMapFormat(YAML::Flow);
    out << node;
    b->launcher_options.emplace_back(key.substr(key.find('.') + 1), out.c_str());
    return absl::OkStatus();
  }

  absl::Status Benchmark(const YAML::Node& node, const std::string& p, BenchmarkSection* b) {
    auto opaque = [&](const YAML::Node& n, const std::string& k) { return Opaque(n, k, b); };
    return Map(node, p, {
        {"batch_sizes", [&](const YAML::Node& n, const std::string& k) { return IntList(n, k, &b->batch_sizes); }},
        {"concurrencies", [&](const YAML::Node& n, const std::string& k) { return IntList(n, k, &b->concurrencies); }},
        {"duration_s", [&](const YAML::Node& n, const std::string& k) { return Double(n, k, &b->duration_s); }},
        {"warmup_s", [&](const YAML::Node& n, const std::string& k) { return Double(n, k, &b->warmup_s); }},
        {"method", [&](const YAML::Node& n, const std::string& k) { return String(n, k, &b->method); }},
        {"extra_grids", opaque}, {"rates_rps", opaque}, {"max_outstanding", opaque},
        {"requests", opaque}, {"sentence_length", opaque}, {"seed", opaque},
        {"timeout_ms", opaque}, {"backoff_ms", opaque}, {"pairs_file", opaque},
        {"pool_requests", opaque},
    });
  }

  std::string source_;
  absl::flat_hash_map<std::string, YAML::Mark> marks_;
  bool delay_key_set_ = false;
};

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(absl::string_view yaml,
                                               absl::string_view source_name) {
  Parser parser(source_name);
  ServerConfig config;
  config.source = std::string(source_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1,
                                                   ": not valid YAML: ", e.msg));
  }
  try {
    ES_RETURN_IF_ERROR(parser.Parse(root, &config));
  } catch (const YAML::Exception& e) {  // defensive: yaml-cpp throws on odd nodes
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", e.mark.line + 1, ": ", e.msg));
  }
  ES_RETURN_IF_ERROR(parser.Locate(config.Validate()));
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("config file ", path,
                     " cannot be read (missing or no permission); pass an existing "
                     "file, e.g. --config experiments/minilm_batching.yaml"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseServerConfig(buffer.str(), path);
}

// ---------------------------------------------------------------------------------
// YAML output.

namespace {

// A YAML double-quoted scalar; control characters are escaped (\xNN) so that the
// printout parses back to the same bytes (a raw newline or NUL would not).
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (byte < 0x20 || byte == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(byte, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

std::string Number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

std::string ServerConfigToYaml(const ServerConfig& c) {
  std::string y;
  if (!c.source.empty()) {
    // One comment line, whatever bytes the file name holds.
    absl::StrAppend(&y, "# effective config (from ",
                    absl::StrReplaceAll(c.source, {{"\n", "\\n"}, {"\r", "\\r"}}), ")\n");
  }
  absl::StrAppend(&y, "server:\n");
  absl::StrAppend(&y, "  host: ", Quote(c.server.host), "\n");
  absl::StrAppend(&y, "  port: ", c.server.port, "\n");
  absl::StrAppend(&y, "  metrics_port: ", c.server.metrics_port, "\n");
  absl::StrAppend(&y, "  http_port: ", c.server.http_port, "\n");
  absl::StrAppend(&y, "  http_threads: ", c.server.http_threads, "\n");
  absl::StrAppend(&y, "  http_max_body_bytes: ", c.server.http_max_body_bytes, "\n");
  absl::StrAppend(&y, "  http_header_timeout_ms: ", c.server.http_header_timeout_ms, "\n");
  absl::StrAppend(&y, "  http_idle_timeout_ms: ", c.server.http_idle_timeout_ms, "\n");
  absl::StrAppend(&y, "  max_message_bytes: ", c.server.max_message_bytes, "\n");
  absl::StrAppend(&y, "  threads: ", c.server.threads, "\n");
  absl::StrAppend(&y, "  grpc_queues: ", c.server.grpc_queues, "\n");
  absl::StrAppend(&y, "  max_texts_per_request: ", c.server.max_texts_per_request, "\n");
  absl::StrAppend(&y, "  max_stream_backlog: ", c.server.max_stream_backlog, "\n");
  absl::StrAppend(&y, "  stream_queue_percent: ", c.server.stream_queue_percent, "\n");
  absl::StrAppend(&y, "  max_stream_backlog_bytes: ", c.server.max_stream_backlog_bytes, "\n");
  absl::StrAppend(&y, "  shutdown_grace_ms: ", c.server.shutdown_grace_ms, "\n");
  absl::StrAppend(&y, "  shutdown_delay_ms: ", c.server.shutdown_delay_ms, "\n");
  absl::StrAppend(&y, "  cpu_slice_us: ", c.server.cpu_slice_us, "\n");
  absl::StrAppend(&y, "  warmup: ", c.server.warmup ? "true" : "false", "\n");
  // File and variable names only: the keys themselves are never printed.
  absl::StrAppend(&y, "  tls:\n");
  absl::StrAppend(&y, "    cert_file: ", Quote(c.server.tls.cert_file), "\n");
  absl::StrAppend(&y, "    key_file: ", Quote(c.server.tls.key_file), "\n");
  absl::StrAppend(&y, "    client_ca_file: ", Quote(c.server.tls.client_ca_file), "\n");
  absl::StrAppend(&y, "  auth:\n");
  absl::StrAppend(&y, "    api_keys_file: ", Quote(c.server.auth.api_keys_file), "\n");
  absl::StrAppend(&y, "    api_keys_env: ", Quote(c.server.auth.api_keys_env), "\n");
  absl::StrAppend(&y, "    exempt_health_and_metrics: ",
                  c.server.auth.exempt_health_and_metrics ? "true" : "false", "\n");
  absl::StrAppend(&y, "model:\n");
  absl::StrAppend(&y, "  name: ", Quote(c.model.name), "\n");
  absl::StrAppend(&y, "  path: ", Quote(c.model.path), "\n");
  absl::StrAppend(&y, "  fallback_path: ", Quote(c.model.fallback_path), "\n");
  absl::StrAppend(&y, "  device: ", Quote(c.model.device), "\n");
  std::vector<std::string> devices;
  for (const std::string& d : c.model.devices) devices.push_back(Quote(d));
  absl::StrAppend(&y, "  devices: [", absl::StrJoin(devices, ", "), "]\n");
  absl::StrAppend(&y, "  instances_per_device: ", c.model.instances_per_device, "\n");
  absl::StrAppend(&y, "  precision: ", Quote(c.model.precision), "\n");
  absl::StrAppend(&y, "  quantized: ", c.model.quantized ? "true" : "false", "\n");
  absl::StrAppend(&y, "  max_seq_length: ", c.model.max_seq_length, "\n");
  absl::StrAppend(&y, "  threads: ", c.model.threads, "\n");
  absl::StrAppend(&y, "  cuda_graphs: ", c.model.cuda_graphs ? "true" : "false", "\n");
  absl::StrAppend(&y, "  cuda_graph_max_batch: ", c.model.cuda_graph_max_batch, "\n");
  absl::StrAppend(&y, "  tf32: ", c.model.tf32 ? "true" : "false", "\n");
  absl::StrAppend(&y, "  cpu_nice: ", c.model.cpu_nice, "\n");
  absl::StrAppend(&y, "  cpu_pin_threads: ", c.model.cpu_pin_threads ? "true" : "false", "\n");
  absl::StrAppend(&y, "  cpu_sched_idle: ", c.model.cpu_sched_idle ? "true" : "false", "\n");
  absl::StrAppend(&y, "  backend: ", Quote(c.model.backend), "\n");
  absl::StrAppend(&y, "batching:\n");
  absl::StrAppend(&y, "  enabled: ", c.batching.enabled ? "true" : "false", "\n");
  absl::StrAppend(&y, "  max_batch_size: ", c.batching.max_batch_size, "\n");
  absl::StrAppend(&y, "  max_batch_tokens: ", c.batching.max_batch_tokens, "\n");
  absl::StrAppend(&y, "  max_queue_delay_us: ", c.batching.max_queue_delay_us, "\n");
  absl::StrAppend(&y, "  max_queue_sequences: ", c.batching.max_queue_sequences, "\n");
  absl::StrAppend(&y, "  max_queue_wait_ms: ", c.batching.max_queue_wait_ms, "\n");
  absl::StrAppend(&y, "  overload_queue_wait_ms: ", c.batching.overload_queue_wait_ms, "\n");
  absl::StrAppend(&y, "  max_request_tokens: ", c.batching.max_request_tokens, "\n");
  absl::StrAppend(&y, "  workers: ", c.batching.workers, "\n");
  absl::StrAppend(&y, "  idle_spin_us: ", c.batching.idle_spin_us, "\n");
  absl::StrAppend(&y, "  completion_threads: ", c.batching.completion_threads, "\n");
  absl::StrAppend(&y, "  express_max_tokens: ", c.batching.express_max_tokens, "\n");
  absl::StrAppend(&y, "  express_cpu_threads: ", c.batching.express_cpu_threads, "\n");
  absl::StrAppend(&y, "logging:\n");
  absl::StrAppend(&y, "  level: ", Quote(c.logging.level), "\n");
  absl::StrAppend(&y, "  log_requests: ", c.logging.log_requests ? "true" : "false", "\n");
  absl::StrAppend(&y, "benchmark:\n");
  absl::StrAppend(&y, "  batch_sizes: [", absl::StrJoin(c.benchmark.batch_sizes, ", "), "]\n");
  absl::StrAppend(&y, "  concurrencies: [", absl::StrJoin(c.benchmark.concurrencies, ", "),
                  "]\n");
  absl::StrAppend(&y, "  duration_s: ", Number(c.benchmark.duration_s), "\n");
  absl::StrAppend(&y, "  warmup_s: ", Number(c.benchmark.warmup_s), "\n");
  absl::StrAppend(&y, "  method: ", Quote(c.benchmark.method), "\n");
  for (const auto& [key, yaml] : c.benchmark.launcher_options) {
    absl::StrAppend(&y, "  ", key, ": ", yaml, "\n");
  }
  return y;
}

// ---------------------------------------------------------------------------------
// Model folder lookup.

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

bool IsModelFolder(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::exists(dir / "config.json", ec);
}

// The snapshot folder of `repo_id` under `hub`, or "" when absent.
std::string FindSnapshot(const fs::path& hub, const std::string& repo_id) {
  std::string folder = "models--" + repo_id;
  for (size_t pos = 0; (pos = folder.find('/', pos)) != std::string::npos;) {
    folder.replace(pos, 1, "--");
  }
  const fs::path repo = hub / folder;
  std::error_code ec;
  if (!fs::is_directory(repo, ec)) return "";
  // refs/main names the snapshot the hub considers current.
  std::ifstream ref(repo / "refs" / "main");
  std::string hash;
  if (ref && std::getline(ref, hash)) {
    const fs::path snap = repo / "snapshots" / hash;
    if (IsModelFolder(snap)) return snap.string();
  }
  // Else the newest snapshot that looks like a model.
  fs::path best;
  fs::file_time_type best_time{};
  for (const auto& entry : fs::directory_iterator(repo / "snapshots", ec)) {
    if (!IsModelFolder(entry.path())) continue;
    const auto t = fs::last_write_time(entry.path(), ec);
    if (best.empty() || t > best_time) {
      best = entry.path();
      best_time = t;
    }
  }
  return best.string();
}

}  // namespace

ModelLocatorEnv ModelLocatorEnv::FromEnvironment() {
  ModelLocatorEnv env;
  env.hf_hub_cache = Env("HF_HUB_CACHE");
  if (env.hf_hub_cache.empty()) env.hf_hub_cache = Env("HUGGINGFACE_HUB_CACHE");
  env.hf_home = Env("HF_HOME");
  env.home = Env("HOME");
  env.xdg_cache_home = Env("XDG_CACHE_HOME");
  return env;
}

absl::StatusOr<std::string> ResolveModelPath(const ModelSection& model,
                                             const ModelLocatorEnv& env) {
  if (!model.path.empty()) {
    std::error_code ec;
    if (!fs::is_directory(model.path, ec)) {
      return absl::NotFoundError(absl::StrCat(
          "model.path ", model.path,
          " is not a folder; point it (or --model) at a sentence-transformers model "
          "folder, or create a synthetic one with embedserve-make-model"));
    }
    return model.path;
  }
  if (model.name.empty()) {
    std::error_code ec;
    if (fs::is_directory(kDefaultModelPath, ec)) return std::string(kDefaultModelPath);
    return absl::NotFoundError(absl::StrCat(
        "no model given and the default folder ", kDefaultModelPath,
        " (relative to the current directory) does not exist; run scripts/setup.sh from "
        "the repository root (it fetches sentence-transformers/all-MiniLM-L6-v2 there), or "
        "set model.path or model.name, or pass --model FOLDER"));
  }
  // The hub cache, in the order huggingface_hub uses.
  std::vector<std::string> hubs;
  if (!env.hf_hub_cache.empty()) hubs.push_back(env.hf_hub_cache);
  if (!env.hf_home.empty()) hubs.push_back((fs::path(env.hf_home) / "hub").string());
  if (!env.xdg_cache_home.empty()) {
    hubs.push_back((fs::path(env.xdg_cache_home) / "huggingface" / "hub").string());
  }
  if (!env.home.empty()) {
    hubs.push_back((fs::path(env.home) / ".cache" / "huggingface" / "hub").string());
  }
  std::vector<std::string> ids = {model.name};
  if (model.name.find('/') == std::string::npos) {
    ids.push_back("sentence-transformers/" + model.name);
  }
  for (const std::string& hub : hubs) {
    for (const std::string& id : ids) {
      std::string snap = FindSnapshot(hub, id);
      if (!snap.empty()) return snap;
    }
  }
  // The project's folder: models/all-MiniLM-L6-v2 for sentence-transformers/all-MiniLM-L6-v2.
  std::string local;
  const fs::path leaf = fs::path(model.name).filename();
  if (!env.models_dir.empty() && leaf != "." && leaf != "..") {
    local = (fs::path(env.models_dir) / leaf).string();
    if (IsModelFolder(local)) return local;
  }
  if (!model.fallback_path.empty()) {
    std::error_code ec;
    if (fs::is_directory(model.fallback_path, ec)) return model.fallback_path;
  }
  return absl::NotFoundError(absl::StrCat(
      "model.name '", model.name, "' is not in the Hugging Face cache (looked in ",
      hubs.empty() ? std::string("no folder: HF_HUB_CACHE, HF_HOME and HOME are unset")
                   : absl::StrJoin(hubs, ", "),
      ")", local.empty() ? std::string() : absl::StrCat(" nor at ", local),
      model.fallback_path.empty()
          ? std::string()
          : absl::StrCat(" and model.fallback_path ", model.fallback_path,
                         " does not exist"),
      "; for sentence-transformers/all-MiniLM-L6-v2 run scripts/setup.sh from the "
      "repository root (it lays the model out at models/all-MiniLM-L6-v2); else download "
      "it (huggingface-cli download ", ids.back(), "), set model.path or pass --model FOLDER, or create a synthetic folder with "
      "embedserve-make-model"));
}

}  // namespace embedserve
