#include "http/http_api.h"

#include <charconv>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace embedserve {
namespace http_api {
namespace {

using nlohmann::json;

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    default: return "something else";
  }
}

absl::Status WrongType(const std::string& key, const char* want, const json& v) {
  return absl::InvalidArgumentError(
      absl::StrCat(key, " must be ", want, "; was ", TypeName(v)));
}

// The body as a JSON object.
absl::StatusOr<json> ParseObject(absl::string_view body) {
  json doc;
  try {
    doc = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e9999
    return absl::InvalidArgumentError(absl::StrCat("the body is not valid JSON: ", e.what()));
  }
  if (!doc.is_object()) return WrongType("the body", "a JSON object", doc);
  return doc;
}

// A key that may be absent or null; `*out` is null then.
const json* Find(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status OptionalBool(const json& object, const char* key, std::optional<bool>* out) {
  const json* v = Find(object, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return WrongType(key, "true or false", *v);
  *out = v->get<bool>();
  return absl::OkStatus();
}

// A string, or an array of strings, into `out`.
absl::Status Strings(const json& v, const std::string& key, std::vector<std::string>* out) {
  if (v.is_string()) {
    out->push_back(v.get<std::string>());
    return absl::OkStatus();
  }
  if (!v.is_array()) return WrongType(key, "a string or an array of strings", v);
  out->reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) return WrongType(absl::StrCat(key, "[", i, "]"), "a string", v[i]);
    out->push_back(v[i].get<std::string>());
  }
  return absl::OkStatus();
}

// An array of integers 0..2^31-1.
absl::Status TokenArray(const json& v, const std::string& key, TokenIds* out) {
  out->reserve(v.size());
  for (size_t j = 0; j < v.size(); ++j) {
    const json& id = v[j];
    const std::string name = absl::StrCat(key, "[", j, "]");
    if (!id.is_number_integer()) return WrongType(name, "a token id (an integer)", id);
    if (id.is_number_unsigned() ? id.get<uint64_t>() > uint64_t{INT32_MAX}
                                : (id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be a token id in [0, 2147483647]; was ", id.dump()));
    }
    out->push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

void AppendFloat(float f, std::string* out) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), f);
  // JSON has no NaN/Inf: a model that produced one gets null there.
  if (f != f || f == std::numeric_limits<float>::infinity() ||
      f == -std::numeric_limits<float>::infinity()) {
    out->append("null");
    return;
  }
  out->append(buf, r.ptr);
}

void AppendFloats(const float* v, int64_t n, std::string* out) {
  out->push_back('[');
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0) out->push_back(',');
    AppendFloat(v[i], out);
  }
  out->push_back(']');
}

std::string Quote(absl::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

absl::StatusOr<OpenAiEmbeddingsRequest> ParseOpenAiEmbeddingsRequest(absl::string_view body) {
  auto doc = ParseObject(body);
  if (!doc.ok()) return doc.status();
  OpenAiEmbeddingsRequest r;
  const json* input = Find(*doc, "input");
  if (input == nullptr) return absl::InvalidArgumentError("input is required");
  if (input->is_string()) {
    r.texts.push_back(input->get<std::string>());
  } else if (input->is_array()) {
    if (input->empty()) return absl::InvalidArgumentError("input must not be an empty array");
    const json& first = (*input)[0];
    if (first.is_number()) {  // one sequence of token ids
      r.token_ids.emplace_back();
      if (absl::Status s = TokenArray(*input, "input", &r.token_ids.back()); !s.ok()) return s;
    } else if (first.is_array()) {  // several sequences of token ids
      r.token_ids.reserve(input->size());
      for (size_t i = 0; i < input->size(); ++i) {
        const json& seq = (*input)[i];
        const std::string key = absl::StrCat("input[", i, "]");
        if (!seq.is_array()) return WrongType(key, "an array of token ids", seq);
        r.token_ids.emplace_back();
        if (absl::Status s = TokenArray(seq, key, &r.token_ids.back()); !s.ok()) return s;
      }
    } else if (absl::Status s = Strings(*input, "input", &r.texts); !s.ok()) {
      return s;
    }
  } else {
    return WrongType("input",
                     "a string, an array of strings or an array of arrays of token ids",
                     *input);
  }
  const json* model = Find(*doc, "model");
  if (model != nullptr) {
    if (!model->is_string()) return WrongType("model", "a string", *model);
    r.model = model->get<std::string>();
  }
  if (const json* f = Find(*doc, "encoding_format"); f != nullptr) {
    if (!f->is_string()) return WrongType("encoding_format", "\"float\" or \"base64\"", *f);
    const std::string& v = f->get_ref<const std::string&>();
    if (v == "base64") {
      r.base64 = true;
    } else if (v != "float") {
      return absl::InvalidArgumentError(absl::StrCat(
          "encoding_format must be \"float\" or \"base64\"; was ", Quote(v)));
    }
  }
  if (const json* d = Find(*doc, "dimensions"); d != nullptr) {
    if (!d->is_number_integer()) return WrongType("dimensions", "an integer", *d);
    r.dimensions = d->is_number_unsigned() && d->get<uint64_t>() > uint64_t{INT64_MAX}
                       ? INT64_MAX
                       : d->get<int64_t>();
  }
  return r;
}

absl::StatusOr<TeiInputsRequest> ParseTeiInputsRequest(absl::string_view body) {
  auto doc = ParseObject(body);
  if (!doc.ok()) return doc.status();
  TeiInputsRequest r;
  const json* inputs = Find(*doc, "inputs");
  if (inputs == nullptr) return absl::InvalidArgumentError("inputs is required");
  if (absl::Status s = Strings(*inputs, "inputs", &r.inputs); !s.ok()) return s;
  if (absl::Status s = OptionalBool(*doc, "normalize", &r.normalize); !s.ok()) return s;
  if (absl::Status s = OptionalBool(*doc, "truncate", &r.truncate); !s.ok()) return s;
  return r;
}

absl::StatusOr<TeiSimilarityRequest> ParseTeiSimilarityRequest(absl::string_view body) {
  auto doc = ParseObject(body);
  if (!doc.ok()) return doc.status();
  TeiSimilarityRequest r;
  const json* inputs = Find(*doc, "inputs");
  if (inputs == nullptr) return absl::InvalidArgumentError("inputs is required");
  if (!inputs->is_object()) {
    return WrongType("inputs", "an object {source_sentence, sentences}", *inputs);
  }
  const json* source = Find(*inputs, "source_sentence");
  if (source == nullptr) return absl::InvalidArgumentError("inputs.source_sentence is required");
  if (!source->is_string()) return WrongType("inputs.source_sentence", "a string", *source);
  r.source_sentence = source->get<std::string>();
  const json* sentences = Find(*inputs, "sentences");
  if (sentences == nullptr) return absl::InvalidArgumentError("inputs.sentences is required");
  if (!sentences->is_array()) {
    return WrongType("inputs.sentences", "an array of strings", *sentences);
  }
  if (absl::Status s = Strings(*sentences, "inputs.sentences", &r.sentences); !s.ok()) return s;
  if (absl::Status s = OptionalBool(*doc, "truncate", &r.truncate); !s.ok()) return s;
  return r;
}

std::string Base64(const void* data, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  if (i < n) {
    uint32_t v = uint32_t{p[i]} << 16;
    if (i + 1 < n) v |= uint32_t{p[i + 1]} << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string OpenAiEmbeddingsResponse(const float* values, int64_t rows, int64_t dim,
                                     bool base64, const std::string& model,
                                     int64_t prompt_tokens) {
  std::string out;
  out.reserve(static_cast<size_t>(rows * dim * (base64 ? 6 : 12) + 128));
  out.append("{\"object\":\"list\",\"data\":[");
  for (int64_t i = 0; i < rows; ++i) {
    if (i > 0) out.push_back(',');
    absl::StrAppend(&out, "{\"object\":\"embedding\",\"index\":", i, ",\"embedding\":");
    const float* row = values + i * dim;
    if (base64) {
      // OpenAI's base64: the little-endian float32 bytes of the vector.
      static_assert(sizeof(float) == 4, "float32");
      out.push_back('"');
      out.append(Base64(row, static_cast<size_t>(dim) * sizeof(float)));
      out.push_back('"');
    } else {
      AppendFloats(row, dim, &out);
    }
    out.push_back('}');
  }
  absl::StrAppend(&out, "],\"model\":", Quote(model), ",\"usage\":{\"prompt_tokens\":",
                  prompt_tokens, ",\"total_tokens\":", prompt_tokens, "}}");
  return out;
}

std::string TeiEmbedResponse(const float* values, int64_t rows, int64_t dim) {
  std::string out;
  out.reserve(static_cast<size_t>(rows * dim * 12 + 8));
  out.push_back('[');
  for (int64_t i = 0; i < rows; ++i) {
    if (i > 0) out.push_back(',');
    AppendFloats(values + i * dim, dim, &out);
  }
  out.push_back(']');
  return out;
}

std::string FloatArray(const float* values, int64_t n) {
  std::string out;
  AppendFloats(values, n, &out);
  return out;
}

std::string TeiTokenizeResponse(const std::vector<TokenIds>& tokens, int32_t cls_id,
                                int32_t sep_id) {
  std::string out = "[";
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.push_back('[');
    for (size_t j = 0; j < tokens[i].size(); ++j) {
      const int32_t id = tokens[i][j];
      if (j > 0) out.push_back(',');
      absl::StrAppend(&out, "{\"id\":", id, ",\"special\":",
                      id == cls_id || id == sep_id ? "true" : "false", "}");
    }
    out.push_back(']');
  }
  out.push_back(']');
  return out;
}

std::string OpenAiError(absl::string_view message, absl::string_view type,
                        absl::string_view code) {
  return absl::StrCat("{\"error\":{\"message\":", Quote(message), ",\"type\":", Quote(type),
                      ",\"param\":null,\"code\":", code.empty() ? "null" : Quote(code), "}}");
}

std::string TeiError(absl::string_view message, absl::string_view error_type) {
  return absl::StrCat("{\"error\":", Quote(message), ",\"error_type\":", Quote(error_type), "}");
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

const char* OpenAiErrorType(int http_status) {
  switch (http_status) {
    case 400:
    case 404:
    case 413:
    case 414:
    case 431: return "invalid_request_error";
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return "server_error";
  }
}

}  // namespace http_api
}  // namespace embedserve
