// The gRPC server's credentials from server.tls and server.auth: TLS (or plaintext),
// mTLS, and the API-key check (api_keys.h) run by gRPC's auth filter on every call
// before it reaches any service (EmbeddingService, reflection; health too unless
// exempt). A refused call ends UNAUTHENTICATED; the key metadata is consumed there, so
// handlers never see it.
// Thread-safe: a pure function; the credentials are immutable.
#ifndef EMBEDSERVE_SECURITY_GRPC_CREDENTIALS_H_
#define EMBEDSERVE_SECURITY_GRPC_CREDENTIALS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>

#include "security/api_keys.h"
#include "security/tls_files.h"

namespace embedserve {

// `tls` null: plaintext; else TLS with its certificate, and mTLS (client certificate
// required and verified against client_ca_pem) when client_ca_pem is set. `api_keys`
// null: no key needed.
std::shared_ptr<grpc::ServerCredentials> MakeGrpcServerCredentials(
    const TlsMaterial* tls, std::shared_ptr<const ApiKeys> api_keys);

}  // namespace embedserve

#endif  // EMBEDSERVE_SECURITY_GRPC_CREDENTIALS_H_
