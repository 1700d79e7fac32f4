#include "security/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "embedserve/common/status_macros.h"

namespace embedserve {
namespace {

ApiKeys::Digest Sha256(absl::string_view key) {
  ApiKeys::Digest d;
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), d.data());
  return d;
}

// Printable ASCII without spaces: what fits an HTTP header or gRPC metadata value.
bool IsValidKey(absl::string_view key) {
  for (char c : key) {
    if (c <= ' ' || c == 0x7f || static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return !key.empty();
}

}  // namespace

ApiKeys::ApiKeys(std::vector<Digest> digests, bool exempt, std::string origin)
    : digests_(std::move(digests)),
      exempt_health_and_metrics_(exempt),
      origin_(std::move(origin)) {}

namespace {

// Appends the digest of every key among `parts` (trimmed; empty parts and, when
// `comments`, parts starting with '#' skipped). `source` names where they came from in
// the messages: "<source> item N: ..." for an invalid key, "<source> holds no key; <hint>"
// when there is none. Returns how many keys it added.
absl::StatusOr<size_t> AddKeys(const std::vector<absl::string_view>& parts, bool comments,
                               const std::string& source, absl::string_view item,
                               absl::string_view hint, std::vector<ApiKeys::Digest>* digests) {
  size_t added = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const absl::string_view key = absl::StripAsciiWhitespace(parts[i]);
    if (key.empty() || (comments && key.front() == '#')) continue;
    if (!IsValidKey(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, " ", item, " ", i + 1,
                       ": a key must be printable ASCII without spaces (the key is not shown)"));
    }
    digests->push_back(Sha256(key));
    ++added;
  }
  if (added == 0) return absl::InvalidArgumentError(absl::StrCat(source, " holds no key; ", hint));
  return added;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ApiKeys>> ApiKeys::Load(const AuthSection& auth,
                                                             const GetEnv& get_env) {
  if (!auth.enabled()) return std::shared_ptr<const ApiKeys>();
  std::vector<Digest> digests;
  std::vector<std::string> origins;
  if (!auth.api_keys_file.empty()) {
    std::ifstream in(auth.api_keys_file, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(absl::StrCat("server.auth.api_keys_file ", auth.api_keys_file,
                                              " cannot be read: ", std::strerror(errno)));
    }
    std::stringstream text;
    text << in.rdbuf();
    const std::string contents = text.str();
    ES_ASSIGN_OR_RETURN(
        const size_t n,
        AddKeys(absl::StrSplit(contents, '\n'), /*comments=*/true,
                absl::StrCat("server.auth.api_keys_file ", auth.api_keys_file), "line",
                "write one key per line", &digests));
    origins.push_back(absl::StrCat(n, " from ", auth.api_keys_file));
  }
  if (!auth.api_keys_env.empty()) {
    const char* value = get_env(auth.api_keys_env.c_str());
    if (value == nullptr) {
      return absl::NotFoundError(absl::StrCat("server.auth.api_keys_env names $",
                                              auth.api_keys_env, ", which is not set"));
    }
    ES_ASSIGN_OR_RETURN(
        const size_t n,
        AddKeys(absl::StrSplit(value, ','), /*comments=*/false,
                absl::StrCat("server.auth.api_keys_env: $", auth.api_keys_env), "key",
                "set it to one key or several separated by commas", &digests));
    origins.push_back(absl::StrCat(n, " from $", auth.api_keys_env));
  }
  return std::make_shared<const ApiKeys>(std::move(digests), auth.exempt_health_and_metrics,
                                         absl::StrJoin(origins, ", "));
}

std::shared_ptr<const ApiKeys> ApiKeys::FromKeys(const std::vector<std::string>& keys,
                                                 bool exempt_health_and_metrics) {
  std::vector<Digest> digests;
  for (const std::string& k : keys) digests.push_back(Sha256(k));
  return std::make_shared<const ApiKeys>(std::move(digests), exempt_health_and_metrics,
                                         absl::StrCat(keys.size(), " given in code"));
}

bool ApiKeys::Matches(absl::string_view key) const {
  // Digests have one length whatever the key's, and every digest is compared, so the
  // time taken says neither how long a key is nor which one matched.
  const Digest presented = Sha256(key);
  int differs_from_all = 1;
  for (const Digest& d : digests_) {
    differs_from_all &= CRYPTO_memcmp(presented.data(), d.data(), d.size()) != 0 ? 1 : 0;
  }
  return differs_from_all == 0;
}

absl::Status ApiKeys::Check(absl::string_view authorization, absl::string_view x_api_key) const {
  constexpr absl::string_view kBearer = "bearer ";
  const bool bearer = authorization.size() > kBearer.size() &&
                      absl::EqualsIgnoreCase(authorization.substr(0, kBearer.size()), kBearer);
  bool ok = false;
  if (bearer) ok |= Matches(absl::StripAsciiWhitespace(authorization.substr(kBearer.size())));
  if (!x_api_key.empty()) ok |= Matches(absl::StripAsciiWhitespace(x_api_key));
  if (ok) return absl::OkStatus();
  if (!bearer && x_api_key.empty()) {
    return absl::UnauthenticatedError(
        "missing API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'");
  }
  return absl::UnauthenticatedError("the API key is not valid");
}

bool ApiKeys::IsHealthOrMetricsPath(absl::string_view path) {
  return path == "/health" || path == "/metrics" || path == "/healthz";
}

bool ApiKeys::IsHealthMethod(absl::string_view grpc_method) {
  return absl::StartsWith(grpc_method, "/grpc.health.v1.Health/");
}

}  // namespace embedserve
