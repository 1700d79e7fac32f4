// libFuzzer target for the HTTP JSON request parsers (http/http_api.h): any bytes must
// give either a request or INVALID_ARGUMENT, never a crash, and what parses must satisfy
// the parsers' promises (exactly one of texts / token_ids; ids in int32 range).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "http/http_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace embedserve::http_api;
  const std::string body(reinterpret_cast<const char*>(data), size);
  auto openai = ParseOpenAiEmbeddingsRequest(body);
  if (openai.ok()) {
    if (openai->texts.empty() == openai->token_ids.empty()) std::abort();
    for (const auto& ids : openai->token_ids) {
      for (int32_t id : ids) {
        if (id < 0) std::abort();
      }
    }
  } else if (openai.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  auto tei = ParseTeiInputsRequest(body);
  if (!tei.ok() && tei.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  auto sim = ParseTeiSimilarityRequest(body);
  if (!sim.ok() && sim.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  // The error writer takes any message bytes.
  (void)OpenAiError(body, "invalid_request_error", "");
  return 0;
}
