// Runs the built embedserve-tokenize binary on good and bad JSON Lines and checks that every
// input line gets its own output line, in order, with the library's ids or an error.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "embedserve/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_util/tool_run.h"

namespace embedserve {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

const std::string kData = EMBEDSERVE_TEST_DATA_DIR;
const std::string kVocab = kData + "/tokenizer/vocab.txt";

using testing::ToolRun;

ToolRun RunTool(const std::string& input, const std::string& args) {
  return testing::RunTool(EMBEDSERVE_TOKENIZE_BIN, input, args);
}

TEST(TokenizeToolTest, GoodAndBadLinesInOrder) {
  auto tok = Tokenizer::Create(Tokenizer::Options{}, kVocab);
  ASSERT_TRUE(tok.ok());
  const std::string input =
      "{\"text\": \"Hello, world!\"}\n"
      "{\"text\": \"bad \xFF byte\"}\n"
      "this is not json\n"
      "{\"other\": 1}\n"
      "{\"text\": 42}\n"
      "{\"text\": \"Caf\\u00e9 \xE4\xBD\xA0\xE5\xA5\xBD\"}\n"
      "\n"
      "{\"text\": \"\\ud800\"}\n"
      "{\"text\": \"i like strawberries\"}\n";
  const ToolRun run = RunTool(input, "--vocab '" + kVocab + "'");
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  ASSERT_EQ(run.lines.size(), 9u);
  auto ids = [&](const std::string& text) { return json{{"ids", (*tok)->Encode(text, 0)->ids}}; };
  EXPECT_EQ(json::parse(run.lines[0]), ids("Hello, world!"));
  EXPECT_THAT(json::parse(run.lines[1]).at("error").get<std::string>(),
              HasSubstr("invalid UTF-8 at byte 14:"));
  EXPECT_THAT(json::parse(run.lines[2]).at("error").get<std::string>(), HasSubstr("invalid JSON"));
  EXPECT_THAT(json::parse(run.lines[3]).at("error").get<std::string>(), HasSubstr("missing \"text\""));
  EXPECT_THAT(json::parse(run.lines[4]).at("error").get<std::string>(), HasSubstr("must be a string"));
  EXPECT_EQ(json::parse(run.lines[5]), ids("Caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD"));
  EXPECT_THAT(json::parse(run.lines[6]).at("error").get<std::string>(), HasSubstr("invalid JSON"));
  EXPECT_THAT(json::parse(run.lines[7]).at("error").get<std::string>(), HasSubstr("surrogate"));
  EXPECT_EQ(json::parse(run.lines[8]), json::parse(R"({"ids": [101, 1045, 2066, 13137, 20968, 102]})"));
}

TEST(TokenizeToolTest, MaxLengthTruncatesKeepingSep) {
  const ToolRun run = RunTool("{\"text\": \"one two three four five\"}\n{\"text\": \"hi\"}\n",
                          "--vocab '" + kVocab + "' --max-length 4");
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  ASSERT_EQ(run.lines.size(), 2u);
  const auto first = json::parse(run.lines[0]).at("ids").get<std::vector<int>>();
  ASSERT_EQ(first.size(), 4u);
  EXPECT_EQ(first.front(), 101);
  EXPECT_EQ(first.back(), 102);
  EXPECT_EQ(json::parse(run.lines[1]).at("ids").size(), 3u);
}

TEST(TokenizeToolTest, BadArgumentsFail) {
  ToolRun run = RunTool("", "--vocab /nonexistent/vocab.txt");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.stderr_text, HasSubstr("/nonexistent/vocab.txt"));
  run = RunTool("", "--vocab '" + kVocab + "' --max-length 1");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.stderr_text, HasSubstr("--max-length must be"));
  run = RunTool("", "");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.stderr_text, HasSubstr("--vocab"));
}

}  // namespace
}  // namespace embedserve
