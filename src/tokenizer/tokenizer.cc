// BERT WordPiece tokenizer: normalization, pre-tokenization and WordPiece in one streaming
// pass over the UTF-8 input. ASCII bytes take a table-driven fast path; other characters go
// through libutf8proc. See docs/tokenizer.md for the rules and how they match HF.
#include "embedserve/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "embedserve/common/status_macros.h"
#include "tokenizer/bert_chars.h"
#include "tokenizer/utf8.h"

namespace embedserve {

using tokenizer_internal::AppendUtf8;
using tokenizer_internal::CombiningClass;
using tokenizer_internal::DecodeUtf8NonAscii;
using tokenizer_internal::IsChineseChar;
using tokenizer_internal::IsControl;
using tokenizer_internal::IsNonSpacingMark;
using tokenizer_internal::IsPunctuation;
using tokenizer_internal::IsWhitespace;
using tokenizer_internal::Utf8Char;

namespace {

// What the ASCII fast path does with one byte (after clean_text and lowercase).
enum AsciiAction : uint8_t { kWordByte = 0, kSpace = 1, kPunct = 2, kDrop = 3 };

inline bool IsUtf8Continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Per-thread buffers reused across calls, so encoding allocates nothing per token.
struct Scratch {
  std::string word;                // normalized bytes of the word being built
  std::vector<char32_t> pending;   // NFD: non-starters awaiting canonical ordering
};

absl::Status Utf8Error(ptrdiff_t offset, const char* what, unsigned char byte) {
  return absl::InvalidArgumentError(
      absl::StrFormat("invalid UTF-8 at byte %d: %s (0x%02X)", offset, what, byte));
}

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

absl::Status Tokenizer::Options::Validate() const {
  if (max_input_chars_per_word < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.max_input_chars_per_word must be >= 1; was ", max_input_chars_per_word));
  }
  if (model_max_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.model_max_length must be >= 2; was ", model_max_length));
  }
  if (truncation_max_length < 0 || truncation_max_length == 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.truncation_max_length must be 0 (none) or >= 2; was ", truncation_max_length));
  }
  const std::pair<const char*, const std::string*> required[] = {
      {"unk_token", &unk_token}, {"cls_token", &cls_token},
      {"sep_token", &sep_token}, {"pad_token", &pad_token}};
  for (const auto& [name, value] : required) {
    if (value->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.", name, " must not be empty; was \"\""));
    }
  }
  if (continuing_subword_prefix.empty()) {
    return absl::InvalidArgumentError(
        "tokenizer.continuing_subword_prefix must not be empty; was \"\"");
  }
  for (size_t i = 0; i < additional_special_tokens.size(); ++i) {
    if (additional_special_tokens[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.additional_special_tokens[", i, "] must not be empty; was \"\""));
    }
  }
  return absl::OkStatus();
}

Tokenizer::~Tokenizer() = default;

absl::Status Tokenizer::LoadVocab(const std::string& vocab_path) {
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open vocabulary file '", vocab_path, "'"));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  vocab_text_ = buffer.str();
  if (vocab_text_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary file '", vocab_path, "' is empty"));
  }
  // One token per line; id = line number. Trailing whitespace is trimmed as HF's
  // WordPiece::read_file does (line.trim_end()); a later duplicate wins, as in its HashMap.
  const absl::string_view text(vocab_text_);
  const absl::string_view prefix(options_.continuing_subword_prefix);
  int32_t id = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == absl::string_view::npos) eol = text.size();
    absl::string_view token = text.substr(pos, eol - pos);
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) {
      token.remove_suffix(1);
    }
    word_start_.insert_or_assign(token, id);
    max_piece_bytes_ = std::max(max_piece_bytes_, token.size());
    if (token.size() > prefix.size() && token.substr(0, prefix.size()) == prefix) {
      const absl::string_view rest = token.substr(prefix.size());
      word_continuation_.insert_or_assign(rest, id);
    }
    ++id;
    pos = eol + 1;
  }
  vocab_size_ = id;
  return absl::OkStatus();
}

int32_t Tokenizer::TokenToId(absl::string_view token) const {
  auto it = word_start_.find(token);
  return it == word_start_.end() ? -1 : it->second;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const Options& options,
                                                             const std::string& vocab_path) {
  ES_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->options_ = options;
  tok->strip_accents_ = options.strip_accents.value_or(options.lowercase);
  ES_RETURN_IF_ERROR(tok->LoadVocab(vocab_path));

  const std::pair<const char*, std::pair<const std::string*, int32_t*>> specials[] = {
      {"unk_token", {&options.unk_token, &tok->unk_id_}},
      {"cls_token", {&options.cls_token, &tok->cls_id_}},
      {"sep_token", {&options.sep_token, &tok->sep_id_}},
      {"pad_token", {&options.pad_token, &tok->pad_id_}}};
  std::vector<std::string> matched;
  for (const auto& [name, token_and_id] : specials) {
    const int32_t id = tok->TokenToId(*token_and_id.first);
    if (id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.", name, " '", *token_and_id.first,
                                                     "' is not in the vocabulary '", vocab_path, "'"));
    }
    *token_and_id.second = id;
    matched.push_back(*token_and_id.first);
  }
  if (!options.mask_token.empty() && tok->TokenToId(options.mask_token) >= 0) {
    matched.push_back(options.mask_token);
  }
  for (const std::string& t : options.additional_special_tokens) {
    if (tok->TokenToId(t) < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.additional_special_tokens '", t,
                                                     "' is not in the vocabulary '", vocab_path, "'"));
    }
    matched.push_back(t);
  }
  for (int b = 0; b < 128; ++b) {
    AsciiAction action = kWordByte;
    char mapped = static_cast<char>(b);
    const bool cc = b < 0x20 || b == 0x7F;
    if (options.clean_text && (b == '\t' || b == '\n' || b == '\r')) {
      action = kSpace;
    } else if (options.clean_text && cc) {
      action = kDrop;  // NUL and the other C0 controls (\v \f too: the Cc filter runs first)
    } else if (IsWhitespace(static_cast<char32_t>(b))) {
      action = kSpace;
    } else if (IsPunctuation(static_cast<char32_t>(b))) {
      action = kPunct;
    } else if (options.lowercase && b >= 'A' && b <= 'Z') {
      mapped = static_cast<char>(b + ('a' - 'A'));
    }
    tok->ascii_action_[b] = action;
    tok->ascii_mapped_[b] = mapped;
  }
  if (options.match_special_tokens_in_text) {
    std::sort(matched.begin(), matched.end(), [](const std::string& a, const std::string& b) {
      return a.size() != b.size() ? a.size() > b.size() : a < b;
    });
    matched.erase(std::unique(matched.begin(), matched.end()), matched.end());
    for (const std::string& t : matched) {
      tok->special_tokens_.push_back({t, tok->TokenToId(t)});
      tok->special_first_byte_[static_cast<unsigned char>(t[0])] = true;
    }
  }
  return tok;
}

// One encoding pass: the normalizer, pre-tokenizer and WordPiece stages as methods that
// feed each other one character at a time. Lives on the stack of one call.
class Tokenizer::Pipeline {
 public:
  Pipeline(const Tokenizer& tok, Scratch& scratch, TokenIds* out)
      : tok_(tok), opt_(tok.options_), word_(scratch.word), pending_(scratch.pending), out_(out) {
    word_.clear();
    pending_.clear();
  }

  absl::Status Run(absl::string_view text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* const begin = p;
    const auto* const end = p + text.size();
    const bool check_special = !tok_.special_tokens_.empty();
    while (p < end) {
      const unsigned char b = *p;
      if (check_special && tok_.special_first_byte_[b] && MatchSpecial(p, end)) continue;
      if (b < 0x80) {
        if (!pending_.empty()) FlushPending();
        switch (tok_.ascii_action_[b]) {
          case kWordByte:
            word_.push_back(tok_.ascii_mapped_[b]);
            ++word_chars_;
            break;
          case kSpace:
            EndWord();
            break;
          case kPunct:
            EndWord();
            word_.push_back(static_cast<char>(b));
            word_chars_ = 1;
            EndWord();
            break;
          case kDrop:
            break;
        }
        ++p;
        continue;
      }
      const Utf8Char ch = DecodeUtf8NonAscii(p, end);
      if (ch.error != nullptr) {
        return Utf8Error(p - begin, ch.error, *p);
      }
      Raw(ch.code_point);
      p += ch.length;
    }
    EndSegment();
    return absl::OkStatus();
  }

 private:
  // Added-token split (before normalization, like HF's AddedVocabulary): at `p`, the
  // longest special token that starts here, if any, becomes its id.
  bool MatchSpecial(const unsigned char*& p, const unsigned char* end) {
    const size_t left = static_cast<size_t>(end - p);
    for (const SpecialToken& s : tok_.special_tokens_) {
      if (s.text.size() <= left && std::memcmp(p, s.text.data(), s.text.size()) == 0) {
        EndSegment();
        out_->push_back(s.id);
        p += s.text.size();
        return true;
      }
    }
    return false;
  }

  void EndSegment() {
    if (!pending_.empty()) FlushPending();
    EndWord();
  }

  // Stage 1 (clean_text, handle_chinese_chars) for one non-ASCII character.
  void Raw(char32_t c) {
    if (opt_.clean_text) {
      if (c == 0xFFFD || IsControl(c)) return;
      if (IsWhitespace(c)) c = ' ';
    }
    if (opt_.handle_chinese_chars && IsChineseChar(c)) {
      Nfd(' ');
      Nfd(c);
      Nfd(' ');
      return;
    }
    Nfd(c);
  }

  // Stage 2 (strip_accents, first half): NFD with canonical ordering of non-starters.
  // Non-spacing marks are dropped here already (stage 3's filter); dropping an element
  // commutes with the stable sort by combining class.
  void Nfd(char32_t c) {
    if (!tok_.strip_accents_) {
      Post(c);
      return;
    }
    if (c < 0x80) {
      if (!pending_.empty()) FlushPending();
      Post(c);
      return;
    }
    utf8proc_int32_t buf[32];
    int last_boundclass = 0;
    const utf8proc_ssize_t n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 32,
                                                       UTF8PROC_DECOMPOSE, &last_boundclass);
    if (n < 0 || n > 32) {  // cannot happen for valid code points; keep the character
      buf[0] = static_cast<utf8proc_int32_t>(c);
    }
    const int count = (n < 1 || n > 32) ? 1 : static_cast<int>(n);
    for (int i = 0; i < count; ++i) {
      const char32_t d = static_cast<char32_t>(buf[i]);
      if (CombiningClass(d) == 0) {
        if (!pending_.empty()) FlushPending();
        if (!IsNonSpacingMark(d)) Post(d);
      } else if (!IsNonSpacingMark(d)) {
        pending_.push_back(d);
      }
    }
  }

  void FlushPending() {
    if (pending_.size() > 1) {
      std::stable_sort(pending_.begin(), pending_.end(), [](char32_t a, char32_t b) {
        return CombiningClass(a) < CombiningClass(b);
      });
    }
    for (char32_t c : pending_) Post(c);
    pending_.clear();
  }

  // Stage 3: drop Mn (done in Nfd when stripping accents), lowercase.
  void Post(char32_t c) {
    if (opt_.lowercase) {
      if (c < 0x80) {
        if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
      } else if (c == 0x130) {
        // Rust's char::to_lowercase uses the full (SpecialCasing) mapping: "i" U+0307.
        PreTokenize('i');
        PreTokenize(0x307);
        return;
      } else {
        c = static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
      }
    }
    PreTokenize(c);
  }

  // Stage 4: BertPreTokenizer. Whitespace ends a word; punctuation is a word by itself.
  void PreTokenize(char32_t c) {
    if (IsWhitespace(c)) {
      EndWord();
    } else if (IsPunctuation(c)) {
      EndWord();
      AppendUtf8(c, &word_);
      word_chars_ = 1;
      EndWord();
    } else {
      AppendUtf8(c, &word_);
      ++word_chars_;
    }
  }

  // Stage 5: greedy longest-match-first WordPiece on the finished word.
  void EndWord() {
    if (word_.empty()) return;
    const absl::string_view w(word_);
    if (word_chars_ > opt_.max_input_chars_per_word) {
      out_->push_back(tok_.unk_id_);
    } else {
      const size_t mark = out_->size();
      size_t start = 0;
      while (start < w.size()) {
        const auto& map = start == 0 ? tok_.word_start_ : tok_.word_continuation_;
        size_t stop = std::min(w.size(), start + tok_.max_piece_bytes_);
        while (stop < w.size() && IsUtf8Continuation(w[stop])) --stop;
        int32_t id = -1;
        while (stop > start) {
          auto it = map.find(w.substr(start, stop - start));
          if (it != map.end()) {
            id = it->second;
            break;
          }
          --stop;
          while (stop > start && IsUtf8Continuation(w[stop])) --stop;
        }
        if (id < 0) {
          out_->resize(mark);
          out_->push_back(tok_.unk_id_);
          break;
        }
        out_->push_back(id);
        start = stop;
      }
    }
    word_.clear();
    word_chars_ = 0;
  }

  const Tokenizer& tok_;
  const Options& opt_;
  std::string& word_;
  std::vector<char32_t>& pending_;
  TokenIds* out_;
  int word_chars_ = 0;
};

absl::Status Tokenizer::CheckUtf8(absl::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* const begin = p;
  const auto* const end = p + text.size();
  while (p < end) {
    if (*p < 0x80) {
      ++p;
      continue;
    }
    const Utf8Char ch = DecodeUtf8NonAscii(p, end);
    if (ch.error != nullptr) return Utf8Error(p - begin, ch.error, *p);
    p += ch.length;
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::AppendWordPieceIds(absl::string_view text, TokenIds* ids) const {
  Scratch& scratch = ThreadScratch();
  absl::Status status = Pipeline(*this, scratch, ids).Run(text);
  // Do not let one huge word pin its buffer to this thread forever.
  constexpr size_t kKeepBytes = size_t{1} << 20;
  if (scratch.word.capacity() > kKeepBytes) std::string().swap(scratch.word);
  if (scratch.pending.capacity() > kKeepBytes / 4) std::vector<char32_t>().swap(scratch.pending);
  return status;
}

absl::StatusOr<Encoding> Tokenizer::Encode(absl::string_view text, int64_t max_length) const {
  if (max_length < 0 || max_length == 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_length must be 0 (no truncation) or >= 2; was ", max_length));
  }
  Encoding enc;
  enc.ids.reserve(text.size() / 3 + 8);
  enc.ids.push_back(cls_id_);
  ES_RETURN_IF_ERROR(AppendWordPieceIds(text, &enc.ids));
  enc.ids.push_back(sep_id_);
  enc.untruncated_length = static_cast<int64_t>(enc.ids.size());
  if (max_length > 0 && enc.untruncated_length > max_length) {
    enc.ids.resize(static_cast<size_t>(max_length));
    enc.ids.back() = sep_id_;
  }
  return enc;
}

}  // namespace embedserve
