// Internal (src/model only, includes LibTorch): the BERT encoder behind the Backend
// interface. Weights are immutable after Create; Embed() keeps all state on the stack
// (or, for a CUDA graph replay, under graph_mu_) and runs under InferenceMode, so
// several threads may call it at once.
#ifndef EMBEDSERVE_SRC_MODEL_BERT_BACKEND_H_
#define EMBEDSERVE_SRC_MODEL_BERT_BACKEND_H_

#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "embedserve/model/backend.h"
#include "embedserve/model/model_folder.h"
#include "embedserve/model/model_options.h"
#include "embedserve/model/safetensors.h"
#include "graph_buckets.h"
#include "tuned_gemm.h"

namespace embedserve {
namespace internal_model {

// Whether this CPU runs LibTorch's oneDNN bf16 kernels (AVX-512 BW/VL/DQ); without them
// bf16 matmuls take a slow reference path, so bf16 is refused on such CPUs.
bool CpuHasFastBf16();
// Whether this CPU computes bf16 natively (AVX-512 BF16), so that bf16 beats int8 here.
bool CpuHasNativeBf16();
// Whether int8 runs here: this build has the int8 CPU path (oneDNN headers found at build
// time) and this CPU has VNNI.
bool HasInt8Linear();

class Int8Linear;
class Fp32Linear;

// How the CPU linear layers run (see docs/model.md for the measurements).
enum class CpuLinearKernel {
  kAten,    // at::linear: OpenBLAS sgemm for fp32, oneDNN (mkldnn_matmul) for bf16
  kOneDnn,  // at::mkldnn_linear on mkldnn-layout activations (converted per call)
  kFused,   // fp32 and int8: Fp32Linear / Int8Linear (prepacked weights, fused epilogues)
            // and the kernels of cpu_fused.h (ForwardCpuFused); bf16 runs as kAten
};

class BertBackend : public Backend {
 public:
  // `folder` comes from ReadModelFolder(options.path); `options` must be valid.
  static absl::StatusOr<std::unique_ptr<BertBackend>> Create(const ModelFolder& folder,
                                                             const ModelOptions& options);

  const BackendInfo& Info() const override { return info_; }
  absl::StatusOr<EmbeddingMatrix> Embed(absl::Span<const TokenIds* const> sequences) override {
    return EmbedWith(sequences, CallOptions{});
  }
  // Honours call.cpu_threads and call.cpu_nice on the CPU.
  absl::StatusOr<EmbeddingMatrix> EmbedWith(absl::Span<const TokenIds* const> sequences,
                                            const CallOptions& call) override;

  BertBackend(const BertBackend&) = delete;
  BertBackend& operator=(const BertBackend&) = delete;
  ~BertBackend() override;

  // Implementation details below.
 private:
  struct Layer {
    torch::Tensor qkv_w, qkv_b;        // fused [3H, H], [3H]
    torch::Tensor attn_out_w, attn_out_b;
    torch::Tensor ln1_w, ln1_b;
    torch::Tensor ffn_in_w, ffn_in_b;
    torch::Tensor ffn_out_w, ffn_out_b;
    torch::Tensor ln2_w, ln2_b;
    // model.precision int8: the four linear layers (their fp32 weights are dropped).
    std::shared_ptr<const Int8Linear> qkv_q, attn_out_q, ffn_in_q, ffn_out_q;
    // CpuLinearKernel::kFused, fp32: the four linear layers (their torch weights are
    // dropped). ffn_in applies the activation, attn_out and ffn_out add into the residual.
    std::shared_ptr<const Fp32Linear> qkv_f, attn_out_f, ffn_in_f, ffn_out_f;
  };

  // A batch with its tokens packed back to back (no padding): the linear layers,
  // LayerNorm and GELU run on `total` rows instead of batch x longest; only attention
  // scatters to the padded [batch, longest] layout (TEI's unpadded BERT does the same).
  struct PackedBatch {
    int64_t batch = 0, longest = 0, total = 0;
    bool uniform = false;      // every sequence has `longest` tokens: no scatter, no mask
    torch::Tensor ids;         // [total] vocabulary ids
    torch::Tensor positions;   // [total] position of each token in its sequence
    torch::Tensor seq_index;   // [total] sequence of each token
    torch::Tensor pad_index;   // [total] row of each token in the [batch * longest] layout
    torch::Tensor offsets;     // [batch] first packed row of each sequence
    torch::Tensor lengths;     // [batch] tokens of each sequence
    torch::Tensor mask;        // [batch, longest] 1 for tokens, 0 for padding
  };

  // Which fused CUDA kernels Forward uses (EMBEDSERVE_FUSED_KERNELS, read by Create;
  // only on a CUDA device of a build with the kernels, fused_ops.h). All off = the
  // ATen-op path every other device runs.
  struct FusedPath {
    // Residual add + the projection's bias + LayerNorm in one kernel after a bias-free
    // GEMM (attention output and FFN output), and the embeddings' two row gathers + add
    // + LayerNorm in one kernel.
    bool layer_norm = false;
    // The FFN-in bias + activation: kAten (addmm with a bias epilogue, then at::gelu or
    // at::relu), kKernel (bias-free GEMM, then one bias + GELU kernel, erf or tanh as the
    // model says; ReLU models stay on kAten), kLtEpilogue (at::_addmm_activation: cuBLASLt's
    // bias + GELU or ReLU epilogue inside the GEMM; its GELU is the tanh form, so for an
    // erf-GELU model it is used only in fp16/bf16, and fp32 takes kKernel).
    enum class Activation { kAten, kKernel, kLtEpilogue } activation = Activation::kAten;
    // Self-attention of sequences of up to 64 tokens straight on the packed QKV rows
    // (fused_ops.h's FusedPackedAttention) instead of the padded layout, the mask and
    // PyTorch's memory-efficient kernel.
    bool attention = false;
    // That kernel's SIMT form even where its tensor-core form runs (A/B runs).
    bool attention_simt = false;
  };

  BertBackend() = default;
  absl::Status LoadWeights(const SafetensorsFile& file);
  // The embeddings (word + position + token type 0) and their LayerNorm: [total, H].
  torch::Tensor Embeddings(const PackedBatch& in) const;
  // LayerNorm(y + bias + residual) with the layer's LayerNorm weights, where y = x W^T
  // without the bias (fused_.layer_norm) or the ATen way (y = x W^T + b, add, layer_norm).
  torch::Tensor ProjectAddNorm(const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& b, const std::shared_ptr<const Int8Linear>& int8,
                               const torch::Tensor& residual, const torch::Tensor& ln_w,
                               const torch::Tensor& ln_b) const;
  // act(x W^T + b) of the FFN's first layer, as fused_.activation says.
  torch::Tensor FfnIn(const torch::Tensor& x, const Layer& layer) const;
  // Whether Forward runs `in`'s attention through the fused packed kernel (fused_.attention,
  // a CUDA device, a head size and length it takes, and a batch shape where it measured
  // faster: padded graph buckets, eager batches of short sequences).
  bool FusedAttentionRuns(const PackedBatch& in) const;
  // epilogue(x W^T + b) through tuned_gemm_ when it holds an algorithm for this call,
  // else an undefined tensor (the caller runs its ATen op).
  torch::Tensor TunedLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                            TunedGemm::Epilogue epilogue) const;
  // x W^T + b, or through `int8` when set (model.precision int8).
  torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                       const std::shared_ptr<const Int8Linear>& int8) const;
  // Packs `sequences` on the host and moves them to device_ in one copy.
  PackedBatch Pack(absl::Span<const TokenIds* const> sequences, int64_t longest) const;
  // Returns the last hidden state of every packed token, [total, H] in residual_dtype_.
  torch::Tensor Forward(const PackedBatch& in) const;
  // Forward on the CPU with CpuLinearKernel::kFused (fp32 or int8): per layer the fused
  // QKV projection, the packed attention, the output projection adding into the residual
  // stream in place, an in-place LayerNorm, the FFN's first projection with its
  // activation, the second adding into the residual, LayerNorm: 7 calls, no other ops.
  torch::Tensor ForwardCpuFused(const PackedBatch& in) const;
  // Self-attention of one layer on a GPU: scatters the packed qkv [total, 3H] to
  // [B, heads, L, d] with padding, runs SDPA / the memory-efficient kernel (2.x) or
  // matmul + softmax (1.13) under the additive padding `bias` (undefined when uniform),
  // gathers back to [total, H]. The CPU uses PackedSelfAttentionCpu instead.
  torch::Tensor PaddedSelfAttention(const PackedBatch& in, torch::Tensor qkv,
                                    const torch::Tensor& bias) const;
  // The model folder's pooling (BackendInfo::pooling, "mean", "cls" or "max", the ones
  // model_folder.cc accepts), resolved once at load.
  enum class Pooling { kMean, kCls, kMax };
  // Pools [total, H] fp32 hidden states into [batch, H] as pooling_ says.
  torch::Tensor Pool(const PackedBatch& in, const torch::Tensor& hidden) const;

  // CUDA graphs (options.cuda_graphs, a CUDA device and a LibTorch built with CUDA):
  // a small forward is bound by its ~100 kernel launches (about 1 ms on an H100 at
  // batch 1, docs/gpu.md), so Create captures Forward + pooling once per padded bucket
  // (batch 1, 2, 4, ..., 64 x tokens 16, 32, 64, 128; up to 1,024 sequences with
  // ModelOptions::cuda_graph_max_batch; only buckets of at most graph_max_slots_ token
  // slots, past which the eager forward is faster: graph_buckets.h) and Embed replays the
  // smallest bucket that holds a batch. A bucket runs every sequence padded to its
  // length, with the padding masked out of attention and pooling, and filler sequences
  // dropped. The graphs share one memory pool, so replays take turns (graph_mu_).
  struct GraphSlot;  // one captured bucket (bert_backend.cc)
  // Fills graphs_ (nothing without CUDA graph support); LibTorch errors throw.
  void CaptureGraphs();
  // Free memory on device_ (cudaMemGetInfo; 0 without CUDA graphs): logs what they take.
  int64_t FreeDeviceBytes() const;
  // The smallest captured bucket with room for `batch` x `longest`, or null.
  GraphSlot* FindGraph(int64_t batch, int64_t longest) const;
  // Writes `sequences` (empty: only fillers) into the slot's pinned input buffer.
  void FillGraphInputs(GraphSlot& slot, absl::Span<const TokenIds* const> sequences) const;
  // The slot's device inputs as the padded PackedBatch Forward reads.
  PackedBatch GraphInputs(const GraphSlot& slot) const;
  // Forward + pooling of a padded batch: [batch, H] fp32 (what a graph captures).
  torch::Tensor PaddedForwardAndPool(const PackedBatch& in) const;

  BackendInfo info_;
  Pooling pooling_ = Pooling::kMean;
  BertConfig config_;
  torch::Device device_ = torch::kCPU;
  torch::ScalarType dtype_ = torch::kFloat;           // matmul weights and inputs
  torch::ScalarType residual_dtype_ = torch::kFloat;  // embeddings, residual, LayerNorm
  int num_threads_ = 1;
  int cpu_nice_ = 0;  // ModelOptions::cpu_nice
  bool cpu_pin_threads_ = true;  // ModelOptions::cpu_pin_threads
  bool cpu_sched_idle_ = false;  // ModelOptions::cpu_sched_idle
  int64_t graph_max_batch_ = 64;  // ModelOptions::cuda_graph_max_batch
  int64_t graph_max_slots_ = 0;    // largest bucket captured, batch x longest (graph_buckets.h)
  bool int8_ = false;  // model.precision int8 (CPU)
  CpuLinearKernel cpu_linear_ = CpuLinearKernel::kAten;
  FusedPath fused_;
  // CUDA fp16/bf16: the linear layers' cuBLASLt algorithms, timed at load
  // (EMBEDSERVE_GEMM_TUNE, tuned_gemm.h); null = ATen's per-call choice. A shared_ptr so
  // that CPU builds, which never create one, need no TunedGemm destructor.
  std::shared_ptr<const TunedGemm> tuned_gemm_;
  int64_t head_dim_ = 0;
  double attention_scale_ = 1.0;
  torch::Tensor word_emb_;       // [V, H]
  torch::Tensor pos_type_emb_;   // [P, H]: position + token-type-0 embeddings
  torch::Tensor emb_ln_w_, emb_ln_b_;
  std::vector<Layer> layers_;
  std::vector<std::unique_ptr<GraphSlot>> graphs_;  // ordered by batch, then tokens
  std::mutex graph_mu_;  // one graph replay (and its copy back) at a time
  // CUDA: each calling thread queues its work on a stream of its own (CallerStream) rather
  // than all on the default stream; EMBEDSERVE_CUDA_CALLER_STREAMS=0 turns it off.
  bool caller_streams_ = true;
};

}  // namespace internal_model
}  // namespace embedserve

#endif  // EMBEDSERVE_SRC_MODEL_BERT_BACKEND_H_
