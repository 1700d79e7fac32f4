// The one mapping from embedserve's absl::Status to the gRPC status a client sees.
// Pure functions; safe from any thread.
#ifndef EMBEDSERVE_SERVER_GRPC_STATUS_H_
#define EMBEDSERVE_SERVER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include <grpcpp/support/status.h>

namespace embedserve {

// Bad input (INVALID_ARGUMENT, OUT_OF_RANGE) -> INVALID_ARGUMENT, queue full
// (RESOURCE_EXHAUSTED) -> RESOURCE_EXHAUSTED, not ready or shutting down (UNAVAILABLE,
// FAILED_PRECONDITION) -> UNAVAILABLE, deadline passed -> DEADLINE_EXCEEDED, cancelled ->
// CANCELLED, UNIMPLEMENTED -> UNIMPLEMENTED; anything else (NOT_FOUND, INTERNAL, ...:
// never the caller's fault here) -> INTERNAL. The message is kept (it tells the caller
// what to change); OK -> OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace embedserve

#endif  // EMBEDSERVE_SERVER_GRPC_STATUS_H_
