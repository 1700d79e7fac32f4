// TLS, mTLS and API keys end to end: an in-process EmbedServer (FakeBackend, tiny-bert
// tokenizer) on free ports, called over gRPC (grpc++ clients with and without
// certificates) and HTTP (an Asio/Beast HTTPS client and a raw plaintext one), with
// certificates openssl makes for the test (test_certs.h).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "embedserve/server/server.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "http/http_test_client.h"
#include "security/https_test_client.h"
#include "security/test_certs.h"
#include "server/server_test_util.h"
#include "test_util/fake_backend.h"
#include "test_util/grpc_callback_queue.h"

namespace embedserve {
namespace {

// Servers start and stop one after another here (grpc_callback_queue.h says why).
const bool kGrpcCallbackQueueHeld = testing::HoldGrpcCallbackQueue();

using ::testing::HasSubstr;
using ::testing::Not;
using Metadata = std::vector<std::pair<std::string, std::string>>;
using testing::Https;
using testing::HttpsResponse;
using Verb = testing::verb;

constexpr char kFileKey[] = "file-key-7c1e9a";
constexpr char kEnvKey[] = "env-key-52d0f3";
constexpr char kEnvName[] = "EMBEDSERVE_SECURITY_TEST_KEYS";

class SecureServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certs_ = new testing::TestCerts(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override { ASSERT_TRUE(certs_->ok()) << certs_->log(); }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(1'000'000);
    unsetenv(kEnvName);
  }

  static ServerConfig BaseConfig() {
    ServerConfig config;
    config.server.port = 0;
    config.server.metrics_port = 0;
    config.server.http_port = 0;
    config.batching.max_batch_tokens = 8192;
    config.model.max_seq_length = 16;
    return config;
  }
  static ServerConfig TlsConfig(bool mtls) {
    ServerConfig config = BaseConfig();
    config.server.tls.cert_file = certs_->Path("server.pem");
    config.server.tls.key_file = certs_->Path("server.key");
    if (mtls) config.server.tls.client_ca_file = certs_->Path("ca.pem");
    return config;
  }
  // Keys from a file (kFileKey) and from $kEnvName (kEnvKey).
  static void AddKeys(ServerConfig* config, bool exempt) {
    const std::string path = certs_->Path("api_keys.txt");
    std::ofstream(path) << "# test keys\n" << kFileKey << "\n";
    setenv(kEnvName, kEnvKey, 1);
    config->server.auth.api_keys_file = path;
    config->server.auth.api_keys_env = kEnvName;
    config->server.auth.exempt_health_and_metrics = exempt;
  }

  absl::Status Start(const ServerConfig& config) {
    auto tokenizer = Tokenizer::FromModelDir(testing::TinyBertDir());
    if (!tokenizer.ok()) return tokenizer.status();
    testing::FakeBackend::Options bo;
    bo.dimension = 4;
    auto server = StartServer(
        config, ServingModel(*std::move(tokenizer), std::make_unique<testing::FakeBackend>(bo)));
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    return absl::OkStatus();
  }

  // A channel to the gRPC port: plaintext when `tls` is false; else trusting ca.pem and
  // presenting `client`'s certificate ("" none).
  std::shared_ptr<grpc::Channel> Channel(bool tls, const std::string& client = "") {
    if (!tls) return grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = certs_->Read("ca.pem");
    if (!client.empty()) {
      o.pem_cert_chain = certs_->Read(client + ".pem");
      o.pem_private_key = certs_->Read(client + ".key");
    }
    // A new connection each time, so that one test's TLS session is not reused.
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::SslCredentials(o), args);
  }

  static void Prepare(grpc::ClientContext* ctx, const Metadata& metadata) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    for (const auto& [k, v] : metadata) ctx->AddMetadata(k, v);
  }
  static grpc::Status Embed(const std::shared_ptr<grpc::Channel>& channel,
                            const Metadata& metadata = {}) {
    auto stub = v1::EmbeddingService::NewStub(channel);
    grpc::ClientContext ctx;
    Prepare(&ctx, metadata);
    v1::EmbedRequest request;
    request.add_texts("hello world");
    v1::EmbedResponse response;
    grpc::Status s = stub->Embed(&ctx, request, &response);
    if (s.ok() && response.embeddings_size() != 1) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "no embedding in the reply");
    }
    return s;
  }
  static grpc::Status Health(const std::shared_ptr<grpc::Channel>& channel,
                             const Metadata& metadata = {}) {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    Prepare(&ctx, metadata);
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status s = stub->Check(&ctx, request, &response);
    if (s.ok() && response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "not SERVING");
    }
    return s;
  }

  // grpc.reflection.v1alpha's ServerReflectionInfo asked to list the services; `listed`
  // gets the raw reply bytes. There are no C++ stubs of reflection.proto here, so the
  // one request is its wire form: ServerReflectionRequest{list_services: ""} is field 7
  // (length-delimited, tag 0x3a) of length 0.
  static grpc::Status ListServices(const std::shared_ptr<grpc::Channel>& channel,
                                   const Metadata& metadata, std::string* listed) {
    grpc::GenericStub stub(channel);
    grpc::ClientContext ctx;
    Prepare(&ctx, metadata);
    grpc::CompletionQueue cq;
    auto call = stub.PrepareCall(
        &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    void* tag = nullptr;
    bool ok = false;
    auto step = [&](int expected) {
      // Every operation ends by the context's 10 s deadline at the latest.
      return cq.Next(&tag, &ok) && tag == reinterpret_cast<void*>(expected) && ok;
    };
    call->StartCall(reinterpret_cast<void*>(1));
    if (step(1)) {
      const std::string request("\x3a\x00", 2);
      grpc::Slice slice(request);
      call->Write(grpc::ByteBuffer(&slice, 1), reinterpret_cast<void*>(2));
      if (step(2)) {
        call->WritesDone(reinterpret_cast<void*>(3));
        if (step(3)) {
          grpc::ByteBuffer reply;
          call->Read(&reply, reinterpret_cast<void*>(4));
          if (step(4)) {
            std::vector<grpc::Slice> slices;
            (void)reply.Dump(&slices);
            for (const auto& sl : slices) listed->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
          }
        }
      }
    }
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
    }
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    return status;
  }

  static testing::TestCerts* certs_;
  std::unique_ptr<EmbedServer> server_;
};

testing::TestCerts* SecureServerTest::certs_ = nullptr;

constexpr char kEmbedBody[] = R"({"inputs": ["hello world"]})";

TEST_F(SecureServerTest, TlsServesGrpcAndHttpAndRefusesPlaintextClients) {
  ASSERT_TRUE(Start(TlsConfig(/*mtls=*/false)).ok());
  const grpc::Status tls_call = Embed(Channel(true));
  EXPECT_TRUE(tls_call.ok()) << tls_call.error_message();
  EXPECT_TRUE(Health(Channel(true)).ok());
  // A plaintext client gets no service from a TLS port.
  const grpc::Status plain_call = Embed(Channel(false));
  EXPECT_EQ(plain_call.error_code(), grpc::StatusCode::UNAVAILABLE) << plain_call.error_message();

  HttpsResponse r = Https(*certs_, server_->http_port(), "", Verb::post, "/embed", {}, kEmbedBody);
  EXPECT_EQ(r.status, 200) << r.error << r.body;
  r = Https(*certs_, server_->http_port(), "", Verb::get, "/health");
  EXPECT_EQ(r.status, 200) << r.error;
  // The metrics port speaks TLS too.
  r = Https(*certs_, server_->metrics_port(), "", Verb::get, "/metrics");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_THAT(r.body, HasSubstr("embedserve_"));
  for (int port : {server_->http_port(), server_->metrics_port()}) {
    testing::RawClient plain(port);
    ASSERT_TRUE(plain.connected());
    EXPECT_EQ(plain.Request("GET", "/health").status, 0) << "plaintext answered on " << port;
  }
}

TEST_F(SecureServerTest, MtlsServesOnlyClientsWithACertificateFromTheClientCa) {
  ASSERT_TRUE(Start(TlsConfig(/*mtls=*/true)).ok());
  const grpc::Status good = Embed(Channel(true, "client"));
  EXPECT_TRUE(good.ok()) << good.error_message();
  const grpc::Status none = Embed(Channel(true, ""));
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAVAILABLE) << none.error_message();
  const grpc::Status foreign = Embed(Channel(true, "other-client"));
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::UNAVAILABLE) << foreign.error_message();
  EXPECT_EQ(Health(Channel(true, "")).error_code(), grpc::StatusCode::UNAVAILABLE);

  for (int port : {server_->http_port(), server_->metrics_port()}) {
    const std::string path = port == server_->http_port() ? "/health" : "/metrics";
    HttpsResponse r = Https(*certs_, port, "client", Verb::get, path);
    EXPECT_EQ(r.status, 200) << port << ": " << r.error;
    r = Https(*certs_, port, "", Verb::get, path);
    EXPECT_EQ(r.status, 0) << port << ": answered without a client certificate";
    r = Https(*certs_, port, "other-client", Verb::get, path);
    EXPECT_EQ(r.status, 0) << port << ": answered a certificate of another CA";
  }
  HttpsResponse r = Https(*certs_, server_->http_port(), "client", Verb::post, "/embed", {},
                          kEmbedBody);
  EXPECT_EQ(r.status, 200) << r.error << r.body;
}

// On both ways of taking calls (server.grpc_queues 0 and 2): the key check is the
// transport's, before any method runs.
TEST_F(SecureServerTest, GrpcNeedsAKeyInEitherHeaderButHealthIsExempt) {
  for (int queues : {0, 2}) {
    SCOPED_TRACE(::testing::Message() << "server.grpc_queues " << queues);
    ServerConfig config = BaseConfig();
    config.server.grpc_queues = queues;
    AddKeys(&config, /*exempt=*/true);
    ASSERT_TRUE(Start(config).ok());
    auto channel = Channel(false);
    grpc::Status s = Embed(channel);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(s.error_message(), HasSubstr("missing API key"));
    s = Embed(channel, {{"authorization", "Bearer not-a-key"}});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(s.error_message(), Not(HasSubstr("not-a-key")));
    EXPECT_EQ(Embed(channel, {{"x-api-key", std::string(kFileKey) + "x"}}).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    s = Embed(channel, {{"authorization", std::string("Bearer ") + kFileKey}});
    EXPECT_TRUE(s.ok()) << s.error_message();
    s = Embed(channel, {{"x-api-key", kEnvKey}});
    EXPECT_TRUE(s.ok()) << s.error_message();
    // Every method of the service is guarded, not only Embed.
    {
      auto stub = v1::EmbeddingService::NewStub(channel);
      grpc::ClientContext ctx;
      Prepare(&ctx, {});
      v1::ModelInfo info;
      EXPECT_EQ(stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
    }
    {
      auto stub = v1::EmbeddingService::NewStub(channel);
      grpc::ClientContext ctx;
      Prepare(&ctx, {});
      auto stream = stub->EmbedStream(&ctx);
      v1::EmbedRequest request;
      request.add_texts("x");
      stream->Write(request);
      stream->WritesDone();
      v1::EmbedResponse reply;
      EXPECT_FALSE(stream->Read(&reply));
      EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
    const grpc::Status health = Health(channel);
    EXPECT_TRUE(health.ok()) << health.error_message();
    server_->Shutdown(1'000'000);
    server_.reset();
  }
}

TEST_F(SecureServerTest, ReflectionAnswersOnceTheKeyIsAccepted) {
  ServerConfig config = TlsConfig(/*mtls=*/false);
  AddKeys(&config, /*exempt=*/true);
  ASSERT_TRUE(Start(config).ok());
  std::string listed;
  grpc::Status s = ListServices(Channel(true), {}, &listed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(listed, "");
  s = ListServices(Channel(true), {{"authorization", std::string("Bearer ") + kFileKey}}, &listed);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(listed, HasSubstr("embedserve.v1.EmbeddingService"));
}

TEST_F(SecureServerTest, NotExemptHealthAndMetricsNeedAKeyOnEveryPort) {
  ServerConfig config = BaseConfig();
  AddKeys(&config, /*exempt=*/false);
  ASSERT_TRUE(Start(config).ok());
  auto channel = Channel(false);
  EXPECT_EQ(Health(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const grpc::Status health = Health(channel, {{"x-api-key", kFileKey}});
  EXPECT_TRUE(health.ok()) << health.error_message();

  testing::RawClient c(server_->http_port());
  EXPECT_EQ(c.Request("GET", "/health").status, 401);
  EXPECT_EQ(c.Request("GET", "/metrics").status, 401);
  EXPECT_EQ(c.Request("GET", "/health", "", std::string("x-api-key: ") + kEnvKey + "\r\n").status, 200);
  testing::RawClient m(server_->metrics_port());
  EXPECT_EQ(m.Request("GET", "/metrics").status, 401);
  EXPECT_EQ(m.Request("GET", "/metrics", "", std::string("Authorization: Bearer ") + kFileKey + "\r\n").status,
            200);
}

TEST_F(SecureServerTest, HttpNeedsAKeyButHealthAndMetricsAreExemptByDefault) {
  ServerConfig config = BaseConfig();
  AddKeys(&config, /*exempt=*/true);
  ASSERT_TRUE(Start(config).ok());
  testing::RawClient c(server_->http_port());
  testing::RawResponse r = c.Request("POST", "/v1/embeddings", R"({"input": "x"})");
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("authentication_error"));
  r = c.Request("POST", "/embed", kEmbedBody, "x-api-key: wrong\r\n");
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("\"error_type\":\"unauthorized\""));
  EXPECT_EQ(c.Request("POST", "/v1/embeddings", R"({"input": "x"})",
                      std::string("Authorization: Bearer ") + kEnvKey + "\r\n").status, 200);
  EXPECT_EQ(c.Request("POST", "/embed", kEmbedBody, std::string("X-Api-Key: ") + kFileKey + "\r\n").status,
            200);
  EXPECT_EQ(c.Request("GET", "/health").status, 200);
  EXPECT_EQ(c.Request("GET", "/metrics").status, 200);
  testing::RawClient m(server_->metrics_port());
  EXPECT_EQ(m.Request("GET", "/metrics").status, 200);
}

TEST_F(SecureServerTest, MtlsAndKeysTogetherNeedBoth) {
  ServerConfig config = TlsConfig(/*mtls=*/true);
  AddKeys(&config, /*exempt=*/true);
  ASSERT_TRUE(Start(config).ok());
  auto channel = Channel(true, "client");
  EXPECT_EQ(Embed(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const grpc::Status s = Embed(channel, {{"x-api-key", kFileKey}});
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Embed(Channel(true, "other-client"), {{"x-api-key", kFileKey}}).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  HttpsResponse r = Https(*certs_, server_->http_port(), "client", Verb::post, "/embed", {},
                          kEmbedBody);
  EXPECT_EQ(r.status, 401) << r.error;
  r = Https(*certs_, server_->http_port(), "client", Verb::post, "/embed",
            {{"authorization", std::string("Bearer ") + kEnvKey}}, kEmbedBody);
  EXPECT_EQ(r.status, 200) << r.error << r.body;
}

TEST_F(SecureServerTest, KeysNeverReachTheLog) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  spdlog::set_level(spdlog::level::trace);
  ServerConfig config = BaseConfig();
  config.logging.log_requests = true;
  config.logging.level = "trace";
  AddKeys(&config, /*exempt=*/false);
  ASSERT_TRUE(Start(config).ok());
  auto channel = Channel(false);
  EXPECT_TRUE(Embed(channel, {{"x-api-key", kFileKey}}).ok());
  EXPECT_TRUE(Embed(channel, {{"authorization", std::string("Bearer ") + kEnvKey}}).ok());
  EXPECT_FALSE(Embed(channel, {{"x-api-key", "wrong-key-31337"}}).ok());
  testing::RawClient c(server_->http_port());
  EXPECT_EQ(c.Request("POST", "/embed", kEmbedBody, std::string("x-api-key: ") + kFileKey + "\r\n").status, 200);
  EXPECT_EQ(c.Request("POST", "/embed", kEmbedBody, "x-api-key: wrong-key-31337\r\n").status, 401);
  server_->Shutdown(1'000'000);
  server_.reset();
  spdlog::set_default_logger(previous);
  const std::string text = log.str();
  // The security line names where keys come from (so the log was captured) ...
  EXPECT_THAT(text, HasSubstr("API keys: 1 from " + config.server.auth.api_keys_file +
                              ", 1 from $" + kEnvName));
  // ... and no key, good or bad, is ever written.
  EXPECT_THAT(text, Not(HasSubstr(kFileKey)));
  EXPECT_THAT(text, Not(HasSubstr(kEnvKey)));
  EXPECT_THAT(text, Not(HasSubstr("wrong-key-31337")));
}

TEST_F(SecureServerTest, StartStopsOnUnreadableSecurityFilesBeforeListening) {
  ServerConfig config = TlsConfig(/*mtls=*/true);
  config.server.tls.client_ca_file = certs_->Path("missing-ca.pem");
  absl::Status s = Start(config);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("server.tls.client_ca_file " + certs_->Path("missing-ca.pem") +
                                     " cannot be read"));
  config = BaseConfig();
  config.server.auth.api_keys_env = "EMBEDSERVE_SECURITY_TEST_UNSET";
  s = Start(config);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("$EMBEDSERVE_SECURITY_TEST_UNSET, which is not set"));
}

}  // namespace
}  // namespace embedserve
