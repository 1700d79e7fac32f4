// libFuzzer target for the torch-free model-folder parsing: every input goes through the
// safetensors parser (checked: accepted offsets lie inside the data) and through each
// JSON config parser. Any crash, sanitizer report or broken invariant is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "embedserve/model/model_folder.h"
#include "embedserve/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto layout = embedserve::ParseSafetensors(bytes);
  if (layout.ok()) {
    for (const auto& [name, t] : layout->tensors) {
      if (t.begin > t.end || t.end > layout->data_size ||
          layout->data_offset + layout->data_size != size ||
          static_cast<uint64_t>(t.NumElements()) *
                  embedserve::SafetensorsDtypeSize(t.dtype) != t.end - t.begin) {
        std::abort();
      }
    }
  }
  (void)embedserve::ParseBertConfig(bytes);
  (void)embedserve::ParsePoolingConfig(bytes);
  (void)embedserve::ParseModulesConfig(bytes);
  (void)embedserve::ParseSentenceBertConfig(bytes);
  (void)embedserve::ParseTokenizerMaxLength(bytes);
  return 0;
}
