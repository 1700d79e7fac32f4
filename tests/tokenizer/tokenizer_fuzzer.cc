// libFuzzer target: arbitrary bytes through Tokenizer::Encode under several option sets.
// Checks: no crash or sanitizer report; Encode fails exactly when the input is not valid
// UTF-8; [CLS] first, [SEP] last; truncation bounds; ids inside the vocabulary. The first input byte picks options and max_length.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "embedserve/tokenizer/tokenizer.h"

namespace {

using embedserve::Tokenizer;

std::vector<std::unique_ptr<Tokenizer>> MakeTokenizers() {
  std::vector<std::unique_ptr<Tokenizer>> out;
  for (int variant = 0; variant < 8; ++variant) {
    Tokenizer::Options o;
    o.lowercase = (variant & 1) == 0;
    if (variant & 2) o.strip_accents = (variant & 4) == 0;
    o.clean_text = variant != 3;
    o.handle_chinese_chars = variant != 5;
    if (variant == 6) o.max_input_chars_per_word = 5;
    if (variant == 7) o.match_special_tokens_in_text = false;
    auto tok = Tokenizer::Create(o, std::string(EMBEDSERVE_TEST_DATA_DIR) + "/tokenizer/vocab.txt");
    if (!tok.ok()) std::abort();
    out.push_back(*std::move(tok));
  }
  return out;
}

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::unique_ptr<Tokenizer>> tokenizers = MakeTokenizers();
  if (size == 0) return 0;
  const Tokenizer& tok = *tokenizers[data[0] % tokenizers.size()];
  const int64_t max_length = (data[0] >> 3) == 0 ? 0 : 2 + (data[0] >> 3);
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  const bool valid = Tokenizer::CheckUtf8(text).ok();
  auto enc = tok.Encode(text, max_length);
  Check(enc.ok() == valid);
  if (!enc.ok()) {
    Check(enc.status().code() == absl::StatusCode::kInvalidArgument);
    Check(enc.status().message().find("invalid UTF-8 at byte ") == 0);
    return 0;
  }
  const auto& ids = enc->ids;
  Check(ids.size() >= 2 && ids.front() == tok.cls_id() && ids.back() == tok.sep_id());
  Check(enc->untruncated_length >= static_cast<int64_t>(ids.size()));
  if (max_length > 0) Check(static_cast<int64_t>(ids.size()) <= max_length);
  for (int32_t id : ids) Check(id >= 0 && id < tok.vocab_size());
  return 0;
}
