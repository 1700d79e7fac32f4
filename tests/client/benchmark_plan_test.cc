#include "embedserve/client/benchmark_plan.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<ExperimentFile> Parse(const std::string& yaml) {
  return ParseExperimentYaml(yaml, "exp");
}

TEST(BenchmarkPlanTest, ReadsBenchmarkSectionAndServerAddress) {
  auto file = Parse(R"(
server:
  host: 0.0.0.0
  port: 50123
model:
  name: whatever
benchmark:
  method: similarity
  batch_sizes: [1, 4, 8, 16, 32]
  concurrencies: [1, 4]
  duration_s: 5
  warmup_s: 1.5
  sentence_length: 128
  seed: 9
  timeout_ms: 1000
  backoff_ms: 25
  extra_grids:
    - {batch_sizes: [1], concurrencies: [4, 32, 256]}
)");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->name, "exp");
  EXPECT_EQ(file->host, "127.0.0.1");  // wildcard bind address -> loopback
  EXPECT_EQ(file->port, 50123);
  const BenchmarkPlan& p = file->plan;
  EXPECT_EQ(p.method, Method::kSimilarity);
  EXPECT_THAT(p.grid.batch_sizes, ElementsAre(1, 4, 8, 16, 32));
  EXPECT_THAT(p.grid.concurrencies, ElementsAre(1, 4));
  EXPECT_DOUBLE_EQ(p.duration_s, 5);
  EXPECT_DOUBLE_EQ(p.warmup_s, 1.5);
  EXPECT_EQ(p.sentence_tokens, 128);
  EXPECT_EQ(p.seed, 9u);
  EXPECT_EQ(p.timeout_ms, 1000);
  EXPECT_EQ(p.backoff_ms, 25);
  EXPECT_TRUE(file->warnings.empty());
  std::vector<GridPoint> points = p.Points();
  // 10 from the main grid, then (1,32) and (1,256): (1,4) was already swept.
  ASSERT_EQ(points.size(), 12u);
  EXPECT_EQ(points[0], (GridPoint{1, 1, 0}));
  EXPECT_EQ(points[1], (GridPoint{1, 4, 0}));
  EXPECT_EQ(points[2], (GridPoint{4, 1, 0}));
  EXPECT_EQ(points[10], (GridPoint{1, 32, 0}));
  EXPECT_EQ(points[11], (GridPoint{1, 256, 0}));
}

TEST(BenchmarkPlanTest, DefaultsWhenKeysAreMissingAndWarnsOnUnknownKeys) {
  auto file = Parse("benchmark:\n  batch_sizes: [2]\n  frobnicate: 3\n");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->host, "127.0.0.1");
  EXPECT_EQ(file->port, 50051);
  EXPECT_EQ(file->plan.method, Method::kSimilarity);
  EXPECT_THAT(file->plan.grid.concurrencies, ElementsAre(1));
  ASSERT_EQ(file->warnings.size(), 1u);
  EXPECT_THAT(file->warnings[0], HasSubstr("benchmark.frobnicate"));
}

TEST(BenchmarkPlanTest, OpenLoopPointsAreBatchTimesRate) {
  auto file = Parse(
      "benchmark:\n  batch_sizes: [1, 8]\n  rates_rps: [50, 100]\n  max_outstanding: 64\n");
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<GridPoint> points = file->plan.Points();
  ASSERT_EQ(points.size(), 4u);
  EXPECT_EQ(points[0], (GridPoint{1, 64, 50}));
  EXPECT_EQ(points[3], (GridPoint{8, 64, 100}));
}

TEST(BenchmarkPlanTest, RefusesGridsOfMoreThanMaxPointsEvenThroughAliases) {
  std::string list = "[1";
  for (int i = 2; i <= 100; ++i) list += ", " + std::to_string(i);
  list += "]";
  // 100 x 100 = kMaxPoints: allowed, and Points() returns each once.
  auto at_cap = Parse("benchmark:\n  batch_sizes: &l " + list + "\n  concurrencies: *l\n");
  ASSERT_TRUE(at_cap.ok()) << at_cap.status();
  EXPECT_EQ(at_cap->plan.Points().size(), BenchmarkPlan::kMaxPoints);
  // One extra grid through the same alias doubles it: refused before any is built.
  auto over = Parse("benchmark:\n  batch_sizes: &l " + list +
                    "\n  concurrencies: *l\n  extra_grids: [{batch_sizes: *l, "
                    "concurrencies: *l}]\n");
  ASSERT_FALSE(over.ok());
  EXPECT_THAT(over.status().message(),
              HasSubstr("the grids name 20000 points (batch sizes x concurrencies or rates); "
                        "at most 10000 are allowed"));
  auto rates = Parse("benchmark:\n  batch_sizes: &l " + list + "\n  rates_rps: [" +
                     list.substr(1, list.size() - 2) + ", 101]\n");
  ASSERT_FALSE(rates.ok());
  EXPECT_THAT(rates.status().message(), HasSubstr("the grids name 10100 points"));
}

TEST(BenchmarkPlanTest, BadValuesNameFieldAndValue) {
  struct Case {
    const char* yaml;
    const char* expect;
  } cases[] = {
      {"benchmark:\n  batch_sizes: [1, 0]\n", "benchmark.batch_sizes values must be >= 1; was 0"},
      {"benchmark:\n  batch_sizes: [a]\n", "benchmark.batch_sizes must be a list"},
      {"benchmark:\n  concurrencies: []\n", "benchmark.concurrencies must not be empty"},
      {"benchmark:\n  duration_s: -1\n", "benchmark.duration_s must be > 0; was -1"},
      {"benchmark:\n  duration_s: abc\n", "benchmark.duration_s must be a number"},
      {"benchmark:\n  warmup_s: -2\n", "benchmark.warmup_s must be >= 0; was -2"},
      {"benchmark:\n  method: predict\n", "method must be similarity or embed; was 'predict'"},
      {"benchmark:\n  sentence_length: 3\n", "fixed_tokens"},
      {"benchmark:\n  sentence_length: huge\n", "sentence_length must be short"},
      {"benchmark:\n  rates_rps: [0]\n", "benchmark.rates_rps values must be > 0; was 0"},
      {"benchmark:\n  extra_grids: [{batch_sizes: [1]}]\n", "benchmark.extra_grids[0]"},
      {"benchmark:\n  timeout_ms: 0\n", "benchmark.timeout_ms must be >= 1; was 0"},
      {"benchmark:\n  backoff_ms: -1\n", "benchmark.backoff_ms must be >= 0; was -1"},
      {"server:\n  port: 1\n", "has no benchmark: section"},
      {"benchmark: [1, 2\n", "not valid YAML"},
      {"- 1\n- 2\n", "top level must be a map"},
      // Found by client_input_fuzzer in CI: a non-scalar key threw past the parser.
      {"benchmark: {[1]: 2}\n", "keys must be plain names (batch_sizes, concurrencies, ...); found a list as a key"},
      {"benchmark: {? {a: 1} : 2}\n", "found a mapping as a key"},
  };
  for (const Case& c : cases) {
    auto file = Parse(c.yaml);
    ASSERT_FALSE(file.ok()) << c.yaml;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_THAT(file.status().message(), HasSubstr(c.expect)) << c.yaml;
  }
}

TEST(BenchmarkPlanTest, LoadsFileAndNamesExperimentAfterIt) {
  std::string path = ::testing::TempDir() + "/minilm_test.yaml";
  std::ofstream(path) << "benchmark:\n  method: embed\n";
  auto file = LoadExperimentFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->name, "minilm_test");
  EXPECT_EQ(file->plan.method, Method::kEmbed);
  auto missing = LoadExperimentFile("/nonexistent/x.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(BenchmarkPlanTest, ParsesFlagLists) {
  auto ints = ParsePositiveIntList("1, 4,256", "--batch-sizes");
  ASSERT_TRUE(ints.ok());
  EXPECT_THAT(*ints, ElementsAre(1, 4, 256));
  for (const char* bad : {"", "1,,2", "0", "-3", "2.5", "x"}) {
    auto r = ParsePositiveIntList(bad, "--batch-sizes");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("--batch-sizes"));
  }
  auto rates = ParsePositiveDoubleList("10,2.5", "--rates");
  ASSERT_TRUE(rates.ok());
  EXPECT_THAT(*rates, ElementsAre(10, 2.5));
  EXPECT_FALSE(ParsePositiveDoubleList("0", "--rates").ok());
}

TEST(BenchmarkPlanTest, ParsesSentenceLengthAndMethod) {
  EXPECT_EQ(*ParseSentenceLength("short"), 0);
  EXPECT_EQ(*ParseSentenceLength("long"), 128);
  EXPECT_EQ(*ParseSentenceLength("256"), 256);
  EXPECT_FALSE(ParseSentenceLength("0").ok());
  EXPECT_FALSE(ParseSentenceLength("2").ok());
  EXPECT_EQ(*ParseMethod("Embed"), Method::kEmbed);
  EXPECT_EQ(*ParseMethod("similarity"), Method::kSimilarity);
  EXPECT_FALSE(ParseMethod("").ok());
}

}  // namespace
}  // namespace client
}  // namespace embedserve
