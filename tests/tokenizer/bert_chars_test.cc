// The generated HF-compatibility table (src/tokenizer/hf_unicode_overrides.inc) and the
// character classes that use it.
#include "tokenizer/bert_chars.h"

#include <string>

#include "embedserve/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace tokenizer_internal {
namespace {

using ::testing::ElementsAre;

TEST(HfOverridesTest, SortedDisjointAndAboveFastPathCutoff) {
  ASSERT_GT(kNumHfOverrides, 0u);
  for (size_t i = 0; i < kNumHfOverrides; ++i) {
    const HfOverride& o = kHfOverrides[i];
    EXPECT_LE(o.first, o.last) << i;
    EXPECT_GE(o.first, 0x600u) << "FindHfOverride skips code points below U+0600";
    if (i > 0) EXPECT_GT(o.first, kHfOverrides[i - 1].last) << i;
  }
}

// The table was generated against libutf8proc's Unicode 15.0 categories. When libutf8proc
// is updated, this fails: regenerate the table with scripts/device/tokenizer_vs_hf.py.
TEST(HfOverridesTest, RecordedCategoriesMatchLibutf8proc) {
  SCOPED_TRACE(std::string("libutf8proc Unicode ") + utf8proc_unicode_version());
  for (size_t i = 0; i < kNumHfOverrides; ++i) {
    const HfOverride& o = kHfOverrides[i];
    for (char32_t c = o.first; c <= o.last; ++c) {
      ASSERT_EQ(Category(c), o.unicode_category) << "U+" << std::hex << static_cast<int>(c);
    }
  }
}

TEST(HfOverridesTest, LookupFindsRangesOnly) {
  for (size_t i = 0; i < kNumHfOverrides; ++i) {
    const HfOverride& o = kHfOverrides[i];
    EXPECT_EQ(FindHfOverride(o.first), &o);
    EXPECT_EQ(FindHfOverride(o.last), &o);
    if (o.first > 0x600 && (i == 0 || kHfOverrides[i - 1].last < o.first - 1)) {
      EXPECT_EQ(FindHfOverride(o.first - 1), nullptr);
    }
  }
  EXPECT_EQ(FindHfOverride('a'), nullptr);
  EXPECT_EQ(FindHfOverride(0x4E00), nullptr);
  EXPECT_EQ(FindHfOverride(0x10FFFF), nullptr);
}

TEST(BertCharsTest, ClassesWithoutOverride) {
  EXPECT_TRUE(IsWhitespace(0x3000));
  EXPECT_TRUE(IsWhitespace(0x2029));
  EXPECT_FALSE(IsWhitespace(0x200B));  // ZERO WIDTH SPACE is Cf, not White_Space
  EXPECT_TRUE(IsControl(0x200B));
  EXPECT_TRUE(IsControl(0x7F));
  EXPECT_FALSE(IsControl('\n'));
  EXPECT_FALSE(IsControl(0x378));      // unassigned (Cn) is not "other" for HF
  EXPECT_TRUE(IsPunctuation('~'));
  EXPECT_TRUE(IsPunctuation(0x3001));  // IDEOGRAPHIC COMMA (Po)
  EXPECT_FALSE(IsPunctuation(0x20AC)); // EURO SIGN (Sc)
  EXPECT_TRUE(IsNonSpacingMark(0x301));
  EXPECT_TRUE(IsChineseChar(0x4E00));
  EXPECT_FALSE(IsChineseChar(0xAC00)); // Hangul
}

// What HF does with characters its Unicode tables do not know (Unicode 15.0 says Po, Mn
// and Cf): ordinary word characters.
TEST(BertCharsTest, NewerCharactersAreOrdinaryLikeInHf) {
  auto tok = Tokenizer::Create(Tokenizer::Options{},
                               std::string(EMBEDSERVE_TEST_DATA_DIR) + "/tokenizer/vocab.txt");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // U+061D ARABIC END OF TEXT MARK (Po since Unicode 14): no split, one unknown word.
  EXPECT_THAT((*tok)->Encode("a\xD8\x9D" "b", 0)->ids, ElementsAre(101, 100, 102));
  // U+0890 ARABIC POUND MARK ABOVE (Cf since Unicode 14): kept, not dropped.
  EXPECT_THAT((*tok)->Encode("a\xE0\xA2\x90" "b", 0)->ids, ElementsAre(101, 100, 102));
  // U+08D4 ARABIC SMALL HIGH WORD AR-RUB (Mn since Unicode 9): kept, not stripped.
  EXPECT_THAT((*tok)->Encode("a\xE0\xA3\x94" "b", 0)->ids, ElementsAre(101, 100, 102));
  EXPECT_FALSE(IsPunctuation(0x61D));
  EXPECT_FALSE(IsControl(0x890));
  EXPECT_FALSE(IsNonSpacingMark(0x8D4));
}

}  // namespace
}  // namespace tokenizer_internal
}  // namespace embedserve
