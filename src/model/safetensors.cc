#include "embedserve/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "embedserve/common/status_macros.h"
#include "json_util.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace {

// Refuse headers larger than this (the reference implementation uses the same limit).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

struct DtypeEntry {
  const char* name;
  SafetensorsDtype dtype;
  int size;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", SafetensorsDtype::kF64, 8},      {"F32", SafetensorsDtype::kF32, 4},
    {"F16", SafetensorsDtype::kF16, 2},      {"BF16", SafetensorsDtype::kBF16, 2},
    {"I64", SafetensorsDtype::kI64, 8},      {"I32", SafetensorsDtype::kI32, 4},
    {"I16", SafetensorsDtype::kI16, 2},      {"I8", SafetensorsDtype::kI8, 1},
    {"U64", SafetensorsDtype::kU64, 8},      {"U32", SafetensorsDtype::kU32, 4},
    {"U16", SafetensorsDtype::kU16, 2},      {"U8", SafetensorsDtype::kU8, 1},
    {"BOOL", SafetensorsDtype::kBool, 1},    {"F8_E4M3", SafetensorsDtype::kF8E4M3, 1},
    {"F8_E5M2", SafetensorsDtype::kF8E5M2, 1},
};

absl::Status TensorError(const std::string& name, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", problem));
}

absl::StatusOr<SafetensorsTensor> ParseEntry(const std::string& name,
                                             const nlohmann::json& entry,
                                             uint64_t data_size) {
  SafetensorsTensor t;
  t.name = name;
  if (!entry.is_object()) return TensorError(name, "header entry is not a JSON object");
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return TensorError(name, "missing string field 'dtype'");
  }
  const std::string& dtype = dtype_it->get_ref<const std::string&>();
  bool known = false;
  for (const DtypeEntry& d : kDtypes) {
    if (dtype == d.name) {
      t.dtype = d.dtype;
      known = true;
    }
  }
  if (!known) {
    return TensorError(name, absl::StrCat("unknown dtype '", dtype,
                                          "' (weights must be F32, F16 or BF16)"));
  }
  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return TensorError(name, "missing array field 'shape'");
  }
  if (shape_it->size() > 8) {
    return TensorError(name, absl::StrCat("shape has ", shape_it->size(),
                                          " dimensions; at most 8 are supported"));
  }
  // Element count with overflow checks: bounded by the data size, which is < 2^63.
  uint64_t numel = 1;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned()) {
      return TensorError(name, absl::StrCat("shape entry ", dim.dump(),
                                            " is not a non-negative integer"));
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TensorError(name, absl::StrCat("shape entry ", d, " is too large"));
    }
    t.shape.push_back(static_cast<int64_t>(d));
    if (d != 0 && numel > (std::numeric_limits<uint64_t>::max() >> 4) / d) {
      return TensorError(name, absl::StrCat("shape ", shape_it->dump(), " overflows"));
    }
    numel *= d;
  }
  auto off_it = entry.find("data_offsets");
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 ||
      !(*off_it)[0].is_number_unsigned() || !(*off_it)[1].is_number_unsigned()) {
    return TensorError(name, "'data_offsets' must be [begin, end] with non-negative integers");
  }
  t.begin = (*off_it)[0].get<uint64_t>();
  t.end = (*off_it)[1].get<uint64_t>();
  if (t.begin > t.end) {
    return TensorError(name, absl::StrCat("data_offsets [", t.begin, ", ", t.end,
                                          "] has begin > end"));
  }
  if (t.end > data_size) {
    return TensorError(name, absl::StrCat("data_offsets [", t.begin, ", ", t.end,
                                          "] point outside the data section of ", data_size,
                                          " bytes (truncated file?)"));
  }
  const uint64_t expected = numel * static_cast<uint64_t>(SafetensorsDtypeSize(t.dtype));
  if (t.end - t.begin != expected) {
    return TensorError(name, absl::StrCat("data_offsets [", t.begin, ", ", t.end, "] hold ",
                                          t.end - t.begin, " bytes but shape ",
                                          shape_it->dump(), " of ", dtype, " needs ",
                                          expected));
  }
  return t;
}

}  // namespace

const char* SafetensorsDtypeName(SafetensorsDtype dtype) {
  for (const DtypeEntry& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

int SafetensorsDtypeSize(SafetensorsDtype dtype) {
  for (const DtypeEntry& d : kDtypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 1;
}

int64_t SafetensorsTensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsLayout> ParseSafetensorsHeader(absl::string_view header_json,
                                                         uint64_t data_size) {
  ES_ASSIGN_OR_RETURN(nlohmann::json header, internal_model::ParseJson(header_json, "safetensors header"));
  if (!header.is_object()) {
    return absl::InvalidArgumentError("safetensors header is not a JSON object");
  }
  SafetensorsLayout layout;
  layout.header_size = header_json.size();
  layout.data_offset = 8 + header_json.size();
  layout.data_size = data_size;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) {
        return absl::InvalidArgumentError("safetensors '__metadata__' is not a JSON object");
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (m->is_string()) layout.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    ES_ASSIGN_OR_RETURN(SafetensorsTensor t, ParseEntry(it.key(), *it, data_size));
    layout.tensors.emplace(t.name, std::move(t));
  }
  return layout;
}

absl::StatusOr<SafetensorsLayout> ParseSafetensors(absl::string_view file_bytes) {
  if (file_bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors file is truncated: ", file_bytes.size(),
        " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) {
    header_size = (header_size << 8) | static_cast<uint8_t>(file_bytes[i]);
  }
  if (header_size > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors header length ", header_size, " exceeds the limit of ",
        kMaxHeaderBytes, " bytes (not a safetensors file?)"));
  }
  if (header_size > file_bytes.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors file is truncated: header length ", header_size, " but only ",
        file_bytes.size() - 8, " bytes follow"));
  }
  return ParseSafetensorsHeader(file_bytes.substr(8, header_size),
                                file_bytes.size() - 8 - header_size);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_size_ = static_cast<size_t>(st.st_size);
  if (file->map_size_ > 0) {
    void* map = ::mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("cannot mmap ", path, ": ", std::strerror(err)));
    }
    file->map_ = map;
  }
  ::close(fd);
  absl::string_view bytes(static_cast<const char*>(file->map_), file->map_size_);
  auto layout = ParseSafetensors(bytes);
  if (!layout.ok()) {
    return absl::Status(layout.status().code(),
                        absl::StrCat(path, ": ", layout.status().message()));
  }
  file->layout_ = *std::move(layout);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  auto it = layout_.tensors.find(name);
  return it == layout_.tensors.end() ? nullptr : &it->second;
}

absl::Span<const uint8_t> SafetensorsFile::Data(const SafetensorsTensor& tensor) const {
  const uint8_t* base = static_cast<const uint8_t*>(map_) + layout_.data_offset;
  return absl::Span<const uint8_t>(base + tensor.begin, tensor.end - tensor.begin);
}

absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<SafetensorsWriteTensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const SafetensorsWriteTensor& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    if (numel * SafetensorsDtypeSize(t.dtype) != t.bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': ", t.bytes.size(), " bytes for ",
                       numel, " elements of ", SafetensorsDtypeName(t.dtype)));
    }
    header[t.name] = {{"dtype", SafetensorsDtypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  while (json.size() % 8 != 0) json.push_back(' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += json;
  for (const SafetensorsWriteTensor& t : tensors) out += t.bytes;
  return out;
}

}  // namespace embedserve
