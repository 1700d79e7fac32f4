// The PEM files of server.tls, read and checked once at start: the gRPC credentials
// (grpc_credentials.h) and the HTTP server (src/http/) are built from the same bytes.
// Thread-safe: a pure function.
#ifndef EMBEDSERVE_SECURITY_TLS_FILES_H_
#define EMBEDSERVE_SECURITY_TLS_FILES_H_

#include <string>

#include "absl/status/statusor.h"
#include "embedserve/config/server_config.h"

namespace embedserve {

struct TlsMaterial {
  std::string cert_chain_pem;   // the server's certificate, then any intermediates
  std::string private_key_pem;  // its key
  std::string client_ca_pem;    // "" : no client certificate asked; else mTLS
};

// Reads server.tls's files (call only when tls.enabled()). NOT_FOUND when a file cannot
// be read; INVALID_ARGUMENT when a file holds no PEM certificate (or key), or the key
// does not belong to the certificate. Messages name the config key and the file; they
// never quote a key's bytes.
absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsSection& tls);

}  // namespace embedserve

#endif  // EMBEDSERVE_SECURITY_TLS_FILES_H_
