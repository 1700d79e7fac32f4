#include "http/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "embedserve/common/mutex.h"
#include "http/http_api.h"

namespace embedserve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;

namespace {

// What SessionRegistry and Stop need of a connection, whatever its stream.
class Session {
 public:
  virtual ~Session() = default;
  // From any thread: close now. An answer still pending is dropped (it would be written
  // to a closed connection): once Close returns the handler's responder holds nothing of
  // the session.
  virtual void Close() = 0;
  // A reference that keeps the session alive, or null when it is being destroyed.
  virtual std::shared_ptr<Session> Lock() = 0;
};

// What the responders of one server share, and may hold after it is gone: a session
// answered by a handler is reached only through a ReplySlot, under `mu`.
struct ReplyGate {
  Mutex mu;
};

// Open connections, so that Stop can close them and wait for them to go.
class SessionRegistry {
 public:
  const std::shared_ptr<ReplyGate>& reply_gate() const { return reply_gate_; }
  // Waits for responders that are posting an answer: after it, with every session
  // closed, none can reach the io_context (Stop, before it is destroyed).
  void WaitForResponders() { MutexLock lock(&reply_gate_->mu); }
  void Add(Session* s) {
    MutexLock lock(&mu_);
    open_.insert(s);
  }
  void Remove(Session* s) {
    bool empty = false;
    {
      MutexLock lock(&mu_);
      open_.erase(s);
      empty = open_.empty();
    }
    if (empty) cv_.NotifyAll();
  }
  // The open sessions, kept alive by the caller: dropping the last reference ends a
  // session, and its destructor takes mu_, so the references must go outside the lock.
  std::vector<std::shared_ptr<Session>> Snapshot();
  // True when every session ended before `timeout`.
  bool WaitEmpty(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    MutexLock lock(&mu_);
    while (!open_.empty()) {
      const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
                            until - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return false;
      cv_.WaitFor(&mu_, left);
    }
    return true;
  }

 private:
  const std::shared_ptr<ReplyGate> reply_gate_ = std::make_shared<ReplyGate>();
  Mutex mu_;
  CondVar cv_;  // open_ turned empty
  std::unordered_set<Session*> open_ ABSL_GUARDED_BY(mu_);
};

// One connection: read a request, hand it to the handler, write its answer, repeat.
// Every step runs on the connection's strand. `Stream` is beast::tcp_stream (plain) or
// beast::ssl_stream<beast::tcp_stream> (TLS: a handshake first, close_notify last).
template <typename Stream>
class StreamSession final : public Session,
                            public std::enable_shared_from_this<StreamSession<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  // `ssl_context` is null for a plain stream; else it must outlive the session.
  StreamSession(tcp::socket socket, ssl::context* ssl_context,
                const HttpServer::Options& options, HttpHandler* handler,
                SessionRegistry* registry)
      : stream_(MakeStream(std::move(socket), ssl_context)),
        options_(options),
        handler_(handler),
        registry_(registry),
        cancelled_(std::make_shared<std::atomic<bool>>(false)) {
    registry_->Add(this);
  }
  ~StreamSession() override { registry_->Remove(this); }

  void Run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if constexpr (kTls) {
        self->Handshake();
      } else {
        self->ReadRequest();
      }
    });
  }

  void Close() override {
    {
      MutexLock lock(&registry_->reply_gate()->mu);
      if (auto slot = pending_reply_.lock()) slot->session.reset();
    }
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      self->closing_ = true;
      self->cancelled_->store(true);
      self->Shut();  // a pending answer then fails to write, and the session ends
    });
  }

  std::shared_ptr<Session> Lock() override { return this->weak_from_this().lock(); }

 private:
  using std::enable_shared_from_this<StreamSession<Stream>>::shared_from_this;

  static Stream MakeStream(tcp::socket socket, ssl::context* ssl_context) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *ssl_context);
    } else {
      return Stream(std::move(socket));
    }
  }

  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }

  // TLS: the handshake (and with mTLS the client certificate's check) under the header
  // timeout, so a client that connects and says nothing is dropped as on a plain port.
  void Handshake() {
    Tcp().expires_after(std::chrono::milliseconds(options_.header_timeout_ms));
    stream_.async_handshake(ssl::stream_base::server,
                            [self = shared_from_this()](beast::error_code ec) {
                              if (ec == beast::error::timeout) {
                                self->handler_->OnTransportError(
                                    HttpTransportError::kHeaderTimeout);
                              }
                              if (ec) return self->Shut();
                              self->ReadRequest();
                            });
  }

  void ReadRequest() {
    if (closing_) return Shut();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
    parser_->body_limit(static_cast<std::uint64_t>(options_.max_body_bytes));
    if (buffer_.size() > 0) return ReadHeader();  // a pipelined request is buffered
    // Idle between requests: wait for the first byte under the keep-alive timeout.
    Tcp().expires_after(std::chrono::milliseconds(options_.idle_timeout_ms));
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) return self->Shut();
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    Tcp().expires_after(std::chrono::milliseconds(options_.header_timeout_ms));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      // The parser takes the request line first: no target yet means it did not fit.
      if (parser_->get().target().empty()) {
        handler_->OnTransportError(HttpTransportError::kUrlTooLong);
        return Fail(414, "the request line (URL) is longer than the server accepts");
      }
      handler_->OnTransportError(HttpTransportError::kHeadersTooLarge);
      return Fail(431, "the request headers are larger than the server accepts");
    }
    if (ec == http::error::body_limit) return FailTooLarge();
    if (ec) {
      // Timeout, client gone, or not HTTP: answer a parse error, drop the rest.
      if (ec == beast::error::timeout) {
        handler_->OnTransportError(HttpTransportError::kHeaderTimeout);
        return Shut();
      }
      if (ec == http::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::operation_aborted || ec == ssl::error::stream_truncated) {
        return Shut();
      }
      return FailMalformed(ec);
    }
    Tcp().expires_after(std::chrono::milliseconds(options_.body_timeout_ms));
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue") &&
        !parser_->is_done()) {
      // curl sends larger bodies only after this (or after waiting a second).
      static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         if (ec) return self->Shut();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->OnRequest(ec);
                     });
  }

  void OnRequest(beast::error_code ec) {
    if (ec == http::error::body_limit) return FailTooLarge();
    if (ec) {
      if (ec == beast::error::timeout) {
        handler_->OnTransportError(HttpTransportError::kBodyTimeout);
        return Shut();
      }
      if (ec == net::error::eof || ec == http::error::partial_message ||
          ec == net::error::operation_aborted || ec == ssl::error::stream_truncated) {
        return Shut();
      }
      return FailMalformed(ec);
    }
    Tcp().expires_never();  // the handler's time is the pipeline's business
    auto& req = parser_->get();
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.authorization = std::string(req[http::field::authorization]);
    r.x_api_key = std::string(req["x-api-key"]);
    r.content_type = std::string(req[http::field::content_type]);
    r.body = std::move(req.body());
    awaiting_handler_ = true;
    // The responder reaches the session through a slot, under the server's reply gate,
    // and hands its reference over to the write it posts. The pipeline may call it, and
    // destroy its copies, on another thread after the answer, even after this server is
    // gone: the session and its executor (which belong to the io_context) must not be
    // touched then. Close empties the slot; Stop waits at the gate for a responder that
    // is posting. Called once (HttpResponder).
    auto slot = std::make_shared<ReplySlot>();
    std::shared_ptr<ReplyGate> gate = registry_->reply_gate();
    {
      MutexLock lock(&gate->mu);
      slot->session = shared_from_this();
      pending_reply_ = slot;
    }
    handler_->Handle(
        r, cancelled_,
        HttpResponder([slot, gate = std::move(gate)](int status, std::string type,
                                                     std::function<std::string()> make) {
          MutexLock lock(&gate->mu);
          std::shared_ptr<StreamSession> self = std::move(slot->session);
          if (self == nullptr) return;  // answered already, or the connection was closed
          StreamSession* session = self.get();
          net::post(session->stream_.get_executor(),
                    [self = std::move(self), status, type = std::move(type),
                     make = std::move(make)]() mutable {
                      self->awaiting_handler_ = false;
                      self->Write(status, type, make(), !self->closing_);
                    });
        }));
  }

  void FailMalformed(beast::error_code ec) {
    handler_->OnTransportError(HttpTransportError::kMalformed);
    Fail(400, absl::StrCat("malformed HTTP request: ", ec.message()));
  }

  void FailTooLarge() {
    handler_->OnTransportError(HttpTransportError::kBodyTooLarge);
    Fail(413, absl::StrCat("the request body is larger than the limit of ",
                           options_.max_body_bytes, " bytes"));
  }

  // Answers an error the server found itself, then closes the connection (what follows
  // in the stream cannot be trusted).
  void Fail(int status, const std::string& message) {
    version_ = 11;
    Write(status, "application/json",
          http_api::OpenAiError(message, http_api::OpenAiErrorType(status), ""),
          /*keep_alive=*/false);
  }

  void Write(int status, const std::string& content_type, std::string body, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), version_);
    res->set(http::field::server, "embedserve");
    res->set(http::field::content_type, content_type);
    // RFC 9110 15.5.2: a 401 names the scheme the client must use (an API key as a
    // bearer token; x-api-key is accepted too, docs/security.md).
    if (status == 401) res->set(http::field::www_authenticate, "Bearer realm=\"embedserve\"");
    res->keep_alive(keep_alive && keep_alive_);
    res->body() = std::move(body);
    res->prepare_payload();
    const bool close = !res->keep_alive();
    Tcp().expires_after(std::chrono::milliseconds(options_.body_timeout_ms));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, close](beast::error_code ec, size_t) {
                        if (ec == beast::error::timeout) {
                          self->handler_->OnTransportError(HttpTransportError::kWriteTimeout);
                        }
                        if (ec) return self->Shut();
                        if (close) return self->Linger();
                        self->ReadRequest();
                      });
  }

  // After a last answer: stop sending, read (and drop) what the client still sends for a
  // moment so that the answer is not lost to a reset, then close.
  // TLS: send close_notify (bounded by the same wait) and close.
  void Linger() {
    if (closing_) return Shut();
    if constexpr (kTls) {
      Tcp().expires_after(std::chrono::milliseconds(
          std::min<int64_t>(options_.header_timeout_ms, 2000)));
      stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->Shut(); });
      return;
    }
    beast::error_code ignored;
    Tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
    Tcp().expires_after(std::chrono::milliseconds(
        std::min<int64_t>(options_.header_timeout_ms, 2000)));
    if (drain_ == nullptr) drain_ = std::make_unique<char[]>(kDrainBytes);
    stream_.async_read_some(net::buffer(drain_.get(), kDrainBytes),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->Shut();
                              self->Linger();
                            });
  }

  void Shut() {
    beast::error_code ignored;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Tcp().close();
  }

  Stream stream_;
  const HttpServer::Options& options_;
  HttpHandler* const handler_;
  SessionRegistry* const registry_;
  const std::shared_ptr<std::atomic<bool>> cancelled_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool awaiting_handler_ = false;
  // The handler's way back to this session while it has a request (under the reply gate).
  struct ReplySlot {
    std::shared_ptr<StreamSession> session;
  };
  std::weak_ptr<ReplySlot> pending_reply_;
  bool closing_ = false;
  static constexpr size_t kDrainBytes = 4096;
  std::unique_ptr<char[]> drain_;  // Linger's discard buffer; only closing sessions have one
};

std::vector<std::shared_ptr<Session>> SessionRegistry::Snapshot() {
  std::vector<std::shared_ptr<Session>> alive;
  MutexLock lock(&mu_);
  alive.reserve(open_.size());
  for (Session* s : open_) {
    // A session whose last reference is being dropped elsewhere needs no closing.
    if (auto p = s->Lock()) alive.push_back(std::move(p));
  }
  return alive;
}

}  // namespace

class HttpServer::Impl {
 public:
  explicit Impl(const Options& options)
      : options_(options), work_(net::make_work_guard(ioc_)) {}

  // The TLS context from the PEM bytes in options_ (nothing to do without them).
  absl::Status SetUpTls() {
    if (options_.tls_cert_chain_pem.empty()) return absl::OkStatus();
    ssl_context_ = std::make_unique<ssl::context>(ssl::context::tls_server);
    beast::error_code ec;
    ssl_context_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                  ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                              ec);
    if (!ec) {
      ssl_context_->use_certificate_chain(net::buffer(options_.tls_cert_chain_pem), ec);
    }
    if (!ec) {
      ssl_context_->use_private_key(net::buffer(options_.tls_private_key_pem),
                                    ssl::context::pem, ec);
    }
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HTTP TLS: the certificate chain or its key is not usable: ", ec.message()));
    }
    if (!options_.tls_client_ca_pem.empty()) {
      ssl_context_->add_certificate_authority(net::buffer(options_.tls_client_ca_pem), ec);
      if (!ec) {
        ssl_context_->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
      }
      if (ec) {
        return absl::InvalidArgumentError(
            absl::StrCat("HTTP TLS: the client CA is not usable: ", ec.message()));
      }
      // Name the accepted CAs in the handshake, so that a client holding several
      // certificates offers one of theirs.
      BIO* bio = BIO_new_mem_buf(options_.tls_client_ca_pem.data(),
                                 static_cast<int>(options_.tls_client_ca_pem.size()));
      while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
        SSL_CTX_add_client_CA(ssl_context_->native_handle(), ca);
        X509_free(ca);
      }
      BIO_free(bio);
      ERR_clear_error();  // the read that found no further certificate
    }
    return absl::OkStatus();
  }

  absl::Status Listen(const std::vector<Listener>& listeners) {
    beast::error_code ec;
    const auto address = net::ip::make_address(options_.host, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat(
          "server.host must be an IP address for the HTTP server; was '", options_.host, "'"));
    }
    for (const Listener& l : listeners) {
      auto acceptor = std::make_unique<tcp::acceptor>(net::make_strand(ioc_));
      const tcp::endpoint endpoint(address, static_cast<unsigned short>(l.port));
      acceptor->open(endpoint.protocol(), ec);
      if (!ec) acceptor->set_option(net::socket_base::reuse_address(true), ec);
      if (!ec) acceptor->bind(endpoint, ec);
      if (!ec) acceptor->listen(net::socket_base::max_listen_connections, ec);
      if (ec) {
        return absl::UnavailableError(absl::StrCat(
            "cannot listen for HTTP on ", options_.host, ":", l.port, ": ", ec.message(),
            "; set server.http_port / server.metrics_port to a free port, 0 for any, -1 off"));
      }
      ports_.push_back(acceptor->local_endpoint().port());
      acceptors_.push_back({std::move(acceptor), l.handler});
    }
    return absl::OkStatus();
  }

  void Run() {
    for (size_t i = 0; i < acceptors_.size(); ++i) Accept(i);
    for (int i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
  }

  int port(size_t i) const { return i < ports_.size() ? ports_[i] : -1; }

  void StopAccepting() {
    for (auto& a : acceptors_) {
      net::post(a.acceptor->get_executor(), [acc = a.acceptor.get()] {
        beast::error_code ignored;
        acc->close(ignored);
      });
    }
  }

  void Stop() {
    {
      MutexLock lock(&stop_mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    StopAccepting();
    for (const auto& session : registry_.Snapshot()) session->Close();
    // Closing is quick (no waiting on clients); the bound only guards against a bug.
    if (!registry_.WaitEmpty(std::chrono::milliseconds(2000))) {
      spdlog::warn("HTTP server: connections still open after close; stopping anyway");
    }
    registry_.WaitForResponders();
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  struct Acceptor {
    std::unique_ptr<tcp::acceptor> acceptor;
    HttpHandler* handler;
  };

  void Accept(size_t i) {
    Acceptor& a = acceptors_[i];
    a.acceptor->async_accept(net::make_strand(ioc_), [this, i](beast::error_code ec,
                                                               tcp::socket socket) {
      Acceptor& a = acceptors_[i];
      if (ec == net::error::operation_aborted || !a.acceptor->is_open()) return;
      if (ec) {
        // Out of file descriptors or similar: retry shortly rather than spin.
        spdlog::warn("HTTP accept failed: {}", ec.message());
        auto timer = std::make_shared<net::steady_timer>(a.acceptor->get_executor(),
                                                         std::chrono::milliseconds(50));
        timer->async_wait([this, i, timer](beast::error_code) { Accept(i); });
        return;
      }
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      if (ssl_context_ != nullptr) {
        std::make_shared<StreamSession<beast::ssl_stream<beast::tcp_stream>>>(
            std::move(socket), ssl_context_.get(), options_, a.handler, &registry_)
            ->Run();
      } else {
        std::make_shared<StreamSession<beast::tcp_stream>>(std::move(socket), nullptr,
                                                           options_, a.handler, &registry_)
            ->Run();
      }
      Accept(i);
    });
  }

  const Options options_;
  std::unique_ptr<ssl::context> ssl_context_;  // null: plain TCP
  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::vector<Acceptor> acceptors_;
  std::vector<int> ports_;
  std::vector<std::thread> threads_;
  SessionRegistry registry_;
  Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

absl::Status HttpServer::Options::Validate() const {
  if (threads < 1 || threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.http_threads must be in 1..256; was ", threads));
  }
  if (max_body_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.http_max_body_bytes must be >= 1; was ", max_body_bytes));
  }
  if (max_header_bytes < 256 || max_header_bytes > (1 << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server.http_max_header_bytes must be in 256..16777216; was ", max_header_bytes));
  }
  for (const auto& [name, v] :
       {std::pair<const char*, int64_t>{"server.http_idle_timeout_ms", idle_timeout_ms},
        {"server.http_header_timeout_ms", header_timeout_ms},
        {"server.http_body_timeout_ms", body_timeout_ms}}) {
    if (v < 1) return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 1; was ", v));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const Options& options, const std::vector<Listener>& listeners) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  for (const Listener& l : listeners) {
    if (l.handler == nullptr) return absl::InvalidArgumentError("an HTTP listener needs a handler");
  }
  auto impl = std::make_unique<Impl>(options);
  if (absl::Status s = impl->SetUpTls(); !s.ok()) return s;
  if (absl::Status s = impl->Listen(listeners); !s.ok()) return s;
  impl->Run();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }
int HttpServer::port(size_t i) const { return impl_->port(i); }
void HttpServer::StopAccepting() { impl_->StopAccepting(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace embedserve
