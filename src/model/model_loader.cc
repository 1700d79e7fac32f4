#include "embedserve/model/model_loader.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "bert_backend.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/model/model_folder.h"
#include "spdlog/spdlog.h"

namespace embedserve {
namespace {

absl::StatusOr<std::unique_ptr<Backend>> LoadBackendFromFolder(const ModelFolder& folder,
                                                               const ModelOptions& options) {
  for (const std::string& note : folder.notes) spdlog::info("model {}: {}", folder.path, note);
  ES_ASSIGN_OR_RETURN(std::unique_ptr<internal_model::BertBackend> backend,
                      internal_model::BertBackend::Create(folder, options));
  const BackendInfo& info = backend->Info();
  spdlog::info(
      "model {} loaded from {}: {} layers, dim {}, max_seq_length {}, {} pooling{}, {} {}, {}",
      info.model_name, info.model_path, folder.config.num_hidden_layers, info.dimension,
      info.max_seq_length, info.pooling, info.normalize ? " + normalize" : "", info.device,
      info.precision, info.runtime);
  if (info.synthetic) {
    spdlog::warn(
        "model {} has SYNTHETIC weights (embedserve-make-model, seed {}): vectors are "
        "correctly shaped but meaningless; point model.path at a real folder for real "
        "embeddings",
        info.model_path, folder.config.synthetic_seed);
  }
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> LoadBackend(const ModelOptions& options) {
  ES_RETURN_IF_ERROR(options.Validate());
  ES_ASSIGN_OR_RETURN(ModelFolder folder, ReadModelFolder(options.path));
  return LoadBackendFromFolder(folder, options);
}

std::vector<std::string> AvailableDevices() {
  std::vector<std::string> devices = {"cpu"};
  try {
    if (torch::cuda::is_available()) {
      const int64_t n = static_cast<int64_t>(torch::cuda::device_count());
      for (int64_t i = 0; i < n; ++i) devices.push_back(absl::StrCat("cuda:", i));
    }
    if (at::hasMPS()) devices.push_back("mps");
  } catch (const std::exception&) {
    // A broken driver: report only what works.
  }
  return devices;
}

PrecisionChoice ChoosePrecision(const std::string& device, const std::string& requested,
                                bool quantized) {
  bool gpu = device.rfind("cuda", 0) == 0 || device == "mps";
  if (device == "auto") {
    for (const std::string& d : AvailableDevices()) gpu = gpu || d != "cpu";
  }
  const bool bf16 = internal_model::CpuHasFastBf16();
  if (quantized) {
    if (gpu) return {"fp16", ""};
    if (internal_model::CpuHasNativeBf16()) return {"bf16", ""};
    if (internal_model::HasInt8Linear()) return {"int8", ""};
    if (bf16) {
      return {"bf16", "quantized: true on this cpu means int8, which needs VNNI (and a build "
                      "with oneDNN); serving bf16"};
    }
    return {"fp32", "quantized: true on this cpu means int8, which needs VNNI (and a build "
                    "with oneDNN), and bf16 needs AVX-512; serving fp32"};
  }
  if (requested == "int8" && (gpu || !internal_model::HasInt8Linear())) {
    const std::string instead = gpu ? "fp16" : "fp32";
    return {instead, absl::StrCat("model.precision 'int8' ",
                                  gpu ? "runs on cpu only"
                                      : "needs a cpu with VNNI and a build with oneDNN",
                                  "; serving ", instead, " instead")};
  }
  if (gpu || requested == "fp32") return {requested, ""};
  if (requested == "fp16") {
    return {bf16 ? "bf16" : "fp32",
            absl::StrCat("model.precision 'fp16' is not supported on cpu (LibTorch has no fp16 "
                         "CPU matmul); serving ", bf16 ? "bf16" : "fp32", " instead")};
  }
  if (requested == "bf16" && !bf16) {
    return {"fp32",
            "model.precision 'bf16' needs AVX-512 (avx512bw/vl/dq), which this cpu lacks (LibTorch "
            "would run slow reference kernels); serving fp32 instead"};
  }
  return {requested, ""};
}

absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options) {
  ES_RETURN_IF_ERROR(options.Validate());
  ES_ASSIGN_OR_RETURN(ModelFolder folder, ReadModelFolder(options.path));
  LoadedModel model;
  ES_ASSIGN_OR_RETURN(model.tokenizer, Tokenizer::FromModelDir(options.path));
  if (model.tokenizer->vocab_size() > folder.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.path, "/vocab.txt has ", model.tokenizer->vocab_size(),
        " tokens but config.json vocab_size is ", folder.config.vocab_size));
  }
  ES_ASSIGN_OR_RETURN(model.backend, LoadBackendFromFolder(folder, options));
  return model;
}

}  // namespace embedserve
