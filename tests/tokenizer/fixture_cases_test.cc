// Exactness: every case of tests/data/tokenizer_cases.jsonl (made with the Hugging Face fast
// BERT tokenizer of all-MiniLM-L6-v2) must give exactly `ids` and, truncated to 256,
// exactly `ids_256`.
#include <fstream>
#include <string>
#include <vector>

#include "embedserve/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace {

const std::string kData = EMBEDSERVE_TEST_DATA_DIR;

struct Case {
  std::string text;
  std::vector<int32_t> ids, ids_256;
};

std::vector<Case> LoadCases() {
  std::vector<Case> cases;
  std::ifstream in(kData + "/tokenizer_cases.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    cases.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int32_t>>(),
                     j.at("ids_256").get<std::vector<int32_t>>()});
  }
  return cases;
}

TEST(TokenizerFixtureTest, MatchesReferenceOnFixtureCases) {
  auto tok = Tokenizer::FromModelDir(kData + "/tokenizer");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<Case> cases = LoadCases();
  ASSERT_EQ(cases.size(), 3000u);
  int mismatches = 0, mismatches_256 = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto full = (*tok)->Encode(c.text, 0);
    ASSERT_TRUE(full.ok()) << "case " << i << ": " << full.status();
    if (full->ids != c.ids) {
      if (++mismatches <= 10) {
        ADD_FAILURE() << "case " << i << " (line " << i + 1 << ") ids differ; text: " << c.text
                      << "\n expected: " << testing::PrintToString(c.ids)
                      << "\n actual:   " << testing::PrintToString(full->ids);
      }
    }
    EXPECT_EQ(full->untruncated_length, static_cast<int64_t>(c.ids.size())) << "case " << i;
    auto cut = (*tok)->Encode(c.text, 256);
    ASSERT_TRUE(cut.ok()) << "case " << i << ": " << cut.status();
    if (cut->ids != c.ids_256) ++mismatches_256;
    EXPECT_EQ(cut->untruncated_length, static_cast<int64_t>(c.ids.size())) << "case " << i;
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size();
  EXPECT_EQ(mismatches_256, 0) << "of " << cases.size();
}

}  // namespace
}  // namespace embedserve
