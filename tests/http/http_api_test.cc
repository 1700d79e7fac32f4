// The HTTP JSON codec alone: every request shape the clients send, the errors for
// malformed or mistyped bodies, and response bodies that read back to the exact floats.
#include "http/http_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace embedserve {
namespace http_api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using nlohmann::json;

TEST(OpenAiRequestTest, InputAsStringStringsOrTokenIds) {
  auto r = ParseOpenAiEmbeddingsRequest(R"({"input": "hi", "model": "m"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->texts, ElementsAre("hi"));
  EXPECT_EQ(r->model, "m");
  EXPECT_FALSE(r->base64);
  r = ParseOpenAiEmbeddingsRequest(R"({"input": ["a", "b"], "encoding_format": "base64"})");
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->texts, ElementsAre("a", "b"));
  EXPECT_TRUE(r->base64);
  r = ParseOpenAiEmbeddingsRequest(R"({"input": [[101, 7592, 102], [101, 102]]})");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->token_ids.size(), 2u);
  EXPECT_THAT(r->token_ids[0], ElementsAre(101, 7592, 102));
  r = ParseOpenAiEmbeddingsRequest(R"({"input": [101, 102], "dimensions": 384})");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->token_ids.size(), 1u);
  EXPECT_EQ(r->dimensions, 384);
}

TEST(OpenAiRequestTest, ErrorsNameTheKey) {
  auto msg = [](const char* body) {
    return std::string(ParseOpenAiEmbeddingsRequest(body).status().message());
  };
  EXPECT_THAT(msg("{"), HasSubstr("not valid JSON"));
  EXPECT_THAT(msg(R"({"input": 1e9999})"), HasSubstr("not valid JSON"));  // found by the fuzzer
  EXPECT_THAT(msg("[1]"), HasSubstr("the body must be a JSON object; was an array"));
  EXPECT_THAT(msg("{}"), HasSubstr("input is required"));
  EXPECT_THAT(msg(R"({"input": []})"), HasSubstr("input must not be an empty array"));
  EXPECT_THAT(msg(R"({"input": ["a", 1]})"), HasSubstr("input[1] must be a string"));
  EXPECT_THAT(msg(R"({"input": [[1], "a"]})"), HasSubstr("input[1] must be an array"));
  EXPECT_THAT(msg(R"({"input": [[1, -2]]})"), HasSubstr("input[0][1] must be a token id"));
  EXPECT_THAT(msg(R"({"input": [[1, 2.5]]})"), HasSubstr("input[0][1] must be a token id"));
  EXPECT_THAT(msg(R"({"input": "a", "encoding_format": "hex"})"),
              HasSubstr("encoding_format must be \"float\" or \"base64\""));
  EXPECT_THAT(msg(R"({"input": "a", "model": 3})"), HasSubstr("model must be a string"));
  EXPECT_THAT(msg(R"({"input": "a", "dimensions": "3"})"),
              HasSubstr("dimensions must be an integer"));
}

TEST(TeiRequestTest, InputsAndOptions) {
  auto r = ParseTeiInputsRequest(R"({"inputs": "x", "normalize": false, "truncate": true,
                                     "truncation_direction": "Right"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->inputs, ElementsAre("x"));
  EXPECT_EQ(r->normalize, false);
  EXPECT_EQ(r->truncate, true);
  EXPECT_THAT(std::string(ParseTeiInputsRequest(R"({"inputs": 1})").status().message()),
              HasSubstr("inputs must be a string or an array of strings; was a number"));
  auto s = ParseTeiSimilarityRequest(
      R"({"inputs": {"source_sentence": "a", "sentences": ["b", "c"]}})");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->source_sentence, "a");
  EXPECT_THAT(s->sentences, ElementsAre("b", "c"));
  EXPECT_THAT(std::string(ParseTeiSimilarityRequest(R"({"inputs": "a"})").status().message()),
              HasSubstr("inputs must be an object"));
}

TEST(ResponseTest, FloatsReadBackExactlyAsFloat32) {
  const std::vector<float> v = {0.1f, -1.0f / 3.0f, 1e-8f, 123456.789f, 0.0f, -0.0f};
  const json j = json::parse(OpenAiEmbeddingsResponse(v.data(), 2, 3, false, "m", 7));
  EXPECT_EQ(j["usage"]["prompt_tokens"], 7);
  for (int row = 0; row < 2; ++row) {
    const auto got = j["data"][row]["embedding"].get<std::vector<double>>();
    for (int d = 0; d < 3; ++d) EXPECT_EQ(static_cast<float>(got[d]), v[row * 3 + d]);
  }
}

TEST(ResponseTest, Base64IsTheLittleEndianFloat32Bytes) {
  EXPECT_EQ(Base64("", 0), "");
  EXPECT_EQ(Base64("f", 1), "Zg==");
  EXPECT_EQ(Base64("fo", 2), "Zm8=");
  EXPECT_EQ(Base64("foobar", 6), "Zm9vYmFy");
  const float one = 1.0f;  // 00 00 80 3f
  const json j = json::parse(OpenAiEmbeddingsResponse(&one, 1, 1, true, "m", 1));
  EXPECT_EQ(j["data"][0]["embedding"], "AACAPw==");
}

TEST(ResponseTest, ErrorsAreJsonEvenForInvalidUtf8) {
  const json e = json::parse(OpenAiError("bad \xff byte", "invalid_request_error", ""));
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(e["error"]["code"].is_null());
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
}

}  // namespace
}  // namespace http_api
}  // namespace embedserve
