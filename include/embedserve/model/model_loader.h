// Loads a model folder (Hugging Face / sentence-transformers layout) into a tokenizer and
// a LibTorch BERT backend configured from the same folder. The header is torch-free; the
// implementation lives in embedserve_model (built only with EMBEDSERVE_WITH_TORCH).
// LoadModel is thread-safe but sets the process's intra-op thread count.
#ifndef EMBEDSERVE_MODEL_MODEL_LOADER_H_
#define EMBEDSERVE_MODEL_MODEL_LOADER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "embedserve/model/backend.h"
#include "embedserve/model/model_options.h"
#include "embedserve/tokenizer/tokenizer.h"

namespace embedserve {

struct LoadedModel {
  std::unique_ptr<Tokenizer> tokenizer;  // configured from the same folder
  std::unique_ptr<Backend> backend;      // BackendInfo filled in (synthetic, pooling, ...)
};

// Reads config.json, model.safetensors (memory-mapped; F32/F16/BF16; names with or
// without "bert."; pooler.* ignored), the optional sentence-transformers files and the
// tokenizer files; converts the weights once to options.precision on options.device.
// Errors (nothing is half-loaded):
//   INVALID_ARGUMENT  bad options; a malformed or unsupported file (message names the
//                     file, tensor or field and the problem); a device or precision this
//                     build/machine cannot serve (message names the alternative, e.g.
//                     "fp16 on cpu ... use bf16 or fp32"). Never a silent fallback.
//   NOT_FOUND         the folder, config.json, model.safetensors or vocab.txt is missing.
//   INTERNAL          LibTorch failed (e.g. out of memory).
absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options);

// The backend alone (no vocab.txt needed): for benchmarks and tools that bring their
// own token ids. Same errors as LoadModel.
absl::StatusOr<std::unique_ptr<Backend>> LoadBackend(const ModelOptions& options);

// The precision a server loads for `requested` on `device` (cpu, cuda, cuda:N, mps or
// auto): `requested` itself when this build and machine run it, else the closest one
// that runs, with `fallback_reason` saying why (empty when there is no fallback). With
// `quantized` (the config's `quantized: true`), the device's fast small type: fp16 on
// a GPU; on a CPU bf16 where it is native (AVX-512 BF16), else int8. LoadModel itself never falls
// back: it refuses a precision it cannot run.
struct PrecisionChoice {
  std::string precision;
  std::string fallback_reason;
};
PrecisionChoice ChoosePrecision(const std::string& device, const std::string& requested,
                                bool quantized);

// The devices this LibTorch can use here, e.g. {"cpu"} or {"cpu", "cuda:0", "cuda:1"}
// (and "mps" on Apple GPUs). Tests use it to skip CUDA cases with a reason.
std::vector<std::string> AvailableDevices();

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_MODEL_LOADER_H_
