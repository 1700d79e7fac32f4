// Runs the built embedserve-embed binary on good and bad JSON Lines: every input line gets
// its own output line, in order; good lines match sentence-transformers' vectors for the
// tiny-bert fixture, bad lines get {"error": ...}, and the tool goes on.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_util/tool_run.h"

namespace embedserve {
namespace {

using nlohmann::json;

const std::string kData = EMBEDSERVE_TEST_DATA_DIR;

using testing::ToolRun;

ToolRun RunTool(const std::string& input, const std::string& args) {
  return testing::RunTool(EMBEDSERVE_EMBED_BIN, input, args);
}

TEST(EmbedToolTest, GoodLinesMatchReferenceBadLinesGetErrorsInOrder) {
  std::vector<json> refs;
  {
    std::ifstream in(kData + "/tiny-bert_embeddings.jsonl");
    std::string line;
    for (int i = 0; i < 3 && std::getline(in, line); ++i) refs.push_back(json::parse(line));
  }
  ASSERT_EQ(refs.size(), 3u);
  std::string input;
  input += json{{"text", refs[0]["text"]}}.dump() + "\n";
  input += "not json\n";
  input += json{{"text", refs[1]["text"]}}.dump() + "\n";
  input += "{\"txt\": 1}\n";
  input += "\n";
  input += "{\"text\": \"bad \xFF byte\"}\n";
  input += json{{"text", refs[2]["text"]}}.dump() + "\n";
  // Batch size 2: good and bad lines share batches.
  ToolRun run = RunTool(input, "--model '" + kData + "/tiny-bert' --device cpu --batch-size 2");
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  ASSERT_EQ(run.lines.size(), 7u) << run.stderr_text << "\nstdout:\n"
                                  << ::testing::PrintToString(run.lines);
  const int good[] = {0, 2, 6};
  for (int k = 0; k < 3; ++k) {
    json got = json::parse(run.lines[good[k]]);
    ASSERT_TRUE(got.contains("embedding")) << run.lines[good[k]];
    const auto v = got["embedding"].get<std::vector<double>>();
    const auto r = refs[k]["embedding"].get<std::vector<double>>();
    ASSERT_EQ(v.size(), r.size());
    // Same tolerance as the library test: the reference has 7 decimals, fp32 sums differ
    // only in order.
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], r[i], 1e-5) << "line " << good[k];
  }
  for (int bad : {1, 3, 4, 5}) {
    json got = json::parse(run.lines[bad]);
    EXPECT_TRUE(got.contains("error")) << run.lines[bad];
  }
  EXPECT_THAT(run.lines[5], ::testing::HasSubstr("UTF-8"));
  // Logs go to stderr, never into the JSON Lines.
  EXPECT_THAT(run.stderr_text, ::testing::HasSubstr("loaded"));
}

TEST(EmbedToolTest, UnusableModelIsAnErrorExit) {
  ToolRun run = RunTool("", "--model /nonexistent --device cpu");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stderr_text, ::testing::HasSubstr("config.json"));
  run = RunTool("", "--model '" + kData + "/tiny-bert' --device cpu --precision fp16");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stderr_text, ::testing::HasSubstr("use bf16"));
}

}  // namespace
}  // namespace embedserve
