// ApiKeys (src/security/api_keys.h): where keys come from, the two header forms, what a
// refusal says (never a key), and the exemption rules; LoadTlsMaterial's checks of the
// PEM files (certificates made by openssl in a temporary folder).
#include "security/api_keys.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "security/test_certs.h"
#include "security/tls_files.h"

namespace embedserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A fake environment for ApiKeys::Load.
ApiKeys::GetEnv EnvOf(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

class ApiKeysTest : public ::testing::Test {
 protected:
  std::string WriteKeys(const std::string& text) {
    const std::string path = ::testing::TempDir() + "/api_keys_test_keys.txt";
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
};

TEST_F(ApiKeysTest, NoSourceMeansNoAuthentication) {
  auto keys = ApiKeys::Load(AuthSection(), EnvOf({}));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, nullptr);
}

TEST_F(ApiKeysTest, ReadsKeysFromFileAndEnvironment) {
  AuthSection auth;
  auth.api_keys_file = WriteKeys("# rotated monthly\nfile-key-1\n\n  file-key-2  \r\n");
  auth.api_keys_env = "TEST_KEYS";
  auto keys = ApiKeys::Load(auth, EnvOf({{"TEST_KEYS", "env-key-1, env-key-2"}}));
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_NE(*keys, nullptr);
  EXPECT_EQ((*keys)->size(), 4u);
  EXPECT_EQ((*keys)->origin(), "2 from " + auth.api_keys_file + ", 2 from $TEST_KEYS");
  for (const char* k : {"file-key-1", "file-key-2", "env-key-1", "env-key-2"}) {
    EXPECT_TRUE((*keys)->Check(std::string("Bearer ") + k, "").ok()) << k;
    EXPECT_TRUE((*keys)->Check("", k).ok()) << k;
  }
  EXPECT_FALSE((*keys)->Check("Bearer # rotated monthly", "").ok());
  EXPECT_FALSE((*keys)->Check("", "file-key-").ok());
  EXPECT_FALSE((*keys)->Check("", "env-key-1, env-key-2").ok());
}

TEST_F(ApiKeysTest, LoadErrorsNameTheSourceAndNeverTheKey) {
  AuthSection missing;
  missing.api_keys_file = "/nonexistent/keys.txt";
  auto keys = ApiKeys::Load(missing, EnvOf({}));
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(keys.status().message(),
              HasSubstr("server.auth.api_keys_file /nonexistent/keys.txt cannot be read"));

  AuthSection empty;
  empty.api_keys_file = WriteKeys("# nothing yet\n\n");
  keys = ApiKeys::Load(empty, EnvOf({}));
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(), HasSubstr("holds no key"));

  AuthSection spaced;
  spaced.api_keys_file = WriteKeys("good-key\nsecret with space\n");
  keys = ApiKeys::Load(spaced, EnvOf({}));
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(keys.status().message(), Not(HasSubstr("secret")));

  AuthSection env;
  env.api_keys_env = "UNSET_VAR";
  keys = ApiKeys::Load(env, EnvOf({}));
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(keys.status().message(), HasSubstr("$UNSET_VAR, which is not set"));
  keys = ApiKeys::Load(env, EnvOf({{"UNSET_VAR", " , "}}));
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(), HasSubstr("holds no key"));
  keys = ApiKeys::Load(env, EnvOf({{"UNSET_VAR", "bad\tsecret-value"}}));
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(), Not(HasSubstr("secret-value")));
}

TEST_F(ApiKeysTest, CheckAcceptsBothHeaderFormsAndSaysWhatToSend) {
  auto keys = ApiKeys::FromKeys({"k-123"}, /*exempt_health_and_metrics=*/true);
  EXPECT_TRUE(keys->Check("Bearer k-123", "").ok());
  EXPECT_TRUE(keys->Check("bearer k-123", "").ok());  // the scheme is case-insensitive
  EXPECT_TRUE(keys->Check("", "k-123").ok());
  EXPECT_TRUE(keys->Check("Bearer wrong", "k-123").ok());  // one valid form is enough

  absl::Status missing = keys->Check("", "");
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(missing.message(), HasSubstr("'authorization: Bearer <key>' or 'x-api-key: <key>'"));
  EXPECT_EQ(keys->Check("Basic azoxMjM=", "").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys->Check("k-123", "").code(), absl::StatusCode::kUnauthenticated);  // no scheme
  absl::Status wrong = keys->Check("Bearer k-1234", "k-12");
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(wrong.message(), HasSubstr("not valid"));
  EXPECT_THAT(wrong.message(), Not(HasSubstr("k-12")));
}

TEST_F(ApiKeysTest, ExemptPathsAndMethodsAreHealthAndMetricsOnly) {
  EXPECT_TRUE(ApiKeys::IsHealthOrMetricsPath("/health"));
  EXPECT_TRUE(ApiKeys::IsHealthOrMetricsPath("/metrics"));
  EXPECT_TRUE(ApiKeys::IsHealthOrMetricsPath("/healthz"));
  EXPECT_FALSE(ApiKeys::IsHealthOrMetricsPath("/info"));
  EXPECT_FALSE(ApiKeys::IsHealthOrMetricsPath("/health/x"));
  EXPECT_TRUE(ApiKeys::IsHealthMethod("/grpc.health.v1.Health/Check"));
  EXPECT_TRUE(ApiKeys::IsHealthMethod("/grpc.health.v1.Health/Watch"));
  EXPECT_FALSE(ApiKeys::IsHealthMethod("/embedserve.v1.EmbeddingService/Embed"));
  EXPECT_FALSE(ApiKeys::IsHealthMethod("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
}

TEST(TlsFilesTest, ReadsMatchingCertificateAndKey) {
  testing::TestCerts certs;
  ASSERT_TRUE(certs.ok()) << certs.log();
  TlsSection tls;
  tls.cert_file = certs.Path("server.pem");
  tls.key_file = certs.Path("server.key");
  tls.client_ca_file = certs.Path("ca.pem");
  auto m = LoadTlsMaterial(tls);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->cert_chain_pem, certs.Read("server.pem"));
  EXPECT_EQ(m->private_key_pem, certs.Read("server.key"));
  EXPECT_EQ(m->client_ca_pem, certs.Read("ca.pem"));
}

TEST(TlsFilesTest, ErrorsNameTheKeyAndTheFile) {
  testing::TestCerts certs;
  ASSERT_TRUE(certs.ok()) << certs.log();
  struct Case {
    TlsSection tls;
    absl::StatusCode code;
    std::string message;
  };
  const std::string server = certs.Path("server.pem"), key = certs.Path("server.key");
  for (const Case& c : std::vector<Case>{
           {{"/nonexistent/s.pem", key, ""}, absl::StatusCode::kNotFound,
            "server.tls.cert_file /nonexistent/s.pem cannot be read: No such file"},
           {{server, "/nonexistent/s.key", ""}, absl::StatusCode::kNotFound,
            "server.tls.key_file /nonexistent/s.key cannot be read"},
           {{server, key, "/nonexistent/ca.pem"}, absl::StatusCode::kNotFound,
            "server.tls.client_ca_file /nonexistent/ca.pem cannot be read"},
           {{key, key, ""}, absl::StatusCode::kInvalidArgument,
            "server.tls.cert_file " + key + " holds no PEM certificate"},
           {{server, server, ""}, absl::StatusCode::kInvalidArgument,
            "server.tls.key_file " + server + " holds no unencrypted PEM private key"},
           {{server, certs.Path("client.key"), ""}, absl::StatusCode::kInvalidArgument,
            "is not the key of the certificate in server.tls.cert_file"},
           {{server, key, key}, absl::StatusCode::kInvalidArgument,
            "server.tls.client_ca_file " + key + " holds no PEM certificate"},
       }) {
    auto m = LoadTlsMaterial(c.tls);
    EXPECT_EQ(m.status().code(), c.code) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr(c.message));
    // A key file's bytes never appear in a message.
    EXPECT_THAT(m.status().message(), Not(HasSubstr("PRIVATE KEY-----\n")));
  }
}

}  // namespace
}  // namespace embedserve
