#include "embedserve/client/sentence_generator.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "embedserve/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace client {
namespace {

// Common English words; every one is a whole-word token of the BERT uncased vocabulary
// (checked by SentenceGeneratorTest.BuiltInWordsAreWholeVocabularyTokens).
constexpr const char* kBuiltInWords[] = {
#include "builtin_words.inc"
};

// Log-normal of the content tokens (words + punctuation, without [CLS]/[SEP]):
// median 10.97, sigma 0.423 give mean ~12 and p95 ~22 content tokens, i.e. ~14 and
// ~24 with [CLS]/[SEP], the lengths the issue asks for (STS-like sentences).
constexpr double kShortLogMedian = 2.3951;  // ln(10.97)
constexpr double kShortLogSigma = 0.423;

constexpr int32_t kPeriod = -1;
constexpr int32_t kComma = -2;

bool IsWholeAsciiWord(const std::string& token) {
  if (token.size() < 3) return false;
  return std::all_of(token.begin(), token.end(),
                     [](char c) { return c >= 'a' && c <= 'z'; });
}

}  // namespace

int32_t ContentTokens(int32_t tokens) { return tokens - 2; }

absl::Status SentenceGenerator::Options::Validate() const {
  if (fixed_tokens != 0 &&
      (fixed_tokens < kMinTokens || fixed_tokens > kMaxFixedTokens)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sentence fixed_tokens must be 0 (realistic short) or in [",
                     kMinTokens, ", ", kMaxFixedTokens, "]; was ", fixed_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SentenceGenerator>> SentenceGenerator::Create(
    const Options& options) {
  ES_RETURN_IF_ERROR(options.Validate());
  std::vector<std::string> words(std::begin(kBuiltInWords), std::end(kBuiltInWords));
  if (!options.vocab_path.empty()) {
    std::ifstream in(options.vocab_path);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("cannot open vocabulary file '", options.vocab_path, "'"));
    }
    std::string line;
    std::vector<std::string> extra;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (IsWholeAsciiWord(line)) extra.push_back(line);
    }
    words.insert(words.end(), extra.begin(), extra.end());
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
  }
  return std::unique_ptr<SentenceGenerator>(
      new SentenceGenerator(options, std::move(words)));
}

SentenceGenerator::SentenceGenerator(const Options& options,
                                     std::vector<std::string> words)
    : options_(options), words_(std::move(words)), state_(options.seed) {}

uint64_t SentenceGenerator::NextRandom() {
  // splitmix64: small, fast, and the same stream on every platform (std::
  // distributions are not portable across standard libraries).
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double SentenceGenerator::NextUniform() {
  return static_cast<double>(NextRandom() >> 11) * (1.0 / 9007199254740992.0);
}

int32_t SentenceGenerator::DrawTokenCount() {
  if (options_.fixed_tokens != 0) return options_.fixed_tokens;
  // Box-Muller normal, then log-normal content length.
  double u1 = NextUniform();
  double u2 = NextUniform();
  if (u1 < 1e-300) u1 = 1e-300;
  double normal = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  double content = std::exp(kShortLogMedian + kShortLogSigma * normal);
  int32_t tokens = static_cast<int32_t>(std::lround(content)) + 2;
  return std::clamp(tokens, kMinTokens, kMaxShortTokens);
}

std::vector<int32_t> SentenceGenerator::DrawWords(int32_t content_tokens) {
  // A stream of words with a comma now and then and a period closing each sentence
  // of 8..27 content tokens; the last token is always a period.
  std::vector<int32_t> out;
  out.reserve(content_tokens);
  int32_t remaining = content_tokens;
  while (remaining > 0) {
    int32_t sentence = remaining;
    if (remaining > 30) {
      sentence = 8 + static_cast<int32_t>(NextRandom() % 20);
      if (remaining - sentence < 3) sentence = remaining;
    }
    int32_t words = sentence - 1;  // the period
    int32_t since_comma = 0;
    for (int32_t i = 0; i < words; ++i) {
      bool comma_allowed = since_comma >= 4 && i < words - 2;
      if (comma_allowed && NextUniform() < 0.12) {
        out.push_back(kComma);
        since_comma = 0;
        continue;
      }
      out.push_back(static_cast<int32_t>(NextRandom() % words_.size()));
      ++since_comma;
    }
    out.push_back(kPeriod);
    remaining -= sentence;
  }
  return out;
}

std::string SentenceGenerator::Render(const std::vector<int32_t>& word_ids) const {
  std::string text;
  bool capitalize = true;
  for (int32_t id : word_ids) {
    if (id == kPeriod || id == kComma) {
      text.push_back(id == kPeriod ? '.' : ',');
      capitalize = id == kPeriod;
      continue;
    }
    if (!text.empty()) text.push_back(' ');
    size_t start = text.size();
    text += words_[id];
    // The uncased tokenizer lowercases, so capitals do not change the token count.
    if (capitalize) {
      text[start] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[start])));
    }
    capitalize = false;
  }
  return text;
}

std::string SentenceGenerator::NextSentence(int32_t* tokens) {
  int32_t count = DrawTokenCount();
  if (tokens != nullptr) *tokens = count;
  return Render(DrawWords(ContentTokens(count)));
}

SentencePair SentenceGenerator::NextPair() {
  int32_t count_a = DrawTokenCount();
  std::vector<int32_t> a = DrawWords(ContentTokens(count_a));
  SentencePair pair;
  pair.text_a = Render(a);
  if (NextUniform() < 0.5) {
    std::vector<int32_t> b = a;
    std::vector<size_t> word_positions;
    bool changed = false;
    for (size_t k = 0; k < b.size(); ++k) {
      if (b[k] < 0) continue;
      word_positions.push_back(k);
      if (NextUniform() < 0.33) {
        int32_t id = static_cast<int32_t>(NextRandom() % words_.size());
        changed |= id != b[k];
        b[k] = id;
      }
    }
    if (!changed && !word_positions.empty()) {
      // A paraphrase differs from its source in at least one word.
      size_t k = word_positions[NextRandom() % word_positions.size()];
      b[k] = static_cast<int32_t>((b[k] + 1 + NextRandom() % (words_.size() - 1)) %
                                  words_.size());
    }
    pair.text_b = Render(b);
  } else {
    pair.text_b = NextSentence();
  }
  return pair;
}

absl::StatusOr<std::vector<SentencePair>> LoadPairsFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open pairs file '", path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParsePairs(text.str(), path);
}

absl::StatusOr<std::vector<SentencePair>> ParsePairs(const std::string& contents,
                                                     const std::string& path) {
  std::istringstream in(contents);
  std::vector<SentencePair> pairs;
  std::string line;
  int64_t line_number = 0;
  int json = -1;  // unknown until the first non-blank line
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (trimmed.empty() || trimmed[0] == '#') continue;
    if (json < 0) json = trimmed[0] == '{' ? 1 : 0;
    SentencePair pair;
    if (json == 1) {
      nlohmann::json value = nlohmann::json::parse(trimmed.begin(), trimmed.end(),
                                                   nullptr, /*allow_exceptions=*/false);
      if (value.is_discarded() || !value.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line_number, ": not a JSON object (JSON Lines pairs file)"));
      }
      auto a = value.find("text_a");
      auto b = value.find("text_b");
      if (a == value.end() || b == value.end() || !a->is_string() || !b->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line_number,
            ": needs string fields \"text_a\" and \"text_b\""));
      }
      pair.text_a = a->get<std::string>();
      pair.text_b = b->get<std::string>();
    } else {
      std::vector<std::string> fields = absl::StrSplit(line, '\t');
      if (fields.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line_number, ": a TSV pairs line needs exactly 2 tab-separated "
            "fields (text_a, text_b); had ", fields.size()));
      }
      pair.text_a = std::move(fields[0]);
      pair.text_b = std::move(fields[1]);
    }
    pairs.push_back(std::move(pair));
  }
  if (pairs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("pairs file '", path, "' holds no pairs"));
  }
  return pairs;
}

}  // namespace client
}  // namespace embedserve
