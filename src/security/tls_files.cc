#include "security/tls_files.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "embedserve/common/status_macros.h"

namespace embedserve {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

absl::StatusOr<std::string> ReadFile(absl::string_view field, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(field, " ", path, " cannot be read: ", std::strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate in `pem`, or null.
std::unique_ptr<X509, X509Free> FirstCertificate(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return cert;
}

}  // namespace

absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsSection& tls) {
  TlsMaterial m;
  ES_ASSIGN_OR_RETURN(m.cert_chain_pem, ReadFile("server.tls.cert_file", tls.cert_file));
  ES_ASSIGN_OR_RETURN(m.private_key_pem, ReadFile("server.tls.key_file", tls.key_file));
  auto cert = FirstCertificate(m.cert_chain_pem);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.tls.cert_file ", tls.cert_file,
        " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  Bio key_bio = MemoryBio(m.private_key_pem);
  // A passphrase callback that gives none: an encrypted key fails instead of prompting.
  pem_password_cb* no_passphrase = [](char*, int, int, void*) { return 0; };
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_passphrase, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.tls.key_file ", tls.key_file,
        " holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "server.tls.key_file ", tls.key_file, " is not the key of the certificate in server.tls.cert_file ",
        tls.cert_file));
  }
  if (!tls.client_ca_file.empty()) {
    ES_ASSIGN_OR_RETURN(m.client_ca_pem,
                        ReadFile("server.tls.client_ca_file", tls.client_ca_file));
    if (FirstCertificate(m.client_ca_pem) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "server.tls.client_ca_file ", tls.client_ca_file,
          " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
  }
  return m;
}

}  // namespace embedserve
