// One test per tokenizer rule (normalization, pre-tokenization, WordPiece, special tokens,
// truncation, batching) and for every error. Expected ids are looked up by token text in
// the vocabulary, never hard-coded, except the published check "i like strawberries".
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "embedserve/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace embedserve {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

const std::string kData = EMBEDSERVE_TEST_DATA_DIR;

std::unique_ptr<Tokenizer> RealTokenizer(Tokenizer::Options options = {}) {
  auto tok = Tokenizer::Create(options, kData + "/tokenizer/vocab.txt");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// Writes `lines` as a vocabulary file in the test's temp dir and returns its path.
std::string WriteVocab(const std::string& name, const std::vector<std::string>& lines) {
  const std::string path = testing::TempDir() + "/" + name;
  std::ofstream out(path, std::ios::binary);
  for (const auto& l : lines) out << l << "\n";
  return path;
}

// A tiny vocabulary for rules the real one cannot show (cased tokens, accents kept).
std::unique_ptr<Tokenizer> TinyTokenizer(Tokenizer::Options options,
                                         const std::vector<std::string>& extra) {
  std::vector<std::string> lines = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  lines.insert(lines.end(), extra.begin(), extra.end());
  auto tok = Tokenizer::Create(options, WriteVocab("tiny_vocab.txt", lines));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override { tok_ = RealTokenizer(); ASSERT_NE(tok_, nullptr); }

  // [CLS] + the ids of `tokens` (each must be in the vocabulary) + [SEP].
  std::vector<int32_t> Ids(const std::vector<std::string>& tokens) const {
    std::vector<int32_t> ids = {tok_->cls_id()};
    for (const auto& t : tokens) {
      const int32_t id = tok_->TokenToId(t);
      EXPECT_GE(id, 0) << "'" << t << "' not in vocab";
      ids.push_back(id);
    }
    ids.push_back(tok_->sep_id());
    return ids;
  }
  std::vector<int32_t> Enc(const std::string& text, int64_t max_length = 0) const {
    auto enc = tok_->Encode(text, max_length);
    EXPECT_TRUE(enc.ok()) << enc.status();
    return enc.ok() ? enc->ids : std::vector<int32_t>{};
  }

  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(TokenizerTest, KnownVocabularyChecks) {
  EXPECT_EQ(tok_->vocab_size(), 30522);
  EXPECT_EQ(tok_->cls_id(), 101);
  EXPECT_EQ(tok_->sep_id(), 102);
  EXPECT_EQ(tok_->pad_id(), 0);
  EXPECT_EQ(tok_->unk_id(), 100);
  EXPECT_THAT(Enc("i like strawberries"), ElementsAre(101, 1045, 2066, 13137, 20968, 102));
}

TEST_F(TokenizerTest, EmptyAndBlankTextGiveClsSep) {
  EXPECT_THAT(Enc(""), ElementsAre(101, 102));
  EXPECT_THAT(Enc(" \t\n\r  "), ElementsAre(101, 102));
}

TEST_F(TokenizerTest, LowercasesAscii) { EXPECT_EQ(Enc("HeLLo WORLD"), Ids({"hello", "world"})); }

TEST_F(TokenizerTest, LowercasesNonAscii) {
  EXPECT_EQ(Enc("ΑΘΗΝΑ"), Enc("αθηνα"));
  EXPECT_EQ(Enc("МОСКВА"), Enc("москва"));
}

TEST_F(TokenizerTest, StripsAccentsWhenLowercasing) {
  EXPECT_EQ(Enc("Café"), Ids({"cafe"}));
  EXPECT_EQ(Enc("cafe\xCC\x81"), Ids({"cafe"}));  // already decomposed: e + U+0301
  EXPECT_EQ(Enc("NAÏVE"), Ids({"naive"}));
}

TEST(TokenizerRuleTest, StripAccentsUnsetFollowsLowercase) {
  Tokenizer::Options cased;
  cased.lowercase = false;
  auto tok = TinyTokenizer(cased, {"Café", "Cafe", "cafe"});
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("Café", 0)->ids, ElementsAre(2, tok->TokenToId("Café"), 3));
  cased.strip_accents = true;
  tok = TinyTokenizer(cased, {"Café", "Cafe", "cafe"});
  EXPECT_THAT(tok->Encode("Café", 0)->ids, ElementsAre(2, tok->TokenToId("Cafe"), 3));
  Tokenizer::Options lower_keep_accents;
  lower_keep_accents.strip_accents = false;
  tok = TinyTokenizer(lower_keep_accents, {"Café", "café", "cafe"});
  EXPECT_THAT(tok->Encode("CAFÉ", 0)->ids, ElementsAre(2, tok->TokenToId("café"), 3));
}

TEST(TokenizerRuleTest, DottedCapitalIUsesFullLowercaseMapping) {
  // Rust's char::to_lowercase maps U+0130 to "i" + U+0307 (two characters).
  Tokenizer::Options options;
  options.strip_accents = false;
  auto tok = TinyTokenizer(options, {"i", "##\xCC\x87", "i\xCC\x87"});
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("\xC4\xB0", 0)->ids, ElementsAre(2, tok->TokenToId("i\xCC\x87"), 3));
  // With accents stripped, NFD runs first: I + U+0307 -> "I" -> "i".
  auto stripping = TinyTokenizer(Tokenizer::Options{}, {"i"});
  EXPECT_THAT(stripping->Encode("\xC4\xB0", 0)->ids, ElementsAre(2, stripping->TokenToId("i"), 3));
}

TEST_F(TokenizerTest, CleanTextDropsNulReplacementAndControls) {
  const std::vector<int32_t> hello = Ids({"hello"});
  EXPECT_EQ(Enc(std::string("hel\0lo", 6)), hello);  // U+0000
  EXPECT_EQ(Enc("hel\xEF\xBF\xBDlo"), hello);        // U+FFFD
  EXPECT_EQ(Enc("hel\x07lo"), hello);                // Cc
  EXPECT_EQ(Enc("hel\x0Blo"), hello);                // \v is Cc: dropped, not a space
  EXPECT_EQ(Enc("hel\xE2\x80\x8Dlo"), hello);        // U+200D ZWJ (Cf)
  EXPECT_EQ(Enc("hel\xC2\xADlo"), hello);            // U+00AD soft hyphen (Cf)
  EXPECT_EQ(Enc("hel\xEE\x80\x80lo"), hello);        // U+E000 private use (Co)
  // Unassigned (Cn) code points are not "other" for HF: U+0378 stays, the word is unknown.
  EXPECT_THAT(Enc("hel\xCD\xB8lo"), ElementsAre(101, 100, 102));
}

TEST_F(TokenizerTest, CleanTextTurnsWhitespaceIntoSpaces) {
  const std::vector<int32_t> two = Ids({"hello", "world"});
  EXPECT_EQ(Enc("hello\tworld"), two);
  EXPECT_EQ(Enc("hello\r\nworld"), two);
  EXPECT_EQ(Enc("hello\xC2\xA0world"), two);      // U+00A0 (Zs)
  EXPECT_EQ(Enc("hello\xE3\x80\x80world"), two);  // U+3000 ideographic space
  EXPECT_EQ(Enc("hello\xE2\x80\xA8world"), two);  // U+2028 line separator (Zl)
}

TEST(TokenizerRuleTest, WithoutCleanTextControlsStayInWords) {
  Tokenizer::Options options;
  options.clean_text = false;
  auto tok = TinyTokenizer(options, {"ab", "a", "##b"});
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("a\x07" "b", 0)->ids, ElementsAre(2, tok->unk_id(), 3));
  EXPECT_THAT(tok->Encode("ab", 0)->ids, ElementsAre(2, tok->TokenToId("ab"), 3));
}

TEST_F(TokenizerTest, ChineseCharactersBecomeSeparateWords) {
  // Written together they split into one word per ideograph, like with spaces.
  EXPECT_EQ(Enc("\xE4\xBD\xA0\xE5\xA5\xBD"), Enc("\xE4\xBD\xA0 \xE5\xA5\xBD"));
  EXPECT_EQ(Enc("ab\xE4\xBD\xA0"), Enc("ab \xE4\xBD\xA0"));
  // Hangul and kana are not in the CJK ideograph blocks: no split.
  EXPECT_NE(Enc("\xE3\x81\x82\xE3\x81\x84"), Enc("\xE3\x81\x82 \xE3\x81\x84"));
}

TEST(TokenizerRuleTest, ChineseHandlingCanBeTurnedOff) {
  Tokenizer::Options options;
  options.handle_chinese_chars = false;
  auto tok = TinyTokenizer(options, {"\xE4\xBD\xA0", "\xE5\xA5\xBD", "##\xE5\xA5\xBD"});
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("\xE4\xBD\xA0\xE5\xA5\xBD", 0)->ids,
              ElementsAre(2, tok->TokenToId("\xE4\xBD\xA0"), tok->TokenToId("##\xE5\xA5\xBD"), 3));
}

TEST_F(TokenizerTest, HangulSyllablesDecomposeToJamo) {
  // NFD (strip_accents) turns U+D55C into U+1112 U+1161 U+11AB.
  EXPECT_EQ(Enc("\xED\x95\x9C"), Ids({"\xE1\x84\x92", "##\xE1\x85\xA1", "##\xE1\x86\xAB"}));
}

TEST_F(TokenizerTest, SplitsOnAsciiPunctuation) {
  EXPECT_EQ(Enc("hello,world!"), Ids({"hello", ",", "world", "!"}));
  EXPECT_EQ(Enc("a$b^c`d~e"), Ids({"a", "$", "b", "^", "c", "`", "d", "~", "e"}));
  EXPECT_EQ(Enc("..."), Ids({".", ".", "."}));
}

TEST_F(TokenizerTest, SplitsOnUnicodePunctuationButNotSymbols) {
  EXPECT_EQ(Enc("\xC2\xBFqu\xC3\xA9?"), Ids({"\xC2\xBF", "que", "?"}));   // U+00BF (Po)
  EXPECT_EQ(Enc("\xE2\x80\x9Chi\xE2\x80\x9D"), Ids({"\xE2\x80\x9C", "hi", "\xE2\x80\x9D"}));
  // U+20AC EURO SIGN is Sc (a symbol): it stays inside the word.
  const int32_t euro = tok_->TokenToId("\xE2\x82\xAC");
  ASSERT_GE(euro, 0);
  EXPECT_NE(Enc("5\xE2\x82\xAC"), Enc("5 \xE2\x82\xAC"));
}

TEST_F(TokenizerTest, WordPieceGreedyLongestMatch) {
  EXPECT_EQ(Enc("strawberries"), Ids({"straw", "##berries"}));
  const std::vector<int32_t> ids = Enc("tokenization");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids[1], tok_->TokenToId("token"));
}

TEST(TokenizerRuleTest, UnmatchableWordBecomesOneUnk) {
  auto tok = TinyTokenizer(Tokenizer::Options{}, {"a", "##a", "b"});
  ASSERT_NE(tok, nullptr);
  // "ab": "a" matches, "##b" does not: the whole word is [UNK], not "a [UNK]".
  EXPECT_THAT(tok->Encode("ab b aa", 0)->ids,
              ElementsAre(2, tok->unk_id(), tok->TokenToId("b"), tok->TokenToId("a"),
                          tok->TokenToId("##a"), 3));
}

TEST(TokenizerRuleTest, WordLongerThanMaxCharsBecomesUnk) {
  // Counted in characters after normalization: 2-byte characters must not count double.
  auto tok = TinyTokenizer(Tokenizer::Options{}, {"\xD0\xB6", "##\xD0\xB6"});
  ASSERT_NE(tok, nullptr);
  std::string hundred;
  for (int i = 0; i < 100; ++i) hundred += "\xD0\xB6";
  auto ok = tok->Encode(hundred, 0);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->ids.size(), 102u);
  auto unk = tok->Encode(hundred + "\xD0\xB6", 0);
  EXPECT_THAT(unk->ids, ElementsAre(2, tok->unk_id(), 3));
  Tokenizer::Options small;
  small.max_input_chars_per_word = 3;
  tok = TinyTokenizer(small, {"\xD0\xB6", "##\xD0\xB6"});
  EXPECT_EQ(tok->Encode("\xD0\xB6\xD0\xB6\xD0\xB6", 0)->ids.size(), 5u);
  EXPECT_THAT(tok->Encode("\xD0\xB6\xD0\xB6\xD0\xB6\xD0\xB6", 0)->ids,
              ElementsAre(2, tok->unk_id(), 3));
}

TEST_F(TokenizerTest, SpecialTokensInTextAreKeptWhole) {
  EXPECT_EQ(Enc("hello [SEP] world"),
            (std::vector<int32_t>{101, tok_->TokenToId("hello"), 102, tok_->TokenToId("world"), 102}));
  EXPECT_EQ(Enc("a[MASK]b"), (std::vector<int32_t>{101, tok_->TokenToId("a"), tok_->TokenToId("[MASK]"),
                                                   tok_->TokenToId("b"), 102}));
  // Case-sensitive and not normalized: "[sep]" is three ordinary tokens.
  EXPECT_EQ(Enc("[sep]"), Ids({"[", "sep", "]"}));
  Tokenizer::Options off;
  off.match_special_tokens_in_text = false;
  auto plain = RealTokenizer(off);
  EXPECT_EQ(plain->Encode("[SEP]", 0)->ids, Ids({"[", "sep", "]"}));
}

TEST_F(TokenizerTest, TruncationKeepsSep) {
  const std::string text = "one two three four five six seven";
  const std::vector<int32_t> full = Enc(text);
  ASSERT_EQ(full.size(), 9u);
  auto cut = tok_->Encode(text, 5);
  ASSERT_TRUE(cut.ok());
  EXPECT_THAT(cut->ids, ElementsAre(101, full[1], full[2], full[3], 102));
  EXPECT_EQ(cut->untruncated_length, 9);
  EXPECT_THAT(tok_->Encode(text, 2)->ids, ElementsAre(101, 102));
  EXPECT_EQ(tok_->Encode(text, 9)->ids, full);
  EXPECT_EQ(tok_->Encode(text, 100)->ids, full);
}

TEST_F(TokenizerTest, RejectsBadMaxLength) {
  for (int64_t bad : {int64_t{1}, int64_t{-1}, int64_t{-100}}) {
    auto enc = tok_->Encode("hello", bad);
    ASSERT_FALSE(enc.ok()) << bad;
    EXPECT_EQ(enc.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(enc.status().message(), HasSubstr("max_length"));
  }
}

struct BadUtf8 {
  std::string text;
  int byte;
  const char* what;
};

TEST_F(TokenizerTest, InvalidUtf8IsAnErrorNamingTheByte) {
  const BadUtf8 cases[] = {
      {"ab\xFF", 2, "invalid leading byte"},
      {"\x80" "abc", 0, "unexpected continuation byte"},
      {"abc\xC3", 3, "truncated"},
      {"x\xC0\xAF", 1, "overlong"},
      {"xy\xE0\x80\xAF", 2, "overlong"},
      {"\xED\xA0\x80", 0, "surrogate"},
      {"caf\xF4\x90\x80\x80", 3, "above U+10FFFF"},
      {"h\xC3(", 1, "continuation"},
      {"\xE4\xBD\xA0\xE4\xBD", 3, "truncated"},
  };
  for (const auto& c : cases) {
    auto enc = tok_->Encode(c.text, 0);
    ASSERT_FALSE(enc.ok()) << c.what;
    EXPECT_EQ(enc.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(enc.status().message(),
                HasSubstr("invalid UTF-8 at byte " + std::to_string(c.byte) + ":"));
    EXPECT_THAT(enc.status().message(), HasSubstr(c.what));
  }
}

TEST_F(TokenizerTest, ConcurrentEncodesAgree) {
  const std::vector<std::string> texts = {"The quick brown fox.", "Caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD!",
                                          "ΑΘΗΝΑ [SEP] strawberries", "x\xCC\x81\xCC\xA3y"};
  std::vector<std::vector<int32_t>> want;
  for (const auto& t : texts) want.push_back(Enc(t));
  for (int threads : {2, 4, 8}) {
    std::vector<std::thread> pool;
    std::vector<int> bad(threads, 0);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < 200; ++i) {
          const size_t k = (i + t) % texts.size();
          auto enc = tok_->Encode(texts[k], 0);
          if (!enc.ok() || enc->ids != want[k]) ++bad[t];
        }
      });
    }
    for (auto& th : pool) th.join();
    for (int t = 0; t < threads; ++t) EXPECT_EQ(bad[t], 0) << threads << " threads, thread " << t;
  }
}

TEST(TokenizerCreateTest, MissingVocabIsNotFound) {
  auto tok = Tokenizer::Create(Tokenizer::Options{}, "/nonexistent/vocab.txt");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr("/nonexistent/vocab.txt"));
}

TEST(TokenizerCreateTest, EmptyVocabIsInvalid) {
  auto tok = Tokenizer::Create(Tokenizer::Options{}, WriteVocab("empty_vocab.txt", {}));
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr("is empty"));
}

TEST(TokenizerCreateTest, SpecialTokenMissingFromVocab) {
  auto tok = Tokenizer::Create(Tokenizer::Options{},
                               WriteVocab("no_cls.txt", {"[PAD]", "[UNK]", "[SEP]", "a"}));
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr("cls_token '[CLS]' is not in the vocabulary"));
}

TEST(TokenizerCreateTest, OptionsValidateNamesFieldRuleAndValue) {
  Tokenizer::Options o;
  o.max_input_chars_per_word = 0;
  EXPECT_EQ(o.Validate().message(), "tokenizer.max_input_chars_per_word must be >= 1; was 0");
  o = {};
  o.model_max_length = 1;
  EXPECT_EQ(o.Validate().message(), "tokenizer.model_max_length must be >= 2; was 1");
  o = {};
  o.sep_token = "";
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("tokenizer.sep_token must not be empty"));
  o = {};
  EXPECT_TRUE(o.Validate().ok());
  o.max_input_chars_per_word = -5;
  auto tok = Tokenizer::Create(o, kData + "/tokenizer/vocab.txt");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
}

std::string MakeModelDir(const std::string& name, const std::string& tokenizer_json,
                         const std::string& config_json) {
  const std::string dir = testing::TempDir() + "/" + name;
  std::string cmd = "mkdir -p '" + dir + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream src(kData + "/tokenizer/vocab.txt", std::ios::binary);
  std::ofstream(dir + "/vocab.txt", std::ios::binary) << src.rdbuf();
  if (!tokenizer_json.empty()) std::ofstream(dir + "/tokenizer.json") << tokenizer_json;
  if (!config_json.empty()) std::ofstream(dir + "/tokenizer_config.json") << config_json;
  return dir;
}

TEST(TokenizerModelDirTest, ReadsReferenceFolder) {
  auto tok = Tokenizer::FromModelDir(kData + "/tokenizer");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto& o = (*tok)->options();
  EXPECT_TRUE(o.lowercase);
  EXPECT_FALSE(o.strip_accents.has_value());
  EXPECT_TRUE(o.clean_text);
  EXPECT_TRUE(o.handle_chinese_chars);
  EXPECT_EQ(o.model_max_length, 256);
  EXPECT_EQ(o.truncation_max_length, 256);
  EXPECT_EQ(o.max_input_chars_per_word, 100);
}

TEST(TokenizerModelDirTest, TokenizerJsonSettingsApply) {
  const std::string dir = MakeModelDir(
      "cased_dir",
      R"({"normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": false,
          "strip_accents": null, "lowercase": false},
          "model": {"type": "WordPiece", "unk_token": "[UNK]", "max_input_chars_per_word": 7}})",
      R"({"do_lower_case": true, "model_max_length": 128, "cls_token": {"content": "[CLS]"}})");
  auto tok = Tokenizer::FromModelDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto& o = (*tok)->options();
  EXPECT_FALSE(o.lowercase);  // tokenizer.json wins over tokenizer_config.json
  EXPECT_FALSE(o.handle_chinese_chars);
  EXPECT_EQ(o.max_input_chars_per_word, 7);
  EXPECT_EQ(o.model_max_length, 128);
  // Cased: "Hello" is not in the uncased vocabulary.
  EXPECT_THAT((*tok)->Encode("Hello", 0)->ids, ElementsAre(101, 100, 102));
}

TEST(TokenizerModelDirTest, SpecialTokensMapOverridesTokenizerConfig) {
  const std::string dir = MakeModelDir("special_map", "", R"({"cls_token": "[unused5]"})");
  std::ofstream(dir + "/special_tokens_map.json")
      << R"({"cls_token": {"content": "[unused1]", "lstrip": false}, "sep_token": "[unused2]"})";
  auto tok = Tokenizer::FromModelDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->options().cls_token, "[unused1]");
  EXPECT_EQ((*tok)->options().sep_token, "[unused2]");
  // [unused1] and [unused2] are ids 2 and 3 of the BERT vocabulary.
  EXPECT_THAT((*tok)->Encode("i like strawberries", 0)->ids,
              ElementsAre(2, 1045, 2066, 13137, 20968, 3));

  std::ofstream(dir + "/special_tokens_map.json", std::ios::trunc) << R"({"unk_token": 7})";
  auto bad = Tokenizer::FromModelDir(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              AllOf(HasSubstr("special_tokens_map.json"), HasSubstr("unk_token")));
}

TEST(TokenizerModelDirTest, VocabOnlyFolderUsesDefaults) {
  auto tok = Tokenizer::FromModelDir(MakeModelDir("vocab_only", "", ""));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->options().model_max_length, 512);
  EXPECT_THAT((*tok)->Encode("i like strawberries", 0)->ids,
              ElementsAre(101, 1045, 2066, 13137, 20968, 102));
}

TEST(TokenizerModelDirTest, Errors) {
  auto missing = Tokenizer::FromModelDir("/nonexistent/model");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/model/vocab.txt"));

  auto malformed = Tokenizer::FromModelDir(MakeModelDir("malformed", "{not json", ""));
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(malformed.status().message(), HasSubstr("tokenizer.json"));

  auto wrong_type = Tokenizer::FromModelDir(
      MakeModelDir("wrong_type", R"({"normalizer": {"type": "BertNormalizer", "lowercase": "yes"}})", ""));
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_THAT(wrong_type.status().message(), HasSubstr("\"lowercase\" has the wrong type"));

  auto other_model = Tokenizer::FromModelDir(
      MakeModelDir("bpe", R"({"model": {"type": "BPE"}})", ""));
  ASSERT_FALSE(other_model.ok());
  EXPECT_THAT(other_model.status().message(), HasSubstr("model type must be WordPiece"));
}

}  // namespace
}  // namespace embedserve
