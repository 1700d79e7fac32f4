// A small HTTP/1.1 server on Boost.Beast (docs/http.md says why Beast): keep-alive,
// pipelined requests answered in order, many concurrent connections on a few I/O
// threads, and limits on the request line and headers (414 / 431), the body (413) and
// the time a client may take (idle, headers, body: the connection is dropped), over
// plain TCP or TLS (optionally requiring a client certificate: mTLS). It knows
// nothing of embeddings: each listener hands complete requests to its HttpHandler,
// which answers through a Responder, at once or later from any thread.
// Thread-safe: Start, StopAccepting, Stop and port may be called from any thread.
#ifndef EMBEDSERVE_HTTP_HTTP_SERVER_H_
#define EMBEDSERVE_HTTP_HTTP_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "embedserve/server/metrics.h"  // HttpTransportError

namespace embedserve {

// One request, complete. Valid until the Responder has been called.
struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, e.g. "/v1/embeddings"
  std::string body;
  std::string authorization;  // the Authorization header, "" when absent
  std::string x_api_key;      // the X-API-Key header, "" when absent
  std::string content_type;
};

// Answers one request: call it (or Deferred) exactly once, from any thread. Copyable;
// every copy answers the same request.
class HttpResponder {
 public:
  // Receives the answer; `make_body` is run on the connection's I/O thread.
  using Sink = std::function<void(int status, std::string content_type,
                                  std::function<std::string()> make_body)>;
  explicit HttpResponder(Sink sink) : sink_(std::move(sink)) {}

  void operator()(int status, absl::string_view content_type, std::string body) const {
    sink_(status, std::string(content_type),
          [body = std::move(body)]() mutable { return std::move(body); });
  }
  // Answers with the body `make_body` returns, made on the I/O thread rather than the
  // caller's (a batcher worker should not spend its time formatting JSON).
  void Deferred(int status, absl::string_view content_type,
                std::function<std::string()> make_body) const {
    sink_(status, std::string(content_type), std::move(make_body));
  }

 private:
  Sink sink_;
};

class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  // Called on an I/O thread: must not block (hand long work off and answer later).
  // `cancelled` turns true when the server closes the connection (shutdown).
  virtual void Handle(const HttpRequest& request, std::shared_ptr<const std::atomic<bool>> cancelled,
                      HttpResponder respond) = 0;
  // Called on an I/O thread for each request of this listener that the server refused
  // (400, 413, 414, 431) or dropped (a timeout) itself, before Handle could see it.
  // Must be quick. Default: nothing.
  virtual void OnTransportError(HttpTransportError error) { (void)error; }
};

class HttpServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // bind address of every listener
    int threads = 2;                 // I/O threads (parse, route, write); >= 1
    int64_t max_body_bytes = 8 << 20;    // larger bodies get 413
    int64_t max_header_bytes = 16384;    // request line + headers; over: 414 / 431
    int64_t idle_timeout_ms = 60000;     // keep-alive: a connection may sit this long
                                         // between requests before it is closed
    int64_t header_timeout_ms = 10000;   // first byte of a request to the end of its headers
    int64_t body_timeout_ms = 30000;     // end of headers to the end of the body; also
                                         // bounds the write of a response
    // TLS on every listener when tls_cert_chain_pem is set (PEM bytes, not file names);
    // the TLS handshake must end within header_timeout_ms. tls_client_ca_pem set: a
    // client must present a certificate signed by one of these CAs (mTLS), else the
    // handshake fails.
    std::string tls_cert_chain_pem;
    std::string tls_private_key_pem;
    std::string tls_client_ca_pem;
    absl::Status Validate() const;
  };

  struct Listener {
    int port = 0;                    // 0 = any free port
    HttpHandler* handler = nullptr;  // not owned; must outlive the server
  };

  // Binds every listener (failing, with nothing left bound, when one cannot) and starts
  // the I/O threads.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Options& options,
                                                           const std::vector<Listener>& listeners);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port of listener `i`.
  int port(size_t i) const;
  // Closes the listening sockets; open connections go on being served.
  void StopAccepting();
  // StopAccepting, then closes every connection (a response being written is cut, a
  // request whose answer is pending has its `cancelled` set) and joins the threads.
  // Does not wait for slow clients. Idempotent.
  void Stop();

  // Implementation details below.
  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace embedserve

#endif  // EMBEDSERVE_HTTP_HTTP_SERVER_H_
