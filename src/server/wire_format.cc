#include "server/wire_format.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/tokenizer/tokenizer.h"

namespace embedserve::grpc_wire {

static_assert(static_cast<int>(v1::EmbedRequest::kTextsFieldNumber) ==
                      static_cast<int>(v1::SimilarityRequest::kPairsFieldNumber) &&
                  static_cast<int>(v1::EmbedRequest::kTextsFieldNumber) ==
                      static_cast<int>(v1::TokenizeRequest::kTextsFieldNumber),
              "CheckUtf8Fields reads texts and pairs as one field number");

// ---------------------------------------------------------------------------------
// Raw request parsing with precise UTF-8 errors.

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  size_t total = 0;
  for (const auto& s : slices) total += s.size();
  bytes.reserve(total);
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

namespace {

// Walks the wire format of a request and checks every text field (texts[i], or
// pairs[i].text_a / text_b) and the id for valid UTF-8. Malformed wire data is left to
// the real parser.
absl::Status CheckUtf8Fields(absl::string_view bytes, RequestKind kind, int id_field,
                             std::string* id_out) {
  // texts and pairs share a field number (static_asserts below).
  constexpr int text_field = v1::EmbedRequest::kTextsFieldNumber;
  using WFL = google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  int index = 0;
  std::string value;
  absl::Status first_error;  // keep scanning after it, for the id
  while (const uint32_t tag = in.ReadTag()) {
    const int field = static_cast<int>(WFL::GetTagFieldNumber(tag));
    const bool text_like = WFL::GetTagWireType(tag) == WFL::WIRETYPE_LENGTH_DELIMITED &&
                           (field == text_field || field == id_field);
    if (!text_like) {
      if (!WFL::SkipField(&in, tag)) return first_error;
      continue;
    }
    uint32_t len = 0;
    if (!in.ReadVarint32(&len) || !in.ReadString(&value, static_cast<int>(len))) {
      return first_error;
    }
    if (field == id_field) {
      if (absl::Status s = Tokenizer::CheckUtf8(value); !s.ok()) {
        if (first_error.ok()) {
          first_error = absl::InvalidArgumentError(absl::StrCat("id: ", s.message()));
        }
        continue;
      }
      if (id_out != nullptr) *id_out = value;
      continue;
    }
    if (kind == RequestKind::kTexts) {
      absl::Status s = Tokenizer::CheckUtf8(value);
      if (!s.ok() && first_error.ok()) {
        first_error =
            absl::InvalidArgumentError(absl::StrCat("texts[", index, "]: ", s.message()));
      }
    } else {
      google::protobuf::io::CodedInputStream pair(
          reinterpret_cast<const uint8_t*>(value.data()), static_cast<int>(value.size()));
      std::string text;
      while (const uint32_t ptag = pair.ReadTag()) {
        const int pfield = static_cast<int>(WFL::GetTagFieldNumber(ptag));
        if (WFL::GetTagWireType(ptag) == WFL::WIRETYPE_LENGTH_DELIMITED &&
            (pfield == v1::TextPair::kTextAFieldNumber ||
             pfield == v1::TextPair::kTextBFieldNumber)) {
          uint32_t plen = 0;
          if (!pair.ReadVarint32(&plen) || !pair.ReadString(&text, static_cast<int>(plen))) break;
          absl::Status s = Tokenizer::CheckUtf8(text);
          if (!s.ok() && first_error.ok()) {
            first_error = absl::InvalidArgumentError(absl::StrCat(
                "pairs[", index, "].", pfield == v1::TextPair::kTextAFieldNumber ? "text_a" : "text_b", ": ", s.message()));
          }
        } else if (!WFL::SkipField(&pair, ptag)) {
          break;
        }
      }
    }
    ++index;
  }
  return first_error;
}

}  // namespace

// Parses a serialized request into `out`; INVALID_ARGUMENT naming the field and index
// for invalid UTF-8, or saying the bytes are not the expected message. On failure
// `*id_out` (nullable) gets the request id when it could be read.
absl::Status ParseRequest(const grpc::ByteBuffer& buffer, RequestKind kind, int id_field,
                          google::protobuf::Message* out, std::string* id_out) {
  const std::string bytes = Flatten(buffer);
  ES_RETURN_IF_ERROR(CheckUtf8Fields(bytes, kind, id_field, id_out));
  if (!out->ParseFromString(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", out->GetTypeName(), " message"));
  }
  return absl::OkStatus();
}

// The call's deadline on `clock`'s time line: 0 = none; an expired deadline becomes "now"
// (the pipeline then answers DEADLINE_EXCEEDED before queueing).
int64_t DeadlineMicros(std::chrono::system_clock::time_point deadline, const Clock& clock) {
  if (deadline == std::chrono::system_clock::time_point::max()) return 0;
  const auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(
                             deadline - std::chrono::system_clock::now())
                             .count();
  const int64_t now = clock.NowMicros();
  if (remaining <= 0) return now;
  // Beyond a day is as good as none (and keeps the sum from overflowing).
  if (remaining > int64_t{86400} * 1000000) return 0;
  return now + remaining;
}


std::vector<absl::string_view> TextsOf(const google::protobuf::RepeatedPtrField<std::string>& t) {
  return std::vector<absl::string_view>(t.begin(), t.end());
}

void SetUsage(int64_t tokens, v1::Usage* usage) {
  usage->set_prompt_tokens(tokens);
  usage->set_total_tokens(tokens);
}

void SetTimings(const StageTimings& t, v1::Timings* out) {
  out->set_tokenize_us(t.tokenize_us);
  out->set_queue_us(t.queue_us);
  out->set_inference_us(t.inference_us);
  out->set_total_us(t.total_us);
}

// The reply of a successful (or, on a stream, failed) Embed: usage always, vectors and
// timings on success.
void EncodeEmbedResult(const EmbedResult& r, v1::EmbedResponse* out) {
  if (r.status.ok() || r.prompt_tokens > 0) SetUsage(r.prompt_tokens, out->mutable_usage());
  if (!r.status.ok()) return;
  const EmbeddingMatrix& m = r.embeddings;
  auto* rows = out->mutable_embeddings();
  rows->Reserve(static_cast<int>(m.rows));
  for (int64_t i = 0; i < m.rows; ++i) {
    auto* values = rows->Add()->mutable_values();
    values->Reserve(static_cast<int>(m.dim));
    values->Add(m.Row(i), m.Row(i) + m.dim);
  }
  SetTimings(r.timings, out->mutable_timings());
}

// RESOURCE_EXHAUSTED for a reply over server.max_message_bytes. Permanent: the same
// request gets the same reply size, so the caller must split it, not retry it.
absl::Status ReplyTooLargeError(int64_t bytes, int64_t max_bytes, bool at_least) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the reply would be ", at_least ? "at least " : "", bytes,
      " bytes, more than server.max_message_bytes (", max_bytes,
      "); send fewer texts per request (retrying the same request fails the same way)"));
}

// Embed's reply holds `texts` vectors of `dim` floats: packed, each takes dim * 4 bytes
// and at least 4 of framing. Refuses before any work when that alone is over the limit.
absl::Status CheckEmbedReplySize(int64_t texts, const EmbeddingPipeline& pipeline,
                                 int64_t max_bytes) {
  const PipelineModel* model = pipeline.model();
  if (model == nullptr) return absl::OkStatus();  // refused as not serving anyway
  const int64_t at_least = texts * (model->backend.dimension * 4 + 4);
  if (at_least <= max_bytes) return absl::OkStatus();
  return ReplyTooLargeError(at_least, max_bytes, /*at_least=*/true);
}

}  // namespace embedserve::grpc_wire
