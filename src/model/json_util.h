// Internal: exception-free JSON parsing for the model-folder files (nlohmann-json).
// Stateless; safe from any thread.
#ifndef EMBEDSERVE_SRC_MODEL_JSON_UTIL_H_
#define EMBEDSERVE_SRC_MODEL_JSON_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace internal_model {

// Nesting deeper than this is refused before parsing (no legitimate file comes close).
constexpr int kMaxJsonDepth = 64;

// Parses `text`; INVALID_ARGUMENT "<what>: invalid JSON ..." on a syntax error or on
// nesting deeper than kMaxJsonDepth.
inline absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text,
                                                absl::string_view what) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": invalid JSON"));
  }
  return j;
}

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_JSON_UTIL_H_
