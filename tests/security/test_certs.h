// Certificates for the TLS tests, made by the openssl CLI in a fresh temporary folder:
// a CA, a server certificate for localhost / 127.0.0.1 (subjectAltName) signed by it, a
// client certificate signed by it, and a client certificate signed by another CA.
// Test-only; not thread-safe (one TestCerts per test process).
#ifndef EMBEDSERVE_TESTS_SECURITY_TEST_CERTS_H_
#define EMBEDSERVE_TESTS_SECURITY_TEST_CERTS_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace embedserve {
namespace testing {

class TestCerts {
 public:
  // Makes the files; ok() says whether every openssl command succeeded (log: log()).
  TestCerts() {
    char tmpl[] = "/tmp/embedserve-certs-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string d = "'" + dir_ + "'";
    const std::string script =
        "set -e; cd " + d + "\n" +
        "openssl req -x509 " + key + " -keyout ca.key -out ca.pem -days 2 -subj /CN=embedserve-test-ca\n" +
        "openssl req -x509 " + key + " -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca\n" +
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext\n" +
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n" +
        "openssl req " + key + " -keyout server.key -out server.csr -subj /CN=localhost\n" +
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem\n" +
        "openssl req " + key + " -keyout client.key -out client.csr -subj /CN=client\n" +
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem\n" +
        "openssl req " + key + " -keyout other-client.key -out other-client.csr -subj /CN=other-client\n" +
        "openssl x509 -req -in other-client.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 2 -extfile client.ext -out other-client.pem\n";
    std::ofstream(dir_ + "/make.sh") << script;
    ok_ = std::system(("sh " + d + "/make.sh > " + d + "/make.log 2>&1").c_str()) == 0;
  }
  ~TestCerts() {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;

  bool ok() const { return ok_; }
  std::string log() const { return Read("make.log"); }
  // The path of a file the script made: ca.pem, server.pem, server.key, client.pem,
  // client.key, other-ca.pem, other-client.pem, other-client.key.
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Read(const std::string& name) const {
    std::ifstream in(Path(name), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool ok_ = false;
};

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_SECURITY_TEST_CERTS_H_
