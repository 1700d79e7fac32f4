// Strict UTF-8 decoding for the tokenizer (internal to src/tokenizer/ and its tests).
// Accepts exactly what Rust's str accepts: no overlong forms, no surrogates, nothing above
// U+10FFFF. Pure functions, safe from any thread.
#ifndef EMBEDSERVE_SRC_TOKENIZER_UTF8_H_
#define EMBEDSERVE_SRC_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace embedserve {
namespace tokenizer_internal {

// Result of decoding one code point at some offset.
struct Utf8Char {
  char32_t code_point = 0;
  int length = 0;             // bytes consumed; 0 on error
  const char* error = nullptr;  // static text naming what is wrong, or nullptr
};

// Decodes the non-ASCII sequence that starts at `p` (p < end, *p >= 0x80).
inline Utf8Char DecodeUtf8NonAscii(const unsigned char* p, const unsigned char* end) {
  Utf8Char out;
  const unsigned char b0 = p[0];
  int len;
  char32_t cp;
  char32_t min;
  if (b0 < 0xC0) {
    out.error = "unexpected continuation byte";
    return out;
  } else if (b0 < 0xE0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 < 0xF0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 < 0xF8) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    out.error = "invalid leading byte";
    return out;
  }
  if (end - p < len) {
    // Report a bad continuation byte before the truncation when there is one.
    for (const unsigned char* q = p + 1; q < end; ++q) {
      if ((*q & 0xC0) != 0x80) {
        out.error = "expected a continuation byte";
        return out;
      }
    }
    out.error = "truncated multi-byte sequence at end of text";
    return out;
  }
  for (int i = 1; i < len; ++i) {
    if ((p[i] & 0xC0) != 0x80) {
      out.error = "expected a continuation byte";
      return out;
    }
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if (cp < min) {
    out.error = "overlong encoding";
    return out;
  }
  if (cp >= 0xD800 && cp <= 0xDFFF) {
    out.error = "surrogate code point";
    return out;
  }
  if (cp > 0x10FFFF) {
    out.error = "code point above U+10FFFF";
    return out;
  }
  out.code_point = cp;
  out.length = len;
  return out;
}

// Appends the UTF-8 form of a valid code point.
inline void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    const char b[2] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    out->append(b, 2);
  } else if (cp < 0x10000) {
    const char b[3] = {static_cast<char>(0xE0 | (cp >> 12)),
                       static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                       static_cast<char>(0x80 | (cp & 0x3F))};
    out->append(b, 3);
  } else {
    const char b[4] = {static_cast<char>(0xF0 | (cp >> 18)),
                       static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                       static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                       static_cast<char>(0x80 | (cp & 0x3F))};
    out->append(b, 4);
  }
}

}  // namespace tokenizer_internal
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_TOKENIZER_UTF8_H_
