// A one-request HTTPS client for the TLS tests (Asio + Beast over OpenSSL): trusts the
// test CA, checks the server name, optionally presents a client certificate, and is
// bounded by 10 s so that a regression fails instead of hanging.
// Test-only; thread-safe (no shared state).
#ifndef EMBEDSERVE_TESTS_SECURITY_HTTPS_TEST_CLIENT_H_
#define EMBEDSERVE_TESTS_SECURITY_HTTPS_TEST_CLIENT_H_

#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "security/test_certs.h"

namespace embedserve {
namespace testing {

namespace https_internal {
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
}  // namespace https_internal

using https_internal::http::verb;

struct HttpsResponse {
  int status = 0;     // 0: no HTTP answer (the TLS handshake or the connection failed)
  std::string body;
  std::string error;  // what failed, when status is 0
};

// One HTTPS request to 127.0.0.1:port that trusts ca.pem and checks the name
// "localhost"; `client` ("" none, "client", "other-client") picks the certificate it
// presents. Bounded by 10 s.
inline HttpsResponse Https(const TestCerts& certs, int port, const std::string& client,
                           verb method, const std::string& target,
                           const std::vector<std::pair<std::string, std::string>>& headers = {},
                           const std::string& body = "") {
  using namespace https_internal;  // NOLINT: Asio/Beast's long names
  HttpsResponse out;
  net::io_context ioc;
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(certs.Path("ca.pem"));
  ctx.set_verify_mode(ssl::verify_peer);
  if (!client.empty()) {
    ctx.use_certificate_chain_file(certs.Path(client + ".pem"));
    ctx.use_private_key_file(certs.Path(client + ".key"), ssl::context::pem);
  }
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
  stream.set_verify_callback(ssl::host_name_verification("localhost"));
  beast::error_code ec;
  beast::get_lowest_layer(stream).connect(
      net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)), ec);
  if (ec) {
    out.error = "connect: " + ec.message();
    return out;
  }
  http::request<http::string_body> req(method, target, 11);
  req.set(http::field::host, "localhost");
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  stream.async_handshake(ssl::stream_base::client, [&](beast::error_code ec) {
    if (ec) {
      out.error = "handshake: " + ec.message();
      return;
    }
    http::async_write(stream, req, [&](beast::error_code ec, size_t) {
      if (ec) {
        out.error = "write: " + ec.message();
        return;
      }
      http::async_read(stream, buffer, res, [&](beast::error_code ec, size_t) {
        if (ec) {
          out.error = "read: " + ec.message();
          return;
        }
        out.status = static_cast<int>(res.result_int());
        out.body = res.body();
      });
    });
  });
  ioc.run_for(std::chrono::seconds(10));
  if (out.status == 0 && out.error.empty()) out.error = "no answer within 10 s";
  return out;
}

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_SECURITY_HTTPS_TEST_CLIENT_H_
