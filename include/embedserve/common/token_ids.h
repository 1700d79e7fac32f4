// The unit of work that flows from the tokenizer through the batcher to the backend.
// Plain value type.
#ifndef EMBEDSERVE_COMMON_TOKEN_IDS_H_
#define EMBEDSERVE_COMMON_TOKEN_IDS_H_

#include <cstdint>
#include <vector>

namespace embedserve {

// One tokenized text: [CLS] ... [SEP] vocabulary ids.
using TokenIds = std::vector<int32_t>;

}  // namespace embedserve

#endif  // EMBEDSERVE_COMMON_TOKEN_IDS_H_
