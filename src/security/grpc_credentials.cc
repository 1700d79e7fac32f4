#include "security/grpc_credentials.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace embedserve {
namespace {

absl::string_view View(const grpc_slice& s) {
  return absl::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(s)),
                           GRPC_SLICE_LENGTH(s));
}

// grpc_auth_metadata_processor.process: runs the API-key check on the call's initial
// metadata (which also holds ":path", the method). Non-blocking: answers at once.
void Process(void* state, grpc_auth_context* /*context*/, const grpc_metadata* md,
             size_t num_md, grpc_process_auth_metadata_done_cb done, void* user_data) {
  const ApiKeys& keys = **static_cast<std::shared_ptr<const ApiKeys>*>(state);
  absl::string_view method, authorization, x_api_key;
  const grpc_metadata* consumed[2];
  size_t num_consumed = 0;
  for (size_t i = 0; i < num_md; ++i) {
    const absl::string_view key = View(md[i].key);
    if (key == ":path") {
      method = View(md[i].value);
    } else if (key == "authorization") {
      authorization = View(md[i].value);
      if (num_consumed < 2) consumed[num_consumed++] = &md[i];
    } else if (key == "x-api-key") {
      x_api_key = View(md[i].value);
      if (num_consumed < 2) consumed[num_consumed++] = &md[i];
    }
  }
  if (keys.exempt_health_and_metrics() && ApiKeys::IsHealthMethod(method)) {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  const absl::Status status = keys.Check(authorization, x_api_key);
  if (!status.ok()) {
    const std::string message(status.message());
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED, message.c_str());
    return;
  }
  // The key leaves the call here: no handler (or log line) downstream can see it.
  grpc_metadata to_consume[2];
  for (size_t i = 0; i < num_consumed; ++i) to_consume[i] = *consumed[i];
  done(user_data, to_consume, num_consumed, nullptr, 0, GRPC_STATUS_OK, nullptr);
}

// grpc::ServerCredentials built on gRPC's C API. The C++ InsecureServerCredentials()
// refuses an AuthMetadataProcessor, while the core's insecure credentials take one; this
// gives plaintext and TLS ports the same API-key check. (gRPC 1.51, Debian 12: the
// C++ class binds a port through the virtual AddPortToServer.)
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  CoreServerCredentials(const TlsMaterial* tls, std::shared_ptr<const ApiKeys> api_keys)
      : api_keys_(std::move(api_keys)) {
    if (tls != nullptr) tls_ = *tls;
    tls_enabled_ = tls != nullptr;
  }

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/) override {
    // Not used: the API-key check is the processor (set in AddPortToServer).
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    grpc_server_credentials* creds = nullptr;
    if (tls_enabled_) {
      grpc_ssl_pem_key_cert_pair pair{tls_.private_key_pem.c_str(), tls_.cert_chain_pem.c_str()};
      const bool mtls = !tls_.client_ca_pem.empty();
      creds = grpc_ssl_server_credentials_create_ex(
          mtls ? tls_.client_ca_pem.c_str() : nullptr, &pair, 1,
          mtls ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
          nullptr);
    } else {
      creds = grpc_insecure_server_credentials_create();
    }
    if (creds == nullptr) return 0;
    if (api_keys_ != nullptr) {
      grpc_auth_metadata_processor processor{};
      processor.process = &Process;
      processor.destroy = [](void* state) {
        delete static_cast<std::shared_ptr<const ApiKeys>*>(state);
      };
      processor.state = new std::shared_ptr<const ApiKeys>(api_keys_);
      grpc_server_credentials_set_auth_metadata_processor(creds, processor);
    }
    const int port = grpc_server_add_http2_port(server, addr.c_str(), creds);
    grpc_server_credentials_release(creds);
    return port;
  }

  TlsMaterial tls_;
  bool tls_enabled_ = false;
  const std::shared_ptr<const ApiKeys> api_keys_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> MakeGrpcServerCredentials(
    const TlsMaterial* tls, std::shared_ptr<const ApiKeys> api_keys) {
  return std::make_shared<CoreServerCredentials>(tls, std::move(api_keys));
}

}  // namespace embedserve
