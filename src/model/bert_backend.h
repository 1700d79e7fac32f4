// Internal (src/model only, includes LibTorch): the BERT encoder behind the Backend
// interface. Weights are immutable after Create; Embed() keeps all state on the stack
// and runs under InferenceMode, so several threads may call it at once.
#ifndef EMBEDSERVE_SRC_MODEL_BERT_BACKEND_H_
#define EMBEDSERVE_SRC_MODEL_BERT_BACKEND_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "embedserve/model/backend.h"
#include "embedserve/model/model_folder.h"
#include "embedserve/model/model_options.h"
#include "embedserve/model/safetensors.h"

namespace embedserve {
namespace internal_model {

// How the CPU linear layers run (see docs/model.md for the measurements).
enum class CpuLinearKernel {
  kAten,    // at::linear: OpenBLAS sgemm for fp32, oneDNN (mkldnn_matmul) for bf16
  kOneDnn,  // at::mkldnn_linear on mkldnn-layout activations (converted per call)
};

class BertBackend : public Backend {
 public:
  // `folder` comes from ReadModelFolder(options.path); `options` must be valid.
  static absl::StatusOr<std::unique_ptr<BertBackend>> Create(const ModelFolder& folder,
                                                             const ModelOptions& options);

  const BackendInfo& Info() const override { return info_; }
  absl::StatusOr<EmbeddingMatrix> Embed(absl::Span<const TokenIds* const> sequences) override;

  BertBackend(const BertBackend&) = delete;
  BertBackend& operator=(const BertBackend&) = delete;

  // Implementation details below.
 private:
  struct Layer {
    torch::Tensor qkv_w, qkv_b;        // fused [3H, H], [3H]
    torch::Tensor attn_out_w, attn_out_b;
    torch::Tensor ln1_w, ln1_b;
    torch::Tensor ffn_in_w, ffn_in_b;
    torch::Tensor ffn_out_w, ffn_out_b;
    torch::Tensor ln2_w, ln2_b;
  };

  BertBackend() = default;
  absl::Status LoadWeights(const SafetensorsFile& file);
  torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w,
                       const torch::Tensor& b) const;
  torch::Tensor Forward(const torch::Tensor& ids, const torch::Tensor& mask) const;

  BackendInfo info_;
  BertConfig config_;
  torch::Device device_ = torch::kCPU;
  torch::ScalarType dtype_ = torch::kFloat;           // matmul weights and inputs
  torch::ScalarType residual_dtype_ = torch::kFloat;  // embeddings, residual, LayerNorm
  int num_threads_ = 1;
  CpuLinearKernel cpu_linear_ = CpuLinearKernel::kAten;
  int64_t head_dim_ = 0;
  double attention_scale_ = 1.0;
  torch::Tensor word_emb_;       // [V, H]
  torch::Tensor pos_type_emb_;   // [P, H]: position + token-type-0 embeddings
  torch::Tensor emb_ln_w_, emb_ln_b_;
  std::vector<Layer> layers_;
};

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_BERT_BACKEND_H_
