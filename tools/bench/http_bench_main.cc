// embedserve-http-bench: closed-loop load on the HTTP API (POST /embed, or /v1/embeddings
// with --path), the HTTP counterpart of embedserve-bench's gRPC Embed points, for the
// HTTP-vs-gRPC comparison in docs/results/http_vs_grpc/. Each of --concurrency threads
// holds one keep-alive connection and sends --batch generated sentences per request.
//   embedserve-http-bench --target 127.0.0.1:8080 --batch 32 --concurrency 4 --duration-s 10
// Prints one line: requests answered inside the measured window, texts/s, p50/p99 latency
// (ms), refusals (429/503: the queue is full; the caller waits --backoff-ms and sends
// the same request again, as clients that retry with backoff do) and other errors. Counted as
// embedserve-bench counts (answers arriving in the window). Exit 1 on other errors.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "embedserve/client/sentence_generator.h"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

int main(int argc, char** argv) {
  CLI::App app{"embedserve-http-bench: closed-loop load on the HTTP API"};
  std::string target = "127.0.0.1:8080", path = "/embed";
  int batch = 1, concurrency = 1, fixed_tokens = 0, pool = 64, backoff_ms = 10;
  double duration_s = 10, warmup_s = 2;
  app.add_option("--target", target, "host:port of server.http_port");
  app.add_option("--path", path, "/embed (TEI) or /v1/embeddings (OpenAI)");
  app.add_option("--batch", batch, "texts per request");
  app.add_option("--concurrency", concurrency, "requests in flight (one connection each)");
  app.add_option("--duration-s", duration_s, "seconds measured");
  app.add_option("--warmup-s", warmup_s, "seconds of unmeasured load first");
  app.add_option("--fixed-tokens", fixed_tokens, "0: short realistic sentences (as embedserve-bench's default)");
  app.add_option("--backoff-ms", backoff_ms,
                 "wait after a 429/503 before the next request (10; 0 = at once)")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  embedserve::client::SentenceGenerator::Options go;
  go.fixed_tokens = fixed_tokens;
  auto gen = embedserve::client::SentenceGenerator::Create(go);
  if (!gen.ok()) {
    std::fprintf(stderr, "%s\n", std::string(gen.status().message()).c_str());
    return 2;
  }
  std::vector<std::string> bodies;
  for (int i = 0; i < pool; ++i) {
    std::vector<std::string> texts;
    for (int j = 0; j < batch; ++j) texts.push_back((*gen)->NextSentence());
    nlohmann::json body = path == "/embed" ? nlohmann::json{{"inputs", texts}}
                                           : nlohmann::json{{"input", texts}, {"encoding_format", "float"}};
    bodies.push_back(body.dump());
  }
  const size_t colon = target.rfind(':');
  const std::string host = target.substr(0, colon), port = target.substr(colon + 1);

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::duration<double>(warmup_s);
  const auto end = measure_from + std::chrono::duration<double>(duration_s);
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      net::io_context ioc;
      beast::tcp_stream stream(ioc);
      net::ip::tcp::resolver resolver(ioc);
      beast::error_code ec;
      stream.connect(resolver.resolve(host, port), ec);
      if (ec) {
        ++errors;
        return;
      }
      stream.socket().set_option(net::ip::tcp::no_delay(true));
      std::vector<double> mine;
      beast::flat_buffer buffer;
      for (size_t i = t; Clock::now() < end;) {
        http::request<http::string_body> req{http::verb::post, path, 11};
        req.set(http::field::host, host);
        req.set(http::field::content_type, "application/json");
        req.body() = bodies[i % bodies.size()];
        req.prepare_payload();
        const auto t0 = Clock::now();
        http::write(stream, req, ec);
        http::response<http::string_body> res;
        if (!ec) http::read(stream, buffer, res, ec);
        const auto t1 = Clock::now();
        if (!ec && (res.result_int() == 429 || res.result_int() == 503)) {
          ++refused;
          std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
          continue;  // the same body again
        }
        i += concurrency;
        if (ec || res.result_int() != 200) {
          ++errors;
          if (ec) return;
          continue;
        }
        // As embedserve-bench counts: every answer that arrives inside the window (one
        // sent during the warm-up counts too), so long requests are not undercounted.
        if (t1 >= measure_from && t1 <= end) {
          mine.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  }
  for (auto& th : threads) th.join();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double q) {
    if (latencies_ms.empty()) return 0.0;
    return latencies_ms[std::min(latencies_ms.size() - 1,
                                 static_cast<size_t>(q * static_cast<double>(latencies_ms.size())))];
  };
  const double texts_per_s = static_cast<double>(latencies_ms.size()) * batch / duration_s;
  std::printf("path=%s batch=%d concurrency=%d requests=%zu texts_per_s=%.1f p50_ms=%.3f "
              "p99_ms=%.3f refused=%lld errors=%lld\n",
              path.c_str(), batch, concurrency, latencies_ms.size(), texts_per_s, pct(0.5),
              pct(0.99), static_cast<long long>(refused.load()),
              static_cast<long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}
