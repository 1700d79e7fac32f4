// The completion queues of EmbeddingService (Options::grpc_queues > 0) and the calls
// they hold; src/server/queued_calls.cc serves them.
#ifndef EMBEDSERVE_SERVER_QUEUED_CALLS_H_
#define EMBEDSERVE_SERVER_QUEUED_CALLS_H_

#include <grpcpp/completion_queue.h>

#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "embedserve/common/mutex.h"
#include "embedserve/server/embedding_service.h"

namespace embedserve {

struct EmbeddingService::Queues {
  struct Queue {
    std::unique_ptr<grpc::ServerCompletionQueue> cq;
    std::thread thread;
    // Held by the queue's thread around each event, and by StopQueues to set stopping:
    // once it is set no call is posted, so that none follows the queue's Shutdown.
    Mutex mu;
    bool stopping ABSL_GUARDED_BY(mu) = false;
  };

  void Add() {
    MutexLock lock(&mu);
    ++calls;
  }
  void Remove() {
    bool none_left = false;
    {
      MutexLock lock(&mu);
      none_left = --calls == 0;
    }
    if (none_left) cv.NotifyAll();
  }

  std::vector<std::unique_ptr<Queue>> queues;
  Mutex mu;
  CondVar cv;                             // calls turned 0
  int64_t calls ABSL_GUARDED_BY(mu) = 0;  // QueuedCall objects: posted, or taken and not done
  bool started = false;
  bool stopped = false;
};

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_QUEUED_CALLS_H_
