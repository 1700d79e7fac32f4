// The HF-compatibility override table for bert_chars.h (see hf_unicode_overrides.inc).
#include "tokenizer/bert_chars.h"

#include <algorithm>
#include <iterator>

namespace embedserve {
namespace tokenizer_internal {

const HfOverride kHfOverrides[] = {
#include "tokenizer/hf_unicode_overrides.inc"
};
const size_t kNumHfOverrides = std::size(kHfOverrides);

const HfOverride* FindHfOverrideSlow(char32_t c) {
  const HfOverride* end = kHfOverrides + kNumHfOverrides;
  const HfOverride* it = std::upper_bound(
      kHfOverrides, end, c, [](char32_t v, const HfOverride& o) { return v < o.first; });
  if (it == kHfOverrides) return nullptr;
  --it;
  return c <= it->last ? it : nullptr;
}

}  // namespace tokenizer_internal
}  // namespace embedserve
