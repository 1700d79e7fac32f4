// The HTTP front door over real sockets: HttpServer + HttpFrontDoor + EmbeddingPipeline
// in front of a Batcher and FakeBackend (rows say which tokens made them). Bad input of
// every kind gets its precise status while the server and its other clients carry on.
// Waits are bounded reads (10 s receive timeout), never sleeps.
#include "http/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "embedserve/batching/batcher.h"
#include "embedserve/server/metrics.h"
#include "embedserve/tokenizer/tokenizer.h"
#include "http/http_front_door.h"
#include "http/http_test_client.h"
#include "pipeline/embedding_pipeline.h"
#include "security/https_test_client.h"
#include "security/test_certs.h"
#include "test_util/fake_backend.h"

namespace embedserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::FakeBackend;
using testing::RawClient;
using testing::RawResponse;
using nlohmann::json;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::FromModelDir(EMBEDSERVE_TEST_DATA_DIR "/tiny-bert");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = *std::move(tok);
    backend_ = std::make_unique<FakeBackend>();
    auto batcher = Batcher::Create(Batcher::Options(), backend_.get(), &metrics_);
    ASSERT_TRUE(batcher.ok());
    batcher_ = *std::move(batcher);
    EmbeddingPipeline::Options po;
    po.max_texts_per_request = 8;
    auto pipeline = EmbeddingPipeline::Create(po, &metrics_);
    ASSERT_TRUE(pipeline.ok());
    pipeline_ = *std::move(pipeline);
    ASSERT_TRUE(pipeline_->AttachModel(tokenizer_.get(), backend_.get(), batcher_.get()).ok());
    pipeline_->SetServing(true);
    front_ = std::make_unique<HttpFrontDoor>(HttpFrontDoor::Options(), pipeline_.get(), &metrics_);
    metrics_handler_ = std::make_unique<MetricsHandler>(&metrics_, nullptr);
    HttpServer::Options ho;
    ho.threads = 2;
    ho.max_body_bytes = 4096;
    ho.max_header_bytes = 8192;
    ho.header_timeout_ms = 300;
    auto server = HttpServer::Start(ho, {{0, front_.get()}, {0, metrics_handler_.get()}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    port_ = server_->port(0);
  }

  void TearDown() override {
    if (batcher_) batcher_->Shutdown(0);
    if (server_) server_->Stop();
  }

  // The server still answers a fresh client.
  void ExpectAlive() {
    RawClient c(port_);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(c.Request("GET", "/health").status, 200);
  }

  ServerMetrics metrics_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<EmbeddingPipeline> pipeline_;
  std::unique_ptr<HttpFrontDoor> front_;
  std::unique_ptr<MetricsHandler> metrics_handler_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HttpServerTest, OpenAiEmbeddingsAnswersTheOpenAiShape) {
  RawClient c(port_);
  const RawResponse r = c.Request(
      "POST", "/v1/embeddings", R"({"input": ["hello world", "hi"], "model": "fake"})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["model"], "fake");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1]["object"], "embedding");
  EXPECT_EQ(j["data"][1]["index"], 1);
  const TokenIds ids = tokenizer_->Encode("hello world", 512)->ids;
  const std::vector<float> want = FakeBackend::Encode(ids, 4);  // not normalised: no 2_Normalize
  EXPECT_EQ(j["data"][0]["embedding"].get<std::vector<float>>(), want);
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(j["usage"]["prompt_tokens"], j["usage"]["total_tokens"]);
}

TEST_F(HttpServerTest, OpenAiRefusesOtherModelsAndDimensions) {
  RawClient c(port_);
  RawResponse r = c.Request("POST", "/v1/embeddings", R"({"input": "x", "model": "gpt-9"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "model_not_found");
  r = c.Request("POST", "/v1/embeddings", R"({"input": "x", "dimensions": 3})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("dimensions must equal the model's 4"));
  r = c.Request("POST", "/v1/embeddings", R"({"input": "x", "dimensions": 4})");
  EXPECT_EQ(r.status, 200);
}

TEST_F(HttpServerTest, MalformedJsonIs400AndTheConnectionStaysUsable) {
  RawClient c(port_);
  RawResponse r = c.Request("POST", "/v1/embeddings", "{\"input\": [\"a\",");
  EXPECT_EQ(r.status, 400);
  const json err = json::parse(r.body)["error"];
  EXPECT_THAT(err["message"].get<std::string>(), HasSubstr("not valid JSON"));
  EXPECT_EQ(err["type"], "invalid_request_error");
  EXPECT_EQ(c.Request("GET", "/health").status, 200);  // same connection, keep-alive
  // Counted by route and status.
  EXPECT_EQ(metrics_.http_requests(HttpRoute::kOpenAiEmbeddings, 400), 1u);
  EXPECT_EQ(metrics_.http_requests(HttpRoute::kHealth, 200), 1u);
  EXPECT_THAT(metrics_.RenderPrometheus(),
              HasSubstr("embedserve_http_requests_total{route=\"/v1/embeddings\",status=\"400\"} 1"));
}

TEST_F(HttpServerTest, WrongTypesNameTheKey) {
  RawClient c(port_);
  RawResponse r = c.Request("POST", "/v1/embeddings", R"({"input": 5})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("input must be a string, an array of strings"));
  r = c.Request("POST", "/embed", R"({"inputs": ["ok", 7]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("inputs[1] must be a string; was a number"));
  r = c.Request("POST", "/embed", R"({"inputs": "ok", "normalize": "yes"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("normalize must be true or false"));
  r = c.Request("POST", "/similarity", R"({"inputs": {"source_sentence": "a"}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("inputs.sentences is required"));
  r = c.Request("POST", "/embed", R"({"inputs": []})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("inputs must hold at least one entry"));
}

TEST_F(HttpServerTest, TeiEmbedSimilarityTokenizeInfo) {
  RawClient c(port_);
  RawResponse r = c.Request("POST", "/embed", R"({"inputs": "hello world", "normalize": false})");
  ASSERT_EQ(r.status, 200) << r.body;
  const TokenIds ids = tokenizer_->Encode("hello world", 512)->ids;
  EXPECT_EQ(json::parse(r.body), json(std::vector<std::vector<float>>{FakeBackend::Encode(ids, 4)}));
  r = c.Request("POST", "/similarity",
                R"({"inputs": {"source_sentence": "a cat", "sentences": ["a cat", "a dog"]}})");
  ASSERT_EQ(r.status, 200) << r.body;
  const auto scores = json::parse(r.body).get<std::vector<float>>();
  ASSERT_EQ(scores.size(), 2u);
  EXPECT_NEAR(scores[0], 1.0, 1e-6);  // a text with itself
  r = c.Request("POST", "/tokenize", R"({"inputs": ["hello world"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json tokens = json::parse(r.body);
  ASSERT_EQ(tokens[0].size(), ids.size());
  EXPECT_EQ(tokens[0][0]["id"], ids[0]);
  EXPECT_EQ(tokens[0][0]["special"], true);
  r = c.Request("GET", "/info");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["max_client_batch_size"], 8);
}

TEST_F(HttpServerTest, HealthIs503WhileNotServing) {
  pipeline_->SetServing(false);
  RawClient c(port_);
  EXPECT_EQ(c.Request("GET", "/health").status, 503);
  EXPECT_EQ(c.Request("POST", "/v1/embeddings", R"({"input": "x"})").status, 503);
  pipeline_->SetServing(true);
  EXPECT_EQ(c.Request("GET", "/health").status, 200);
}

TEST_F(HttpServerTest, UnknownPathIs404AndWrongMethod405) {
  RawClient c(port_);
  EXPECT_EQ(c.Request("GET", "/v2/nothing").status, 404);
  EXPECT_EQ(c.Request("GET", "/v1/embeddings").status, 405);
}

TEST_F(HttpServerTest, BodyOverTheLimitIs413) {
  RawClient c(port_);
  const std::string big(5000, 'x');
  const RawResponse r = c.Request("POST", "/embed", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_THAT(r.body, HasSubstr("larger than the limit of 4096 bytes"));
  EXPECT_TRUE(c.WaitClosed());
  ExpectAlive();
  // Counted as the server's own refusal, not as an answer of the /embed route.
  EXPECT_EQ(metrics_.http_transport_errors(HttpTransportError::kBodyTooLarge), 1u);
  EXPECT_EQ(metrics_.http_requests(HttpRoute::kEmbed, 413), 0u);
  EXPECT_THAT(metrics_.RenderPrometheus(),
              HasSubstr("embedserve_http_transport_errors_total{reason=\"body_too_large\"} 1"));
}

TEST_F(HttpServerTest, NotHttpIs400AndCountedAsMalformed) {
  RawClient c(port_);
  ASSERT_TRUE(c.Send("HELLO THERE\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 400);
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(metrics_.http_transport_errors(HttpTransportError::kMalformed), 1u);
  ExpectAlive();
}

TEST_F(HttpServerTest, HundredKilobyteUrlIs414) {
  RawClient c(port_);
  const RawResponse r = c.Request("GET", "/" + std::string(100 * 1024, 'a'));
  EXPECT_EQ(r.status, 414);
  EXPECT_EQ(metrics_.http_transport_errors(HttpTransportError::kUrlTooLong), 1u);
  ExpectAlive();
}

TEST_F(HttpServerTest, OversizeHeadersAre431) {
  RawClient c(port_);
  const RawResponse r =
      c.Request("GET", "/health", "", "X-Big: " + std::string(9000, 'b') + "\r\n");
  EXPECT_EQ(r.status, 431);
  EXPECT_EQ(metrics_.http_transport_errors(HttpTransportError::kHeadersTooLarge), 1u);
  ExpectAlive();
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  RawClient c(port_);
  const std::string body = R"({"inputs": "hello", "normalize": false})";
  std::string bytes = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
  bytes += "POST /embed HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  bytes += "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
  ASSERT_TRUE(c.Send(bytes));  // all three in one write
  EXPECT_EQ(c.Read().status, 200);
  const RawResponse embed = c.Read();
  EXPECT_EQ(embed.status, 200);
  EXPECT_THAT(embed.body, HasSubstr("[["));
  EXPECT_EQ(c.Read().status, 404);
}

TEST_F(HttpServerTest, TricklingClientIsDroppedAtTheHeaderTimeoutOthersServed) {
  RawClient slow(port_);
  ASSERT_TRUE(slow.Send("POST /embed HTTP/1.1\r\nHo"));
  // While it trickles, another client is served.
  RawClient other(port_);
  EXPECT_EQ(other.Request("POST", "/embed", R"({"inputs": "x"})").status, 200);
  // One byte per 50 ms (bounded: at most 200 bytes): the 300 ms header timeout counts
  // from the first byte, so trickling does not extend it.
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (int i = 0; i < 200 && !closed; ++i) {
    pollfd p = {slow.fd(), POLLIN, 0};
    if (poll(&p, 1, 50) > 0) {
      closed = slow.WaitClosed();
      break;
    }
    if (!slow.Send("s")) closed = true;
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ExpectAlive();
  // Beast closes the socket when the timer fires and counts in the read's handler after:
  // Stop, which waits for every connection's last handler, orders the two.
  server_->Stop();
  EXPECT_EQ(metrics_.http_transport_errors(HttpTransportError::kHeaderTimeout), 1u);
}

TEST_F(HttpServerTest, StalledBodyIsDroppedAtTheBodyTimeoutAndCounted) {
  HttpServer::Options ho;
  ho.body_timeout_ms = 200;
  auto server = HttpServer::Start(ho, {{0, front_.get()}});
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient c((*server)->port(0));
  // Headers promise 10 bytes; 2 come, then nothing.
  ASSERT_TRUE(c.Send("POST /embed HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\""));
  EXPECT_TRUE(c.WaitClosed());
  // Stop waits for every connection's last handler, where the drop is counted.
  (*server)->Stop();
  EXPECT_EQ(metrics_.http_transport_errors(HttpTransportError::kBodyTimeout), 1u);
  EXPECT_EQ(metrics_.http_requests(HttpRoute::kEmbed, 200), 0u);
}

TEST_F(HttpServerTest, FiveThousandIdleConnectionsDoNotStopService) {
  constexpr int kIdle = 5000;
  rlimit lim{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &lim), 0);
  const rlim_t want = 2 * kIdle + 200;  // both ends live in this process
  if (lim.rlim_cur < want) {
    if (lim.rlim_max < want) GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << lim.rlim_max;
    lim.rlim_cur = want;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
  }
  std::vector<RawClient> idle;
  idle.reserve(kIdle);
  for (int i = 0; i < kIdle; ++i) {
    idle.emplace_back(port_);
    ASSERT_TRUE(idle.back().connected()) << i;
  }
  ExpectAlive();
  // The idle ones are still open and served (a sample).
  for (int i = 0; i < kIdle; i += 1000) {
    EXPECT_EQ(idle[i].Request("GET", "/health").status, 200) << i;
  }
}

TEST_F(HttpServerTest, SlowMetricsClientBlocksNeitherScrapesNorStop) {
  const int metrics_port = server_->port(1);
  RawClient slow(metrics_port);
  ASSERT_TRUE(slow.Send("GET /metrics HTTP/1.1\r\nHo"));  // and nothing more
  RawClient scrape(metrics_port);
  const RawResponse r = scrape.Request("GET", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("embedserve_"));
  EXPECT_EQ(scrape.Request("GET", "/nope").status, 404);
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  // Stop closes connections without waiting on clients (its own bound is 2 s).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_TRUE(slow.WaitClosed());
}

// Keeps the responder of each request it gets and answers nothing itself.
class HoldingHandler : public HttpHandler {
 public:
  void Handle(const HttpRequest&, std::shared_ptr<const std::atomic<bool>>,
              HttpResponder respond) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_.push_back(std::move(respond));
    }
    cv_.notify_all();
  }
  // The responders of the first `n` requests, once they have come (empty after 10 s).
  std::vector<HttpResponder> Take(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return held_.size() >= n; })) {
      return {};
    }
    return std::move(held_);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<HttpResponder> held_;
};

// A handler may answer after the server has closed the connection, even after the server
// is destroyed (a batcher worker finishing its batch): Stop drops the pending answer
// rather than waiting for it, and a late answer touches neither the connection nor the
// server's io_context (ASan checks that under scripts/test.sh).
TEST(HttpServerStopTest, StopDropsPendingAnswersAndLaterAnswersTouchNothing) {
  HoldingHandler handler;
  auto server = HttpServer::Start(HttpServer::Options(), {{0, &handler}});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string request =
      "POST /embed HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
      "Content-Length: 2\r\n\r\n{}";
  RawClient answered((*server)->port(0));
  ASSERT_TRUE(answered.Send(request));
  std::vector<HttpResponder> first = handler.Take(1);
  ASSERT_EQ(first.size(), 1u);
  first[0](200, "application/json", "{}");
  EXPECT_EQ(answered.Read().status, 200);
  RawClient pending((*server)->port(0));
  ASSERT_TRUE(pending.Send(request));
  std::vector<HttpResponder> second = handler.Take(1);
  ASSERT_EQ(second.size(), 1u);
  const auto start = std::chrono::steady_clock::now();
  (*server)->Stop();
  // The pending answer does not hold its connection open: Stop does not wait out its
  // own 2 s bound.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_TRUE(pending.WaitClosed());
  server->reset();
  second[0](200, "application/json", "{}");  // the server is gone
  first[0](200, "application/json", "{}");   // a second answer: ignored
}

TEST_F(HttpServerTest, ApiKeyGuardsEveryRouteWith401ButHealthAndMetrics) {
  HttpFrontDoor::Options fo;
  fo.api_keys = ApiKeys::FromKeys({"sekret", "other-key"}, /*exempt_health_and_metrics=*/true);
  HttpFrontDoor guarded(fo, pipeline_.get(), &metrics_);
  auto server = HttpServer::Start(HttpServer::Options(), {{0, &guarded}});
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient c((*server)->port(0));
  // /v1/*: OpenAI's error object.
  RawResponse r = c.Request("POST", "/v1/embeddings", R"({"input": "x"})");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "authentication_error");
  EXPECT_THAT(r.body, HasSubstr("missing API key"));
  EXPECT_THAT(r.head, HasSubstr("\r\nWWW-Authenticate: Bearer realm=\"embedserve\"\r\n"));
  r = c.Request("POST", "/v1/embeddings", R"({"input": "x"})", "Authorization: Bearer wrong\r\n");
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, Not(HasSubstr("wrong")));  // the presented value is never echoed
  r = c.Request("POST", "/v1/embeddings", R"({"input": "x"})", "Authorization: Bearer sekret\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.head, Not(HasSubstr("WWW-Authenticate")));
  r = c.Request("POST", "/v1/embeddings", R"({"input": "x"})", "authorization: bearer other-key\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
  r = c.Request("POST", "/v1/embeddings", R"({"input": "x"})", "X-API-Key: sekret\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
  // TEI routes: TEI's error shape.
  r = c.Request("POST", "/embed", R"({"inputs": "x"})", "x-api-key: sekre\r\n");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(json::parse(r.body)["error_type"], "unauthorized");
  EXPECT_EQ(c.Request("POST", "/embed", R"({"inputs": "x"})", "x-api-key: sekret\r\n").status, 200);
  EXPECT_EQ(c.Request("GET", "/info").status, 401);
  EXPECT_EQ(c.Request("GET", "/nope").status, 401);  // no route map for strangers
  // Exempt: probes and scrapers.
  EXPECT_EQ(c.Request("GET", "/health").status, 200);
  EXPECT_EQ(c.Request("GET", "/metrics").status, 200);
  (*server)->Stop();
}

TEST_F(HttpServerTest, NotExemptHealthAndMetricsNeedTheKeyToo) {
  auto keys = ApiKeys::FromKeys({"sekret"}, /*exempt_health_and_metrics=*/false);
  HttpFrontDoor::Options fo;
  fo.api_keys = keys;
  HttpFrontDoor guarded(fo, pipeline_.get(), &metrics_);
  MetricsHandler metrics_only(&metrics_, keys);
  auto server = HttpServer::Start(HttpServer::Options(), {{0, &guarded}, {0, &metrics_only}});
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient c((*server)->port(0));
  EXPECT_EQ(c.Request("GET", "/health").status, 401);
  EXPECT_EQ(c.Request("GET", "/metrics").status, 401);
  EXPECT_EQ(c.Request("GET", "/health", "", "Authorization: Bearer sekret\r\n").status, 200);
  EXPECT_EQ(c.Request("GET", "/metrics", "", "x-api-key: sekret\r\n").status, 200);
  RawClient m((*server)->port(1));
  EXPECT_EQ(m.Request("GET", "/metrics").status, 401);
  RawResponse denied = m.Request("GET", "/healthz");
  EXPECT_EQ(denied.status, 401);
  EXPECT_THAT(denied.head, HasSubstr("\r\nWWW-Authenticate: Bearer realm=\"embedserve\"\r\n"));
  EXPECT_EQ(m.Request("GET", "/metrics", "", "x-api-key: sekret\r\n").status, 200);
  (*server)->Stop();
}

// TLS listeners, with certificates openssl makes for the test (security/test_certs.h).
class HttpsServerTest : public HttpServerTest {
 protected:
  static void SetUpTestSuite() { certs_ = new testing::TestCerts(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  // A TLS server on one listener of front_; mTLS when `client_ca` names a CA file.
  void StartTls(const std::string& client_ca) {
    ASSERT_TRUE(certs_->ok()) << certs_->log();
    HttpServer::Options ho;
    ho.header_timeout_ms = 300;
    ho.tls_cert_chain_pem = certs_->Read("server.pem");
    ho.tls_private_key_pem = certs_->Read("server.key");
    if (!client_ca.empty()) ho.tls_client_ca_pem = certs_->Read(client_ca);
    auto server = HttpServer::Start(ho, {{0, front_.get()}});
    ASSERT_TRUE(server.ok()) << server.status();
    tls_server_ = *std::move(server);
  }
  void TearDown() override {
    if (tls_server_) tls_server_->Stop();
    HttpServerTest::TearDown();
  }

  static testing::TestCerts* certs_;
  std::unique_ptr<HttpServer> tls_server_;
};

testing::TestCerts* HttpsServerTest::certs_ = nullptr;

TEST_F(HttpsServerTest, ServesHttpsAndDropsPlaintextAndSilentClients) {
  StartTls("");
  const int port = tls_server_->port(0);
  testing::HttpsResponse r = testing::Https(*certs_, port, "", testing::verb::post, "/embed", {},
                                            R"({"inputs": ["hello world"]})");
  EXPECT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_EQ(json::parse(r.body).size(), 1u);
  // Plaintext HTTP gets no answer from a TLS port.
  RawClient plain(port);
  EXPECT_EQ(plain.Request("GET", "/health").status, 0);
  // A client that connects and never starts the handshake is dropped by the header
  // timeout, as on a plain port.
  RawClient silent(port);
  ASSERT_TRUE(silent.connected());
  EXPECT_TRUE(silent.WaitClosed());
  // A client certificate is neither asked for nor needed.
  EXPECT_EQ(testing::Https(*certs_, port, "client", testing::verb::get, "/health").status, 200);
  // The handshake's timeout is counted in its handler, after Beast closed the socket:
  // Stop waits for every connection's last handler.
  tls_server_->Stop();
  EXPECT_EQ(metrics_.http_transport_errors(HttpTransportError::kHeaderTimeout), 1u);
}

TEST_F(HttpsServerTest, MtlsNeedsAClientCertificateFromTheClientCa) {
  StartTls("ca.pem");
  const int port = tls_server_->port(0);
  testing::HttpsResponse r = testing::Https(*certs_, port, "client", testing::verb::get, "/health");
  EXPECT_EQ(r.status, 200) << r.error;
  r = testing::Https(*certs_, port, "", testing::verb::get, "/health");
  EXPECT_EQ(r.status, 0) << "answered without a client certificate";
  r = testing::Https(*certs_, port, "other-client", testing::verb::get, "/health");
  EXPECT_EQ(r.status, 0) << "answered a certificate of another CA";
}

TEST_F(HttpsServerTest, UnusablePemBytesFailTheStart) {
  ASSERT_TRUE(certs_->ok()) << certs_->log();
  HttpServer::Options ho;
  ho.tls_cert_chain_pem = certs_->Read("server.pem");
  ho.tls_private_key_pem = "not a key";
  auto server = HttpServer::Start(ho, {{0, front_.get()}});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("HTTP TLS"));
}

TEST_F(HttpServerTest, FullQueueIs429AndTheConnectionStaysUsable) {
  FakeBackend backend;
  Batcher::Options bo;
  bo.max_batch_size = 1;
  bo.max_queue_sequences = 1;
  auto batcher = Batcher::Create(bo, &backend, nullptr);
  ASSERT_TRUE(batcher.ok());
  auto pipeline = EmbeddingPipeline::Create(EmbeddingPipeline::Options(), nullptr);
  ASSERT_TRUE(pipeline.ok());
  ASSERT_TRUE((*pipeline)->AttachModel(tokenizer_.get(), &backend, batcher->get()).ok());
  (*pipeline)->SetServing(true);
  HttpFrontDoor front(HttpFrontDoor::Options(), pipeline->get(), nullptr);
  auto server = HttpServer::Start(HttpServer::Options(), {{0, &front}});
  ASSERT_TRUE(server.ok()) << server.status();
  // Fill the one batch slot and the one queue slot directly (Embed has queued when it
  // returns), then ask over HTTP.
  backend.CloseGate();
  std::atomic<int> answered{0};
  const std::vector<absl::string_view> text = {"one"};
  (*pipeline)->Embed(text, RequestOptions(), CallControl(), [&](EmbedResult r) {
    EXPECT_TRUE(r.status.ok());
    ++answered;
  });
  backend.WaitForWaitingCalls(1);
  (*pipeline)->Embed(text, RequestOptions(), CallControl(), [&](EmbedResult r) {
    EXPECT_TRUE(r.status.ok());
    ++answered;
  });
  RawClient c((*server)->port(0));
  const RawResponse r = c.Request("POST", "/v1/embeddings", R"({"input": "x"})");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "rate_limit_error");
  EXPECT_THAT(r.body, HasSubstr("batch queue is full"));
  EXPECT_EQ(c.Request("GET", "/health").status, 200);  // the connection stays usable
  backend.OpenGate();
  (*batcher)->Shutdown();  // answers both: every accepted request gets its `done`
  EXPECT_EQ(answered.load(), 2);
  (*server)->Stop();
}

}  // namespace
}  // namespace embedserve
