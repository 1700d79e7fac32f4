// A raw-socket HTTP/1.1 client for the HTTP server tests: sends exact bytes (partial
// headers, pipelined requests, oversize URLs) and reads responses by Content-Length.
// Every read has a 10 s receive timeout, so a regression fails instead of hanging.
// Not thread-safe: one RawClient per thread.
#ifndef EMBEDSERVE_TESTS_HTTP_HTTP_TEST_CLIENT_H_
#define EMBEDSERVE_TESTS_HTTP_HTTP_TEST_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace embedserve {
namespace testing {

struct RawResponse {
  int status = 0;  // 0: no response (connection closed or timed out)
  std::string head;
  std::string body;
};

class RawClient {
 public:
  explicit RawClient(int port, int timeout_ms = 10000) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawClient() {
    if (fd_ >= 0) close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  RawClient(RawClient&& o) noexcept : fd_(o.fd_), connected_(o.connected_), buf_(std::move(o.buf_)) {
    o.fd_ = -1;
  }

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads one response; status 0 when the connection ended (or timed out) first.
  RawResponse Read() {
    RawResponse r;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return r;
    }
    r.head = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    r.status = std::atoi(r.head.c_str() + r.head.find(' ') + 1);
    size_t length = 0;
    const size_t cl = Lower(r.head).find("content-length:");
    if (cl != std::string::npos) length = std::strtoul(r.head.c_str() + cl + 15, nullptr, 10);
    while (buf_.size() < length) {
      if (!Fill()) {
        r.status = 0;
        return r;
      }
    }
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return r;
  }

  // True when the server closed the connection (read gives EOF or a reset) before the
  // receive timeout.
  bool WaitClosed() {
    char c;
    for (;;) {
      const ssize_t n = recv(fd_, &c, 1, 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

  RawResponse Request(const std::string& method, const std::string& path,
                      const std::string& body = "", const std::string& extra_headers = "") {
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: test\r\n" + extra_headers;
    if (!body.empty() || method == "POST") {
      req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n";
    }
    req += "\r\n" + body;
    if (!Send(req)) return RawResponse();
    return Read();
  }

 private:
  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  bool Fill() {
    char tmp[16384];
    const ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_HTTP_HTTP_TEST_CLIENT_H_
