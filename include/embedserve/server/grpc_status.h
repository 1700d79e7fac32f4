// The one mapping from embedserve's absl::Status to the gRPC status a client sees.
// Pure functions; safe from any thread.
#ifndef EMBEDSERVE_SERVER_GRPC_STATUS_H_
#define EMBEDSERVE_SERVER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include <grpcpp/support/status.h>

namespace embedserve {

// Bad input -> INVALID_ARGUMENT, queue full -> RESOURCE_EXHAUSTED, not ready or
// shutting down -> UNAVAILABLE, deadline passed -> DEADLINE_EXCEEDED, cancelled ->
// CANCELLED; a NOT_FOUND/ALREADY_EXISTS/... from inside the server (never caused by the
// request) and any unknown code -> INTERNAL. The message is kept (it tells the caller
// what to change); OK -> OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_GRPC_STATUS_H_
