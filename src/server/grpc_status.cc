#include "embedserve/server/grpc_status.h"

#include <string>

namespace embedserve {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  const std::string message(status.message());
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return grpc::Status::OK;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:  // e.g. a request over a limit
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
    case absl::StatusCode::kResourceExhausted:
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, message);
    case absl::StatusCode::kUnavailable:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, message);
    case absl::StatusCode::kDeadlineExceeded:
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, message);
    case absl::StatusCode::kCancelled:
      return grpc::Status(grpc::StatusCode::CANCELLED, message);
    case absl::StatusCode::kFailedPrecondition:  // e.g. no model attached yet
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, message);
    case absl::StatusCode::kUnimplemented:
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, message);
    default:
      // NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, ABORTED, INTERNAL, DATA_LOSS,
      // UNKNOWN, UNAUTHENTICATED: never the caller's fault in this server.
      return grpc::Status(grpc::StatusCode::INTERNAL, message);
  }
}

}  // namespace embedserve
