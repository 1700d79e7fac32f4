#include "embedserve/client/result_writer.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace client {
namespace {

using ::testing::HasSubstr;

PointResult SampleResult() {
  PointResult r;
  r.method = Method::kSimilarity;
  r.point = GridPoint{32, 4, 0};
  r.measured_s = 10;
  r.requests_ok = 150;
  r.requests_failed = 3;
  r.items_ok = 4800;
  r.errors = {{"RESOURCE_EXHAUSTED", 2}, {"DEADLINE_EXCEEDED", 1}};
  r.requests_per_s = 15;
  r.items_per_s = 480;
  r.latency = LatencySummary{150, 66.5, 65.25, 80.125, 90, 101};
  r.stages = StageMeans{150, 300, 1200, 60000, 62000, 4500};
  r.tokens_per_item = 13.9;
  r.client_cpu_pct = 2.5;
  return r;
}

TEST(ResultWriterTest, CsvRowHasOneFieldPerHeaderColumn) {
  std::vector<std::string> header = absl::StrSplit(CsvHeader(), ',');
  std::vector<std::string> row = absl::StrSplit(CsvRow("minilm_baseline", SampleResult()), ',');
  ASSERT_EQ(header.size(), row.size());
  auto field = [&](const std::string& name) {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return row[i];
    }
    ADD_FAILURE() << "no column " << name;
    return std::string();
  };
  EXPECT_EQ(field("experiment"), "minilm_baseline");
  EXPECT_EQ(field("method"), "similarity");
  EXPECT_EQ(field("batch_size"), "32");
  EXPECT_EQ(field("concurrency"), "4");
  EXPECT_EQ(field("requests_ok"), "150");
  EXPECT_EQ(field("items_ok"), "4800");
  EXPECT_EQ(field("items_per_s"), "480.000");
  EXPECT_EQ(field("lat_p95_ms"), "80.125");
  EXPECT_EQ(field("inference_us"), "60000.0");
  EXPECT_EQ(field("rest_us"), "4500.0");
  EXPECT_EQ(field("errors"), "DEADLINE_EXCEEDED:1;RESOURCE_EXHAUSTED:2");
}

TEST(ResultWriterTest, CsvQuotesAnExperimentNameWithAComma) {
  std::string row = CsvRow("a,b", SampleResult());
  EXPECT_EQ(row.rfind("\"a,b\",similarity,", 0), 0u) << row;
}

TEST(ResultWriterTest, JsonRoundTrips) {
  RunInfo info = {{"experiment", "e1"}, {"model.precision", "fp32"}};
  std::string text = ResultsToJson(info, {SampleResult(), SampleResult()});
  nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["run"]["experiment"], "e1");
  EXPECT_EQ(j["run"]["model.precision"], "fp32");
  ASSERT_EQ(j["points"].size(), 2u);
  const nlohmann::json& p = j["points"][0];
  EXPECT_EQ(p["batch_size"], 32);
  EXPECT_EQ(p["mode"], "closed");
  EXPECT_EQ(p["item"], "pairs");
  EXPECT_EQ(p["errors"]["RESOURCE_EXHAUSTED"], 2);
  EXPECT_DOUBLE_EQ(p["latency_ms"]["p99"].get<double>(), 90);
  EXPECT_DOUBLE_EQ(p["server_us"]["queue"].get<double>(), 1200);
  EXPECT_DOUBLE_EQ(p["items_per_s"].get<double>(), 480);
}

TEST(ResultWriterTest, WriteFileReportsUnwritablePath) {
  std::string path = ::testing::TempDir() + "/out.csv";
  ASSERT_TRUE(WriteFile(path, "x\n").ok());
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(), "x\n");
  absl::Status bad = WriteFile("/nonexistent/dir/out.csv", "x");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(bad.message(), HasSubstr("/nonexistent/dir/out.csv"));
}

}  // namespace
}  // namespace client
}  // namespace embedserve
