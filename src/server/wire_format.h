// The gRPC front door's wire format, for both ways of taking calls
// (src/server/embedding_service.cc, src/server/queued_calls.cc): raw request bytes ->
// messages, with INVALID_ARGUMENT naming the field and index of invalid UTF-8; pipeline
// results -> reply messages; a call's deadline onto the pipeline's clock; the reply-size
// limit (server.max_message_bytes).
#ifndef EMBEDSERVE_SERVER_WIRE_FORMAT_H_
#define EMBEDSERVE_SERVER_WIRE_FORMAT_H_

#include <google/protobuf/message.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "embedserve/batching/clock.h"
#include "embedserve/server/grpc_status.h"
#include "embedserve/v1/embedding.pb.h"
#include "pipeline/embedding_pipeline.h"

namespace embedserve::grpc_wire {

// What a request lists: texts (Embed, Tokenize, EmbedStream) or pairs (Similarity).
enum class RequestKind { kTexts, kPairs };
constexpr int kNoIdField = 0;  // TokenizeRequest has no id

// The bytes of `buffer` in one string.
std::string Flatten(const grpc::ByteBuffer& buffer);

// Parses a serialized request into `out`; INVALID_ARGUMENT naming the field and index
// for invalid UTF-8, or saying the bytes are not the expected message. On failure
// `*id_out` (nullable) gets the request id when it could be read.
absl::Status ParseRequest(const grpc::ByteBuffer& buffer, RequestKind kind, int id_field,
                          google::protobuf::Message* out, std::string* id_out = nullptr);

// The call's deadline on `clock`'s time line: 0 = none; an expired deadline becomes "now"
// (the pipeline then answers DEADLINE_EXCEEDED before queueing).
int64_t DeadlineMicros(std::chrono::system_clock::time_point deadline, const Clock& clock);

template <typename Request>
RequestOptions OptionsOf(const Request& request, const char* list_name) {
  RequestOptions options;
  options.truncate = !request.has_truncate() || request.truncate();
  options.list_name = list_name;
  return options;
}

std::vector<absl::string_view> TextsOf(const google::protobuf::RepeatedPtrField<std::string>& t);
void SetUsage(int64_t tokens, v1::Usage* usage);
void SetTimings(const StageTimings& t, v1::Timings* out);

// The reply of a successful (or, on a stream, failed) Embed: usage always, vectors and
// timings on success.
void EncodeEmbedResult(const EmbedResult& r, v1::EmbedResponse* out);

// RESOURCE_EXHAUSTED for a reply over server.max_message_bytes. Permanent: the same
// request gets the same reply size, so the caller must split it, not retry it.
absl::Status ReplyTooLargeError(int64_t bytes, int64_t max_bytes, bool at_least);

// Embed's reply holds `texts` vectors of `dim` floats: packed, each takes dim * 4 bytes
// and at least 4 of framing. Refuses before any work when that alone is over the limit.
absl::Status CheckEmbedReplySize(int64_t texts, const EmbeddingPipeline& pipeline,
                                 int64_t max_bytes);

// Serializes `response` into `out`; RESOURCE_EXHAUSTED (and `out` cleared) when it is
// larger than `max_bytes`.
template <typename Response>
grpc::Status SerializeReply(const Response& response, int64_t max_bytes, grpc::ByteBuffer* out) {
  bool own_buffer = false;
  grpc::Status g = grpc::SerializationTraits<Response>::Serialize(response, out, &own_buffer);
  if (g.ok() && static_cast<int64_t>(out->Length()) > max_bytes) {
    const auto bytes = static_cast<int64_t>(out->Length());
    out->Clear();
    g = ToGrpcStatus(ReplyTooLargeError(bytes, max_bytes, /*at_least=*/false));
  }
  return g;
}

}  // namespace embedserve::grpc_wire

#endif  // EMBEDSERVE_SERVER_WIRE_FORMAT_H_
