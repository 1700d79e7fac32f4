// Character classes of Hugging Face's BertNormalizer / BertPreTokenizer, computed from
// libutf8proc's Unicode data (no hand-written tables). Internal to src/tokenizer/ and its
// tests. Pure functions, safe from any thread.
#ifndef EMBEDSERVE_SRC_TOKENIZER_BERT_CHARS_H_
#define EMBEDSERVE_SRC_TOKENIZER_BERT_CHARS_H_

#include <utf8proc.h>

namespace embedserve {
namespace tokenizer_internal {

inline utf8proc_category_t Category(char32_t c) {
  return static_cast<utf8proc_category_t>(utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->category);
}

// Rust char::is_whitespace (the Unicode White_Space property): U+0009..U+000D, U+0085
// and the categories Zs, Zl, Zp.
inline bool IsWhitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  if (c == 0x85) return true;
  const utf8proc_category_t cat = Category(c);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

// BertNormalizer's whitespace for clean_text: \t \n \r or White_Space.
inline bool IsCleanTextWhitespace(char32_t c) { return IsWhitespace(c); }

// BertNormalizer's control characters (removed by clean_text), except \t \n \r (which
// count as whitespace): the unicode_categories crate's is_other(), which despite HF's
// comment is only Cc, Cf and Co. Unassigned code points (Cn) are kept.
inline bool IsControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const utf8proc_category_t cat = Category(c);
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CO;
}

// BertPreTokenizer's punctuation: ASCII 33-47, 58-64, 91-96, 123-126, or any P* category.
inline bool IsPunctuation(char32_t c) {
  if (c < 0x80) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  }
  const utf8proc_category_t cat = Category(c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

// The CJK blocks of BertNormalizer::is_chinese_char (these are block ranges, not a
// Unicode property, so they are written out as in the reference).
inline bool IsChineseChar(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

inline bool IsNonSpacingMark(char32_t c) { return Category(c) == UTF8PROC_CATEGORY_MN; }

inline int CombiningClass(char32_t c) {
  return utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->combining_class;
}

}  // namespace tokenizer_internal
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_TOKENIZER_BERT_CHARS_H_
