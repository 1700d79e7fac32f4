#include "embedserve/server/grpc_status.h"

#include <gtest/gtest.h>

namespace embedserve {
namespace {

TEST(ToGrpcStatusTest, MapsEveryCodeAndKeepsTheMessage) {
  struct Case {
    absl::Status in;
    grpc::StatusCode want;
  };
  const Case cases[] = {
      {absl::InvalidArgumentError("texts[2]: bad"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::OutOfRangeError("too many"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::ResourceExhaustedError("queue full"), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::UnavailableError("shutting down"), grpc::StatusCode::UNAVAILABLE},
      {absl::FailedPreconditionError("no model"), grpc::StatusCode::UNAVAILABLE},
      {absl::DeadlineExceededError("late"), grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::CancelledError("gone"), grpc::StatusCode::CANCELLED},
      {absl::UnimplementedError("no"), grpc::StatusCode::UNIMPLEMENTED},
      {absl::InternalError("oom"), grpc::StatusCode::INTERNAL},
      {absl::NotFoundError("file"), grpc::StatusCode::INTERNAL},
      {absl::UnknownError("?"), grpc::StatusCode::INTERNAL},
      {absl::DataLossError("?"), grpc::StatusCode::INTERNAL},
      {absl::PermissionDeniedError("?"), grpc::StatusCode::INTERNAL},
  };
  for (const Case& c : cases) {
    const grpc::Status g = ToGrpcStatus(c.in);
    EXPECT_EQ(g.error_code(), c.want) << c.in;
    EXPECT_EQ(g.error_message(), std::string(c.in.message())) << c.in;
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace embedserve
