// API keys: the one check that the gRPC credentials (grpc_credentials.h) and the HTTP
// front door (src/http/) both run on every call, before any handler. A key arrives as
// "authorization: Bearer <key>" or "x-api-key: <key>" (gRPC metadata or HTTP headers).
// Keys are kept only as SHA-256 digests and compared in constant time; no message this
// class makes contains a key, a presented value or a digest.
// Thread-safe: immutable after Load.
#ifndef EMBEDSERVE_SECURITY_API_KEYS_H_
#define EMBEDSERVE_SECURITY_API_KEYS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "embedserve/config/server_config.h"

namespace embedserve {

class ApiKeys {
 public:
  // Returns the value of an environment variable, or null when unset.
  using GetEnv = std::function<const char*(const char*)>;

  // Reads the keys that server.auth names: every line of api_keys_file (surrounding
  // spaces trimmed; blank lines and lines starting with '#' skipped) and the
  // comma-separated keys in the variable api_keys_env. Returns null when neither is set
  // (no authentication). NOT_FOUND when the file cannot be read or the variable is
  // unset; INVALID_ARGUMENT when a source holds no key or a key with spaces or control
  // characters; the messages name the config key, the file (and line) or the variable.
  static absl::StatusOr<std::shared_ptr<const ApiKeys>> Load(const AuthSection& auth,
                                                             const GetEnv& get_env);

  // The keys given directly (tests, embedding code). `keys` must not be empty.
  static std::shared_ptr<const ApiKeys> FromKeys(const std::vector<std::string>& keys,
                                                 bool exempt_health_and_metrics);

  // OK when `authorization` is "Bearer <key>" (scheme case-insensitive) or `x_api_key`
  // is "<key>" for a configured key; else UNAUTHENTICATED saying what to send. Either
  // header may be empty (absent). Takes the same time whichever key matches.
  absl::Status Check(absl::string_view authorization, absl::string_view x_api_key) const;

  // True when probes and scrapers need no key: grpc.health.v1 on gRPC; GET /health,
  // /metrics and /healthz on HTTP (server.auth.exempt_health_and_metrics).
  bool exempt_health_and_metrics() const { return exempt_health_and_metrics_; }
  // HTTP paths (without the query) and gRPC methods ("/package.Service/Method") that
  // need no key when exempt_health_and_metrics() is true.
  static bool IsHealthOrMetricsPath(absl::string_view path);
  static bool IsHealthMethod(absl::string_view grpc_method);

  size_t size() const { return digests_.size(); }
  // Where the keys came from, for the startup log: "2 from keys.txt, 1 from $VAR".
  const std::string& origin() const { return origin_; }

  // Implementation details below.
  using Digest = std::array<uint8_t, 32>;
  ApiKeys(std::vector<Digest> digests, bool exempt, std::string origin);

 private:
  bool Matches(absl::string_view key) const;

  const std::vector<Digest> digests_;
  const bool exempt_health_and_metrics_;
  const std::string origin_;
};

}  // namespace embedserve

#endif  // EMBEDSERVE_SECURITY_API_KEYS_H_
