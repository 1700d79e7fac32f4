// Benchmark input data: a seeded generator of English-like sentence pairs whose length
// in BERT tokens is controlled (realistic short sentences, or fixed long ones), and a
// loader for pair files (TSV or JSON Lines). Feeds embedserve-bench's request pools.
// Thread-safety: a SentenceGenerator is not thread-safe (it owns its random state);
// LoadPairsFile is safe from any thread.
#ifndef EMBEDSERVE_CLIENT_SENTENCE_GENERATOR_H_
#define EMBEDSERVE_CLIENT_SENTENCE_GENERATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace embedserve {
namespace client {

struct SentencePair {
  std::string text_a;
  std::string text_b;
};

// Every generated word is a whole-word token of the BERT uncased vocabulary and every
// punctuation mark is one token, so the token count of a sentence ([CLS] and [SEP]
// included) is known exactly without a tokenizer.
class SentenceGenerator {
 public:
  struct Options {
    // Seed of the random stream; the same seed gives the same sentences.
    uint64_t seed = 42;
    // 0: realistic short sentences, token count drawn from a log-normal with mean ~14
    // and p95 ~24 ([CLS]/[SEP] included), between kMinTokens and kMaxShortTokens.
    // N >= kMinTokens: every sentence has exactly N tokens (long modes: 128, 256).
    int32_t fixed_tokens = 0;
    // Optional vocabulary file (one token per line, BERT vocab.txt): whole words of
    // 3+ lowercase ASCII letters are added to the built-in word list. Empty: the
    // built-in list of ~560 common English words only.
    std::string vocab_path;

    // Checks the fields; messages name the field, the rule and the value.
    absl::Status Validate() const;
  };

  static constexpr int32_t kMinTokens = 5;        // [CLS] word word . [SEP]
  static constexpr int32_t kMaxShortTokens = 64;  // cap of the realistic mode
  static constexpr int32_t kMaxFixedTokens = 4096;

  // Fails with INVALID_ARGUMENT for bad options, NOT_FOUND when vocab_path cannot be
  // read.
  static absl::StatusOr<std::unique_ptr<SentenceGenerator>> Create(const Options& options);

  SentenceGenerator(const SentenceGenerator&) = delete;
  SentenceGenerator& operator=(const SentenceGenerator&) = delete;

  // One sentence; `*tokens` (if not null) receives its token count with [CLS]/[SEP].
  std::string NextSentence(int32_t* tokens = nullptr);

  // A pair: half the time text_b rewrites text_a with about a third of its words
  // replaced (at least one: a near paraphrase), otherwise text_b is an independent
  // sentence.
  SentencePair NextPair();

  // The words sentences are built from (built-in list plus vocabulary words).
  const std::vector<std::string>& words() const { return words_; }

 private:
  SentenceGenerator(const Options& options, std::vector<std::string> words);
  int32_t DrawTokenCount();
  // Joins word indices (into words_) and punctuation marks into text.
  std::string Render(const std::vector<int32_t>& word_ids) const;
  std::vector<int32_t> DrawWords(int32_t content_tokens);
  uint64_t NextRandom();
  double NextUniform();  // [0, 1)

  Options options_;
  std::vector<std::string> words_;
  uint64_t state_;
};

// Content tokens (words + punctuation) a rendered sentence of `tokens` tokens holds.
// Exposed for tests.
int32_t ContentTokens(int32_t tokens);

// Reads pairs from `path`: JSON Lines (`{"text_a": "...", "text_b": "..."}` per line)
// when the first non-blank character is '{', else TSV (`text_a<TAB>text_b` per line).
// Blank lines and lines starting with '#' are skipped. Fails with NOT_FOUND when the
// file cannot be opened, INVALID_ARGUMENT (naming the line) for a malformed line, and
// INVALID_ARGUMENT when it holds no pairs.
absl::StatusOr<std::vector<SentencePair>> LoadPairsFile(const std::string& path);

// The same from the file's contents; `path` only names it in messages.
absl::StatusOr<std::vector<SentencePair>> ParsePairs(const std::string& contents,
                                                     const std::string& path);

}  // namespace client
}  // namespace embedserve

#endif  // EMBEDSERVE_CLIENT_SENTENCE_GENERATOR_H_
