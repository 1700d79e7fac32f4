// gRPC C++ smoke test: builds a server on an ephemeral loopback port, starts it and
// shuts it down. Exits non-zero when it cannot bind.
#include <grpcpp/grpcpp.h>

#include <cstdio>

int main() {
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::printf("grpc %s: server on port %d\n", grpc::Version().c_str(), port);
  if (!server || port == 0) return 1;
  server->Shutdown();
  return 0;
}
