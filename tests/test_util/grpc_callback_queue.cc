#include "test_util/grpc_callback_queue.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "embedserve/v1/embedding.grpc.pb.h"

namespace embedserve {
namespace testing {

bool HoldGrpcCallbackQueue() {
  // Never freed: the channel holds the queue until the process exits. A static pointer,
  // so that LeakSanitizer sees it reachable rather than leaked.
  static std::shared_ptr<grpc::Channel>* const channel = new std::shared_ptr<grpc::Channel>(
      grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
  static const bool held = [] {
    auto stub = v1::EmbeddingService::NewStub(*channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1));
    v1::GetModelInfoRequest request;
    v1::ModelInfo response;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    stub->async()->GetModelInfo(&context, &request, &response, [&](grpc::Status) {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    return true;
  }();
  return held;
}

}  // namespace testing
}  // namespace embedserve
