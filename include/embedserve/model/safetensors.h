// Reader (and a small writer) for the safetensors format: 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw tensor bytes.
// Torch-free; the loader maps the file and hands the bytes to LibTorch. Every offset,
// shape and dtype is checked, so a damaged file is an error naming the tensor, never a
// crash. SafetensorsFile is immutable after Open: safe to read from several threads.
#ifndef EMBEDSERVE_MODEL_SAFETENSORS_H_
#define EMBEDSERVE_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace embedserve {

// The dtypes of the safetensors specification. Only kF32, kF16 and kBF16 hold weights
// this project uses; the others are parsed (so a file with e.g. an I64 position_ids
// buffer loads) and rejected only when a weight has one.
enum class SafetensorsDtype {
  kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool,
  kF8E4M3, kF8E5M2,
};

// "F32", "BF16", ...
const char* SafetensorsDtypeName(SafetensorsDtype dtype);
// Bytes per element.
int SafetensorsDtypeSize(SafetensorsDtype dtype);

// One header entry. Offsets are relative to the start of the data section.
struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;

  int64_t NumElements() const;
};

// The parsed, validated header of a whole file.
struct SafetensorsLayout {
  uint64_t header_size = 0;   // bytes of JSON after the 8-byte length
  uint64_t data_offset = 0;   // 8 + header_size
  uint64_t data_size = 0;     // file size - data_offset
  std::map<std::string, SafetensorsTensor> tensors;   // by name
  std::map<std::string, std::string> metadata;        // "__metadata__" (string values)
};

// Parses the JSON header of a file whose data section has `data_size` bytes. Fails with
// INVALID_ARGUMENT naming the tensor and the problem: unknown dtype, negative or
// overflowing shape, data_offsets that are not [begin, end] with begin <= end <=
// data_size, or a byte count that does not match shape x dtype size.
absl::StatusOr<SafetensorsLayout> ParseSafetensorsHeader(absl::string_view header_json,
                                                         uint64_t data_size);

// Parses a whole file held in memory (length prefix, header, data). Used by Open and by
// the fuzzer; fails on a file shorter than its header says ("truncated").
absl::StatusOr<SafetensorsLayout> ParseSafetensors(absl::string_view file_bytes);

// A memory-mapped, validated safetensors file.
class SafetensorsFile {
 public:
  // Maps `path` read-only and parses it. NOT_FOUND when it cannot be opened,
  // INVALID_ARGUMENT (message starts with the path) when it is malformed.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const SafetensorsLayout& layout() const { return layout_; }
  // nullptr when absent.
  const SafetensorsTensor* Find(const std::string& name) const;
  // The tensor's bytes inside the mapping (valid while this object lives).
  absl::Span<const uint8_t> Data(const SafetensorsTensor& tensor) const;

  // Implementation details below.
 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  SafetensorsLayout layout_;
};

// A tensor to write: `bytes` must hold shape x dtype-size bytes, little-endian.
struct SafetensorsWriteTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Serialises tensors (in the given order; the header lists names sorted, as JSON objects
// here are) with the header padded by spaces to a multiple of 8 bytes. Deterministic:
// the same input gives the same bytes. INVALID_ARGUMENT if a byte count is wrong.
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<SafetensorsWriteTensor>& tensors,
    const std::map<std::string, std::string>& metadata);

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_SAFETENSORS_H_
