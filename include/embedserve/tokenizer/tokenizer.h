// The first pipeline stage: text -> BERT WordPiece token ids, exactly as the Hugging Face
// fast BERT tokenizer (BertNormalizer + BertPreTokenizer + WordPiece + BertProcessing)
// returns them. Immutable after Create/FromModelDir: every const method is safe to call
// from any thread at the same time (per-thread scratch buffers, no shared mutable state).
#ifndef EMBEDSERVE_TOKENIZER_TOKENIZER_H_
#define EMBEDSERVE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "embedserve/common/token_ids.h"

namespace embedserve {

// One tokenized text.
struct Encoding {
  TokenIds ids;                     // [CLS] wordpieces [SEP]; truncated when max_length > 0
  int64_t untruncated_length = 0;   // ids before truncation, [CLS]/[SEP] included
};

class Tokenizer {
 public:
  struct Options {
    // Lowercase every character (Rust char::to_lowercase, so U+0130 -> "i" U+0307).
    // all-MiniLM-L6-v2 / bert-base-uncased: true. Set false for cased vocabularies.
    bool lowercase = true;
    // NFD, then drop non-spacing marks (Mn). Unset: follows `lowercase` (HF semantics).
    std::optional<bool> strip_accents;
    // Put spaces around CJK ideographs so each becomes its own word.
    bool handle_chinese_chars = true;
    // Drop U+0000, U+FFFD and control characters (Cc/Cf/Co except \t\n\r); turn every
    // whitespace character into a space.
    bool clean_text = true;
    // A word longer than this many characters (after normalization) becomes unk_token.
    int max_input_chars_per_word = 100;
    std::string unk_token = "[UNK]", cls_token = "[CLS]", sep_token = "[SEP]", pad_token = "[PAD]";
    // Longest sequence the model accepts ([CLS]/[SEP] included). Informational for the
    // callers (Encode takes its own max_length); tokenizer_config.json sets it.
    int64_t model_max_length = 512;
    // Prefix that marks a word-continuation piece in the vocabulary.
    std::string continuing_subword_prefix = "##";
    // Mask token: like the other special tokens it is matched in the raw text when present
    // in the vocabulary. Empty: none.
    std::string mask_token = "[MASK]";
    // HF's default (split_special_tokens=False): a special token typed in the input text,
    // e.g. "a [SEP] b", is kept whole and maps to its id, before any normalization.
    bool match_special_tokens_in_text = true;
    // Further tokens matched whole in the raw text (tokenizer.json "added_tokens" that are
    // not normalized). Each must be in the vocabulary.
    std::vector<std::string> additional_special_tokens;
    // tokenizer.json "truncation.max_length" when the folder has one, else 0.
    // Informational: the serving config decides what max_length to pass to Encode.
    int64_t truncation_max_length = 0;

    absl::Status Validate() const;
  };

  // Loads `vocab_path` (one token per line, id = line number from 0). Returns NOT_FOUND
  // when the file cannot be opened, INVALID_ARGUMENT when it is empty, when options are
  // invalid or when a special token is not in the vocabulary.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const Options& options,
                                                           const std::string& vocab_path);

  // <dir>/vocab.txt plus, when present, tokenizer.json (normalizer: lowercase, strip_accents,
  // handle_chinese_chars, clean_text; truncation) and tokenizer_config.json (do_lower_case,
  // model_max_length, special tokens). Missing vocab.txt: NOT_FOUND naming the path.
  // Malformed or unsupported JSON: INVALID_ARGUMENT naming the file.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromModelDir(const std::string& dir);

  // Reads the settings of FromModelDir without loading the vocabulary.
  static absl::StatusOr<Options> OptionsFromModelDir(const std::string& dir);

  // max_length 0: no truncation; else at most max_length ids, always ending in [SEP]
  // (max_length must be >= 2, else INVALID_ARGUMENT). Invalid UTF-8: INVALID_ARGUMENT
  // "invalid UTF-8 at byte N: ...".
  absl::StatusOr<Encoding> Encode(absl::string_view text, int64_t max_length) const;

  // Appends the wordpiece ids of `text` (no [CLS]/[SEP], no truncation) to `*ids`.
  // Allocation-free when `*ids` has room. Same errors as Encode; on error `*ids` may hold
  // a partial result.
  absl::Status AppendWordPieceIds(absl::string_view text, TokenIds* ids) const;

  // OK when `text` is valid UTF-8, else INVALID_ARGUMENT "invalid UTF-8 at byte N: ..."
  // (the message Encode gives). Safe from any thread.
  static absl::Status CheckUtf8(absl::string_view text);

  const Options& options() const { return options_; }
  int64_t vocab_size() const { return vocab_size_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  // Id of `token` as written in the vocabulary file, or -1.
  int32_t TokenToId(absl::string_view token) const;

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  ~Tokenizer();

  // Implementation details below.
 private:
  struct SpecialToken {
    std::string text;
    int32_t id;
  };
  class Pipeline;

  Tokenizer() = default;
  absl::Status LoadVocab(const std::string& vocab_path);

  Options options_;
  bool strip_accents_ = true;
  int64_t vocab_size_ = 0;
  int32_t cls_id_ = -1, sep_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  std::string vocab_text_;  // the file's bytes; the maps' keys point into it
  // Whole-word pieces, and continuation pieces keyed without their prefix.
  absl::flat_hash_map<absl::string_view, int32_t> word_start_;
  absl::flat_hash_map<absl::string_view, int32_t> word_continuation_;
  absl::flat_hash_map<absl::string_view, int32_t> all_tokens_;
  size_t max_piece_bytes_ = 0;  // longest key in the two maps
  std::vector<SpecialToken> special_tokens_;  // longest first
  bool special_first_byte_[256] = {};
  // ASCII fast path: what each byte does (word byte, space, punctuation, drop) and what it
  // becomes (lowercased), precomputed from the options.
  uint8_t ascii_action_[128] = {};
  char ascii_mapped_[128] = {};
};

}  // namespace embedserve

#endif  // EMBEDSERVE_TOKENIZER_TOKENIZER_H_
