// gRPC C++ smoke test: for each address given (default: 127.0.0.1:0, [::1]:0,
// localhost:0, 0.0.0.0:0) builds a server on an ephemeral port, starts it and shuts it
// down. Exits non-zero when none binds (the end-to-end tests need loopback).
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::vector<std::string> addrs(argv + 1, argv + argc);
  if (addrs.empty()) addrs = {"127.0.0.1:0", "[::1]:0", "localhost:0", "0.0.0.0:0"};
  int bound = 0;
  for (const std::string& addr : addrs) {
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
    // A server refuses to start without a polled completion queue (or a service).
    std::unique_ptr<grpc::ServerCompletionQueue> cq = builder.AddCompletionQueue();
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    std::printf("grpc %s: %s -> port %d\n", grpc::Version().c_str(), addr.c_str(), port);
    if (server && port != 0) ++bound;
    if (server) server->Shutdown();
    cq->Shutdown();
    void* tag;
    bool ok;
    while (cq->Next(&tag, &ok)) {
    }
  }
  return bound > 0 ? 0 : 1;
}
