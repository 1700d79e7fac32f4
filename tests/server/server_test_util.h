// Helpers for the server tests: a free TCP port, a tiny HTTP GET, the tiny-bert
// tokenizer from tests/data. Test-only; thread-safe (no shared state).
#ifndef EMBEDSERVE_TESTS_SERVER_SERVER_TEST_UTIL_H_
#define EMBEDSERVE_TESTS_SERVER_SERVER_TEST_UTIL_H_

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace embedserve {
namespace testing {

inline std::string TinyBertDir() { return std::string(EMBEDSERVE_TEST_DATA_DIR) + "/tiny-bert"; }

// A port that was free a moment ago.
inline int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// GET `path` from 127.0.0.1:port; the whole reply (head + body), "" on failure.
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_SERVER_SERVER_TEST_UTIL_H_
