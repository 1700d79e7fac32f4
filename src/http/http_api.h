// The JSON codec of the HTTP front door: parses the request bodies of OpenAI's
// POST /v1/embeddings and text-embeddings-inference's POST /embed, /similarity and
// /tokenize into plain structs, and writes the response bodies. No I/O, no gRPC, no
// LibTorch (the fuzz build links it: tests/http/http_api_fuzzer.cc).
// Thread-safe: pure functions.
#ifndef EMBEDSERVE_HTTP_HTTP_API_H_
#define EMBEDSERVE_HTTP_HTTP_API_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "embedserve/common/token_ids.h"

namespace embedserve {
namespace http_api {

// OpenAI's embeddings request. Exactly one of `texts` / `token_ids` is non-empty after a
// successful parse (`input` was a string or strings, or token ids).
struct OpenAiEmbeddingsRequest {
  std::vector<std::string> texts;
  std::vector<TokenIds> token_ids;
  std::string model;
  bool base64 = false;                // encoding_format "base64" (else "float")
  std::optional<int64_t> dimensions;  // must equal the model's when set
};

// TEI's /embed and /tokenize request: `inputs` as a string or an array of strings.
struct TeiInputsRequest {
  std::vector<std::string> inputs;
  std::optional<bool> normalize;
  std::optional<bool> truncate;
};

// TEI's /similarity: {"inputs": {"source_sentence": s, "sentences": [...]}}.
struct TeiSimilarityRequest {
  std::string source_sentence;
  std::vector<std::string> sentences;
  std::optional<bool> truncate;
};

// Each fails with INVALID_ARGUMENT whose message names the key and what was wrong
// ("input[2] must be a string; was a number"). Unknown keys are ignored (clients send
// extras such as `user` or `truncation_direction`).
absl::StatusOr<OpenAiEmbeddingsRequest> ParseOpenAiEmbeddingsRequest(absl::string_view body);
absl::StatusOr<TeiInputsRequest> ParseTeiInputsRequest(absl::string_view body);
absl::StatusOr<TeiSimilarityRequest> ParseTeiSimilarityRequest(absl::string_view body);

// Response bodies. Floats are written in their shortest round-trip form (std::to_chars),
// so a client that reads them as float32 gets the server's exact values.
std::string OpenAiEmbeddingsResponse(const float* values, int64_t rows, int64_t dim,
                                     bool base64, const std::string& model,
                                     int64_t prompt_tokens);
// [[...], [...]]
std::string TeiEmbedResponse(const float* values, int64_t rows, int64_t dim);
// [s0, s1, ...]
std::string FloatArray(const float* values, int64_t n);
// TEI's tokenize answer: [[{"id": 101, "special": true}, ...], ...]; `is_special(id)`.
std::string TeiTokenizeResponse(const std::vector<TokenIds>& tokens, int32_t cls_id,
                                int32_t sep_id);
// OpenAI's error object: {"error": {"message": ..., "type": ..., "param": null, "code": ...}}.
std::string OpenAiError(absl::string_view message, absl::string_view type,
                        absl::string_view code);
// TEI's error object: {"error": ..., "error_type": ...}.
std::string TeiError(absl::string_view message, absl::string_view error_type);

// The HTTP status for a pipeline status: INVALID_ARGUMENT 400, UNAUTHENTICATED 401,
// NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
// CANCELLED 499, else 500.
int HttpStatusOf(absl::StatusCode code);
// OpenAI's error `type` for an HTTP status (invalid_request_error, ...).
const char* OpenAiErrorType(int http_status);

// Standard base64 (RFC 4648, padded) of `n` bytes.
std::string Base64(const void* data, size_t n);

}  // namespace http_api
}  // namespace embedserve

#endif  // EMBEDSERVE_HTTP_HTTP_API_H_
