#include "bert_backend.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <torch/version.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(EMBEDSERVE_CUDA_GRAPHS)  // set by src/model/CMakeLists.txt for CUDA LibTorch
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cpu_attention.h"
#include "cpu_fused.h"
#include "cpu_vector.h"
#if defined(EMBEDSERVE_CUDA_KERNELS)  // set by src/model/CMakeLists.txt for CUDA LibTorch
#include "fused_kernels.h"
#include "fused_ops.h"
#endif
#if EMBEDSERVE_INT8
#include "cpu_fp32_linear.h"
#include "cpu_int8_linear.h"
#endif
#include "embedserve/common/status_macros.h"
#include "embedserve/model/cpu_environment.h"
#include "spdlog/spdlog.h"

namespace embedserve {
namespace internal_model {
namespace {

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Maps options.device to a torch::Device this LibTorch can use, or an error naming the
// alternative. Never falls back silently.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& requested) {
  const bool cuda = torch::cuda::is_available();
  const bool mps = at::hasMPS();
  if (requested == "auto") {
    if (cuda) return torch::Device(torch::kCUDA, 0);
    if (mps) return torch::Device(torch::kMPS);
    return torch::Device(torch::kCPU);
  }
  if (requested == "cpu") return torch::Device(torch::kCPU);
  if (requested == "mps") {
    if (!mps) {
      return absl::InvalidArgumentError(
          "model.device 'mps' is not available: this LibTorch has no MPS support or the "
          "machine has no Apple GPU; use cpu (or auto)");
    }
    return torch::Device(torch::kMPS);
  }
  // cuda or cuda:N
  int64_t index = 0;
  if (absl::StartsWith(requested, "cuda:") &&
      !absl::SimpleAtoi(absl::string_view(requested).substr(5), &index)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.device '", requested, "' is not cuda:N"));
  }
  if (!cuda) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.device '", requested, "' is not available: this LibTorch (", TORCH_VERSION,
        ") has no CUDA support or sees no GPU; use cpu (or auto)"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index < 0 || index >= count) {
    return absl::InvalidArgumentError(absl::StrCat("model.device '", requested,
                                                   "' does not exist: ", count,
                                                   " CUDA device(s) visible; use cuda:0..cuda:",
                                                   count - 1));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

// Runs `f(i)` on thread i of the calling thread's OpenMP team (libgomp keeps one team
// per calling thread; the caller is thread 0 and runs it inline for a team of one): one
// chunk per thread, grain 1 over [0, threads).
template <typename F>
void OnEachTeamThread(F f) {
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

// Adds `nice` to the niceness of the calling thread and of its OpenMP team, once per
// thread. Errors are ignored: a thread that cannot be lowered runs as it was.
void LowerTeamPriority(int nice) {
  thread_local bool done = false;
  if (done) return;
  done = true;
  OnEachTeamThread([nice](int64_t) {
    const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
    errno = 0;
    const int current = getpriority(PRIO_PROCESS, tid);
    if (errno == 0) setpriority(PRIO_PROCESS, tid, std::min(19, current + nice));
  });
}

// Puts the calling thread and its OpenMP team under SCHED_IDLE, once per calling thread
// (ModelOptions::cpu_sched_idle says why). Errors are ignored.
void IdleTeamPriority() {
  thread_local bool done = false;
  if (done) return;
  done = true;
  OnEachTeamThread([](int64_t) {
    sched_param param{};
    param.sched_priority = 0;
    sched_setscheduler(0, SCHED_IDLE, &param);  // 0: the calling thread (Linux)
  });
}

// Pins thread i of the calling thread's OpenMP team (itself: 0) to the i-th CPU of its
// affinity set, once per calling thread (ModelOptions::cpu_pin_threads says why).
// Errors are ignored: a thread that cannot be pinned runs as it was.
void PinTeamToCpus() {
  thread_local bool done = false;
  if (done) return;
  done = true;
  for (const char* name : {"OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY"}) {
    if (std::getenv(name) != nullptr) return;
  }
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  if (at::get_num_threads() < 2 || cpus.size() < 2) return;
  OnEachTeamThread([&](int64_t i) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpus[static_cast<size_t>(i) % cpus.size()], &one);
    sched_setaffinity(0, sizeof(one), &one);  // 0: the calling thread
  });
}

// Copies a safetensors tensor into a new fp32 CPU tensor (the mapping may be unaligned,
// so no from_blob on it).
torch::Tensor ToFloatTensor(const SafetensorsFile& file, const SafetensorsTensor& t) {
  torch::ScalarType src = torch::kFloat;
  if (t.dtype == SafetensorsDtype::kF16) src = torch::kHalf;
  if (t.dtype == SafetensorsDtype::kBF16) src = torch::kBFloat16;
  torch::Tensor out = torch::empty(t.shape, torch::TensorOptions().dtype(src));
  const absl::Span<const uint8_t> bytes = file.Data(t);
  if (!bytes.empty()) std::memcpy(out.data_ptr(), bytes.data(), bytes.size());
  return out.to(torch::kFloat);
}

// Looks a weight up by its name with or without the "bert." prefix and checks its
// dtype and shape.
absl::StatusOr<torch::Tensor> GetWeight(const SafetensorsFile& file, const std::string& name,
                                        std::vector<int64_t> expected_shape) {
  const SafetensorsTensor* t = file.Find(name);
  if (t == nullptr) t = file.Find("bert." + name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.path(), ": tensor '", name, "' (or 'bert.", name, "') is missing"));
  }
  if (t->dtype != SafetensorsDtype::kF32 && t->dtype != SafetensorsDtype::kF16 &&
      t->dtype != SafetensorsDtype::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": tensor '", t->name, "' has dtype ",
                     SafetensorsDtypeName(t->dtype), "; weights must be F32, F16 or BF16"));
  }
  if (t->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.path(), ": tensor '", t->name, "' has shape ", ShapeString(t->shape),
        "; config.json implies ", ShapeString(expected_shape)));
  }
  return ToFloatTensor(file, *t);
}

// Runs `fn`, turning LibTorch exceptions into a Status.
template <typename Fn>
absl::Status CatchTorch(absl::string_view what, Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
  return absl::OkStatus();
}

// PyTorch's memory-efficient attention kernel, called directly (an ATen op with this
// signature since 2.1). q, k, v: [B, heads, L, d]; bias: undefined (no padding) or
// [B, 1, 1, L] in q's dtype with rows aligned to 16 elements. CUDA only.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
constexpr bool kHasEfficientAttention = true;
torch::Tensor EfficientAttention(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, const torch::Tensor& bias) {
  if (!bias.defined()) {
    return std::get<0>(at::_scaled_dot_product_efficient_attention(
        q, k, v, /*attn_bias=*/{}, /*compute_log_sumexp=*/false));
  }
  return std::get<0>(at::_scaled_dot_product_efficient_attention(
      q, k, v, bias.expand({q.size(0), q.size(1), q.size(2), k.size(2)}),
      /*compute_log_sumexp=*/false));
}
#else
constexpr bool kHasEfficientAttention = false;
torch::Tensor EfficientAttention(const torch::Tensor&, const torch::Tensor&,
                                 const torch::Tensor&, const torch::Tensor&) {
  return torch::Tensor();
}
#endif
// Up to this many tokens per sequence the memory-efficient kernel beat SDPA's default
// choice (cuDNN) on an H100 at 16, 32 and 64 tokens; cuDNN won at 128 (docs/gpu.md).
constexpr int64_t kEfficientAttentionMaxTokens = 64;

// EMBEDSERVE_FUSED_KERNELS (CUDA only; bert_backend.h's FusedPath): unset, "1" or "on"
// is the default set below; "0" or "off" the ATen-op path; otherwise a comma-separated
// list of "ln" (fused residual + bias + LayerNorm), "gelu" (own bias + GELU kernel),
// "gelu_lt" (cuBLASLt's bias + GELU epilogue), "attn" (self-attention on the packed QKV
// rows, fused_kernels.h's PackedAttention) and "attn_simt" (the same in its SIMT form,
// also for fp16/bf16). For A/B runs of one build.
constexpr char kFusedKernelsEnv[] = "EMBEDSERVE_FUSED_KERNELS";
constexpr char kCallerStreamsEnv[] = "EMBEDSERVE_CUDA_CALLER_STREAMS";
constexpr char kFusedKernelsDefault[] = "ln,gelu_lt,attn";
// Eager batches take the packed attention kernel up to this mean length (tokens a
// sequence), in its tensor-core form (fp16/bf16) and in its SIMT form (fp32, attn_simt);
// FusedAttentionRuns says why.
constexpr int64_t kFusedAttentionMaxMeanTokens = 32;
constexpr int64_t kFusedAttentionSimtMaxMeanTokens = 16;
// EMBEDSERVE_GEMM_TUNE (CUDA fp16/bf16, a build with the fused kernels): "1" or "on" (and
// unset: kGemmTuneDefault) times cuBLASLt's candidate algorithms for each linear layer's
// shape at load and keeps the fastest (tuned_gemm.h); "0" or "off" leaves the choice to
// ATen/cuBLAS per call. For A/B runs of one build. On by default since the A/B of
// docs/results/gpu-h200/gemm-attn-20261204 (BM_Embed fp16 1,024 x 16 faster in all four
// pairs, served batch 32 at c16 +13%).
constexpr char kGemmTuneEnv[] = "EMBEDSERVE_GEMM_TUNE";
constexpr bool kGemmTuneDefault = true;
// EMBEDSERVE_GRAPH_MAX_SLOTS (CUDA graphs only): the largest bucket captured, in token
// slots, for A/B runs of one build (graph_buckets.h); unset: GraphMaxSlots's.
constexpr char kGraphMaxSlotsEnv[] = "EMBEDSERVE_GRAPH_MAX_SLOTS";

absl::Status ParseFusedKernels(absl::string_view spec, bool* layer_norm, bool* gelu_kernel,
                               bool* gelu_lt, bool* attention, bool* attention_simt) {
  *layer_norm = *gelu_kernel = *gelu_lt = *attention = *attention_simt = false;
  if (spec.empty() || spec == "1" || spec == "on") spec = kFusedKernelsDefault;
  if (spec == "0" || spec == "off") return absl::OkStatus();
  for (absl::string_view token : absl::StrSplit(spec, ',')) {
    if (token == "ln") {
      *layer_norm = true;
    } else if (token == "gelu") {
      *gelu_kernel = true;
    } else if (token == "gelu_lt") {
      *gelu_lt = true;
    } else if (token == "attn") {
      *attention = true;
    } else if (token == "attn_simt") {
      *attention = *attention_simt = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          kFusedKernelsEnv, "='", spec,
          "': expected 0, off, 1, on or a comma-separated list of ln, gelu, gelu_lt, attn, "
          "attn_simt"));
    }
  }
  if (*gelu_kernel && *gelu_lt) {
    return absl::InvalidArgumentError(
        absl::StrCat(kFusedKernelsEnv, "='", spec, "': gelu and gelu_lt exclude each other"));
  }
  return absl::OkStatus();
}

// The padded buckets CUDA graphs may be captured for (bert_backend.h), those of at most
// ModelOptions::cuda_graph_max_batch sequences and graph_max_slots_ token slots
// (graph_buckets.h). Up to 64 sequences by default: a Similarity request of 32 pairs has
// up to 64 texts.
constexpr int64_t kGraphBatches[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
constexpr int64_t kGraphTokens[] = {16, 32, 64, 128};

}  // namespace

// One captured CUDA graph bucket.
struct BertBackend::GraphSlot {
  int64_t batch = 0, longest = 0;  // the padded bucket
  torch::Tensor host;              // pinned int64: ids, positions [batch * longest],
                                   // lengths [batch], mask [batch * longest]
  torch::Tensor dev;               // its device copy, which the graph reads
  torch::Tensor pad_index;         // arange(batch * longest) on the device
  torch::Tensor out;               // [batch, H] fp32 pooled rows, which the graph writes
  torch::Tensor host_out;          // pinned, for the copy back
#if defined(EMBEDSERVE_CUDA_GRAPHS)
  at::cuda::CUDAGraph graph;
#endif
};

absl::StatusOr<std::unique_ptr<BertBackend>> BertBackend::Create(const ModelFolder& folder,
                                                                  const ModelOptions& options) {
  ES_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<BertBackend> b(new BertBackend());
  b->config_ = folder.config;
  const BertConfig& c = b->config_;

  ES_ASSIGN_OR_RETURN(b->device_, ResolveDevice(options.device));
  if (options.precision == "fp16") b->dtype_ = torch::kHalf;
  if (options.precision == "bf16") b->dtype_ = torch::kBFloat16;
  // bf16 on CPU: matmuls in bf16 (oneDNN), the residual stream, LayerNorm and softmax
  // in fp32 (LibTorch 1.13's bf16 LayerNorm is ~9x slower than fp32 here, and fp32 is
  // more accurate). Elsewhere everything runs in the compute dtype.
  b->residual_dtype_ = b->dtype_;
  if (b->device_.is_cpu() && b->dtype_ == torch::kBFloat16) b->residual_dtype_ = torch::kFloat;
  if (b->device_.is_cpu()) {
    if (b->dtype_ == torch::kHalf) {
      return absl::InvalidArgumentError(
          "model.precision 'fp16' is not supported on cpu: LibTorch has no fast fp16 CPU "
          "matmul (1.13 has none at all: addmm is not implemented for Half); use bf16 (or "
          "fp32) on cpu, fp16 on cuda");
    }
    if (options.precision == "int8") {
#if !EMBEDSERVE_INT8
      return absl::InvalidArgumentError(
          "model.precision 'int8' needs a build with oneDNN's headers (libdnnl-dev); this "
          "build has none: use fp32 or bf16");
#else
      if (!CpuHasInt8Dot()) {
        return absl::InvalidArgumentError(
            "model.precision 'int8' needs a cpu with VNNI (avx512_vnni or avx_vnni), which "
            "this one lacks (oneDNN's int8 kernels saturate without it); use fp32");
      }
#endif
      b->int8_ = true;
    }
    if (b->dtype_ == torch::kBFloat16 && !CpuHasFastBf16()) {
      return absl::InvalidArgumentError(
          "model.precision 'bf16' is not supported on this cpu: it lacks AVX-512 "
          "(avx512bw/vl/dq), so LibTorch would use slow reference kernels; use fp32");
    }
  }

  if (options.precision == "int8" && !b->device_.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.precision 'int8' runs on cpu only; on ", b->device_.str(), " use fp16 or bf16"));
  }

  int64_t max_len = folder.max_seq_length;
  if (options.max_seq_length > 0) {
    if (options.max_seq_length > c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.max_seq_length must be <= the model's max_position_embeddings (",
          c.max_position_embeddings, "); was ", options.max_seq_length));
    }
    max_len = options.max_seq_length;
  }

  b->num_threads_ = options.num_threads > 0 ? options.num_threads : UsableCpuCount();
  b->cpu_nice_ = options.cpu_nice;
  b->cpu_pin_threads_ = options.cpu_pin_threads;
  b->cpu_sched_idle_ = options.cpu_sched_idle;
  b->graph_max_batch_ = options.cuda_graph_max_batch;
  b->head_dim_ = c.hidden_size / c.num_attention_heads;
  b->attention_scale_ = 1.0 / std::sqrt(static_cast<double>(b->head_dim_));
  // fp32 and int8 on the CPU run ForwardCpuFused where this build has oneDNN's headers;
  // EMBEDSERVE_CPU_LINEAR=aten (at::linear and separate ops, as before it) or =onednn
  // (at::mkldnn_linear) choose the older paths, for A/B measurements.
  const char* kernel = std::getenv("EMBEDSERVE_CPU_LINEAR");
  if (kernel != nullptr && std::strcmp(kernel, "onednn") == 0) {
    b->cpu_linear_ = CpuLinearKernel::kOneDnn;
  } else if (EMBEDSERVE_INT8 && b->device_.is_cpu() && b->dtype_ == torch::kFloat &&
             !(kernel != nullptr && std::strcmp(kernel, "aten") == 0)) {
    b->cpu_linear_ = CpuLinearKernel::kFused;
  }

  const std::string weights_path = folder.path + "/model.safetensors";
  ES_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(weights_path));
  absl::Status load_status;
  ES_RETURN_IF_ERROR(
      CatchTorch("loading weights", [&] { load_status = b->LoadWeights(*file); }));
  ES_RETURN_IF_ERROR(load_status);

  BackendInfo& info = b->info_;
  info.model_name = folder.model_name;
  info.model_path = folder.path;
  info.synthetic = c.synthetic;
  info.dimension = c.hidden_size;
  info.max_seq_length = max_len;
  info.pooling = folder.pooling;
  if (folder.pooling == "cls") {
    b->pooling_ = Pooling::kCls;
  } else if (folder.pooling == "max") {
    b->pooling_ = Pooling::kMax;
  } else if (folder.pooling != "mean") {
    return absl::InvalidArgumentError(absl::StrCat(
        folder.path, ": pooling \"", folder.pooling, "\" is not mean, cls or max"));
  }
  info.normalize = folder.normalize;
  info.device = b->device_.str();
  info.precision = options.precision;
  // Linear layers run on packed tokens (Forward): a batch costs the sum of its lengths,
  // not longest x count; only the (small) attention step pads.
  info.pads_inputs = false;
  info.runtime = absl::StrCat("libtorch ", TORCH_VERSION);
  if (b->device_.is_cpu()) {
    absl::StrAppend(&info.runtime, " (cpu, ", b->num_threads_, " threads, ",
                    b->cpu_linear_ == CpuLinearKernel::kOneDnn  ? "onednn"
                    : b->cpu_linear_ == CpuLinearKernel::kFused ? "fused"
                                                                : "aten",
                    " linear, ", cpu_vector::CpuKernelIsaName(), " kernels");
    if (const std::string blas = OpenBlasCoreName(); !blas.empty()) {
      absl::StrAppend(&info.runtime, ", OpenBLAS ", blas);
    }
    absl::StrAppend(&info.runtime, ")");
  }
  if (b->device_.is_cuda() && b->dtype_ == torch::kFloat) {
    // Per process in LibTorch ("high" lets fp32 matmuls use TF32 tensor cores).
    at::globalContext().setFloat32MatmulPrecision(options.tf32 ? "high" : "highest");
    if (options.tf32) absl::StrAppend(&info.runtime, " (TF32 matmuls)");
  }
  if (b->device_.is_cuda()) {
    const char* env = std::getenv(kFusedKernelsEnv);
    bool layer_norm = false, gelu_kernel = false, gelu_lt = false, attention = false,
         attention_simt = false;
    ES_RETURN_IF_ERROR(ParseFusedKernels(env == nullptr ? "" : env, &layer_norm, &gelu_kernel,
                                         &gelu_lt, &attention, &attention_simt));
#if defined(EMBEDSERVE_CUDA_KERNELS)
    using Act = FusedPath::Activation;
    const bool erf_gelu = c.hidden_act == "gelu";
    const bool tanh_gelu = c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh";
    b->fused_.layer_norm = layer_norm;
    b->fused_.attention = attention;
    b->fused_.attention_simt = attention_simt;
    if (gelu_lt) {
      // cuBLASLt's GELU epilogue is the tanh form: exact for tanh-GELU and ReLU models; for
      // erf-GELU ones only in fp16/bf16 (its fidelity: docs/gpu.md), fp32 keeps the erf.
      b->fused_.activation = (erf_gelu && b->dtype_ == torch::kFloat) ? Act::kKernel
                                                                       : Act::kLtEpilogue;
    } else if (gelu_kernel && (erf_gelu || tanh_gelu)) {
      b->fused_.activation = Act::kKernel;
    }
    if (b->fused_.activation == Act::kKernel && !(erf_gelu || tanh_gelu)) {
      b->fused_.activation = Act::kAten;  // ReLU: no kernel of ours
    }
    std::vector<std::string> used;
    if (b->fused_.layer_norm) used.push_back("residual+bias+LayerNorm");
    if (b->fused_.activation == Act::kKernel) used.push_back("bias+GELU kernel");
    if (b->fused_.activation == Act::kLtEpilogue) used.push_back("cuBLASLt bias+activation epilogue");
    if (b->fused_.attention) {
      used.push_back(attention_simt ? "packed attention (<= 64 tokens, SIMT form)"
                                    : "packed attention (<= 64 tokens)");
    }
    if (!used.empty()) absl::StrAppend(&info.runtime, " (fused: ", absl::StrJoin(used, ", "), ")");
    const char* tune_env = std::getenv(kGemmTuneEnv);
    const absl::string_view tune = tune_env == nullptr ? "" : tune_env;
    if (!tune.empty() && tune != "0" && tune != "off" && tune != "1" && tune != "on") {
      return absl::InvalidArgumentError(
          absl::StrCat(kGemmTuneEnv, "='", tune, "': expected 0, off, 1 or on"));
    }
    const bool tune_on = tune.empty() ? kGemmTuneDefault : (tune == "1" || tune == "on");
    if (tune_on && (b->dtype_ == torch::kHalf || b->dtype_ == torch::kBFloat16)) {
      // The shapes Forward runs through TunedLinear: the QKV projection (bias epilogue),
      // and with the fused LayerNorm the two bias-free projections before it; the FFN-in
      // GEMM when its activation is cuBLASLt's epilogue.
      using Epi = TunedGemm::Epilogue;
      const int64_t h = c.hidden_size, inter = c.intermediate_size;
      std::vector<TunedGemm::Shape> shapes = {{3 * h, h, Epi::kBias}};
      if (b->fused_.layer_norm) {
        shapes.push_back({h, h, Epi::kNone});
        shapes.push_back({h, inter, Epi::kNone});
      }
      if (b->fused_.activation == Act::kLtEpilogue) {
        shapes.push_back({inter, h, c.hidden_act == "relu" ? Epi::kBiasRelu : Epi::kBiasGeluTanh});
      }
      const auto start = std::chrono::steady_clock::now();
      ES_RETURN_IF_ERROR(CatchTorch("tuning the GEMMs (EMBEDSERVE_GEMM_TUNE=0 turns it off)", [&] {
        b->tuned_gemm_ = TunedGemm::Create(shapes, b->dtype_, b->device_, TunedGemm::Options());
      }));
      if (b->tuned_gemm_ != nullptr) {
        absl::StrAppend(&info.runtime, " (tuned cuBLASLt GEMMs)");
        spdlog::info("tuned {} GEMM shapes x token counts in {} ms",
                     b->tuned_gemm_->Report().size(),
                     std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - start).count());
        for (const std::string& line : b->tuned_gemm_->Report()) spdlog::info("{}", line);
      }
    }
#else
    (void)layer_norm;
    (void)gelu_kernel;
    (void)gelu_lt;
    (void)attention;
#endif
  }
  if (const char* env = std::getenv(kCallerStreamsEnv); env != nullptr) {
    if (std::string(env) != "0" && std::string(env) != "1") {
      return absl::InvalidArgumentError(
          absl::StrCat(kCallerStreamsEnv, " must be 0 or 1; was '", env, "'"));
    }
    b->caller_streams_ = std::string(env) == "1";
  }
  if (options.cuda_graphs && b->device_.is_cuda()) {
    const char* max_slots = std::getenv(kGraphMaxSlotsEnv);
    ES_ASSIGN_OR_RETURN(b->graph_max_slots_,
                        ParseGraphMaxSlots(max_slots == nullptr ? "" : max_slots,
                                           GraphMaxSlots(options.precision, options.tf32)));
    const auto start = std::chrono::steady_clock::now();
    const int64_t free_before = b->FreeDeviceBytes();
    ES_RETURN_IF_ERROR(CatchTorch("capturing CUDA graphs (model.cuda_graphs: false turns "
                                  "them off)",
                                  [&] { b->CaptureGraphs(); }));
    info.cuda_graphs = static_cast<int>(b->graphs_.size());
    if (!b->graphs_.empty()) {
      const GraphSlot& largest = *b->graphs_.back();
      absl::StrAppend(&info.runtime, " (", b->graphs_.size(), " CUDA graphs for batches up to ",
                      largest.batch, " x ", largest.longest, " tokens)");
      spdlog::info("captured {} CUDA graphs (batch <= {}, tokens <= {}, token slots <= {}) in {} "
                   "ms; they hold {} MiB of device memory",
                   b->graphs_.size(), largest.batch, largest.longest, b->graph_max_slots_,
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - start).count(),
                   (free_before - b->FreeDeviceBytes()) >> 20);
    }
  }
  return b;
}

absl::Status BertBackend::LoadWeights(const SafetensorsFile& file) {
  const BertConfig& c = config_;
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  // Check every tensor first (fp32 copies on the CPU), then convert and move.
  ES_ASSIGN_OR_RETURN(torch::Tensor word,
                      GetWeight(file, "embeddings.word_embeddings.weight", {c.vocab_size, h}));
  ES_ASSIGN_OR_RETURN(torch::Tensor pos, GetWeight(file, "embeddings.position_embeddings.weight",
                                                   {c.max_position_embeddings, h}));
  ES_ASSIGN_OR_RETURN(torch::Tensor type, GetWeight(file, "embeddings.token_type_embeddings.weight",
                                                    {c.type_vocab_size, h}));
  ES_ASSIGN_OR_RETURN(torch::Tensor eln_w, GetWeight(file, "embeddings.LayerNorm.weight", {h}));
  ES_ASSIGN_OR_RETURN(torch::Tensor eln_b, GetWeight(file, "embeddings.LayerNorm.bias", {h}));
  struct RawLayer {
    torch::Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, f_w, f_b,
        ln2_w, ln2_b;
  };
  std::vector<RawLayer> raw(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("encoder.layer.", l, ".");
    RawLayer& r = raw[l];
    ES_ASSIGN_OR_RETURN(r.q_w, GetWeight(file, p + "attention.self.query.weight", {h, h}));
    ES_ASSIGN_OR_RETURN(r.q_b, GetWeight(file, p + "attention.self.query.bias", {h}));
    ES_ASSIGN_OR_RETURN(r.k_w, GetWeight(file, p + "attention.self.key.weight", {h, h}));
    ES_ASSIGN_OR_RETURN(r.k_b, GetWeight(file, p + "attention.self.key.bias", {h}));
    ES_ASSIGN_OR_RETURN(r.v_w, GetWeight(file, p + "attention.self.value.weight", {h, h}));
    ES_ASSIGN_OR_RETURN(r.v_b, GetWeight(file, p + "attention.self.value.bias", {h}));
    ES_ASSIGN_OR_RETURN(r.o_w, GetWeight(file, p + "attention.output.dense.weight", {h, h}));
    ES_ASSIGN_OR_RETURN(r.o_b, GetWeight(file, p + "attention.output.dense.bias", {h}));
    ES_ASSIGN_OR_RETURN(r.ln1_w, GetWeight(file, p + "attention.output.LayerNorm.weight", {h}));
    ES_ASSIGN_OR_RETURN(r.ln1_b, GetWeight(file, p + "attention.output.LayerNorm.bias", {h}));
    ES_ASSIGN_OR_RETURN(r.i_w, GetWeight(file, p + "intermediate.dense.weight", {inter, h}));
    ES_ASSIGN_OR_RETURN(r.i_b, GetWeight(file, p + "intermediate.dense.bias", {inter}));
    ES_ASSIGN_OR_RETURN(r.f_w, GetWeight(file, p + "output.dense.weight", {h, inter}));
    ES_ASSIGN_OR_RETURN(r.f_b, GetWeight(file, p + "output.dense.bias", {h}));
    ES_ASSIGN_OR_RETURN(r.ln2_w, GetWeight(file, p + "output.LayerNorm.weight", {h}));
    ES_ASSIGN_OR_RETURN(r.ln2_b, GetWeight(file, p + "output.LayerNorm.bias", {h}));
  }

  return CatchTorch("loading weights", [&] {
    torch::NoGradGuard no_grad;
    const auto opts = torch::TensorOptions().device(device_).dtype(dtype_);
    // Weights of the matmuls in the compute dtype; LayerNorm parameters too (LayerNorm
    // on CUDA accumulates in fp32 internally for half inputs).
    auto conv = [&](const torch::Tensor& t) { return t.to(opts).contiguous(); };
    const auto res_opts = torch::TensorOptions().device(device_).dtype(residual_dtype_);
    auto conv_res = [&](const torch::Tensor& t) { return t.to(res_opts).contiguous(); };
    auto conv_linear_w = [&](const torch::Tensor& t) {
      torch::Tensor w = conv(t);
      if (device_.is_cpu() && cpu_linear_ == CpuLinearKernel::kOneDnn) w = w.to_mkldnn();
      return w;
    };
    word_emb_ = conv_res(word);
    pos_type_emb_ = conv_res(pos + type[0].unsqueeze(0));
    emb_ln_w_ = conv_res(eln_w);
    emb_ln_b_ = conv_res(eln_b);
    layers_.clear();
    layers_.reserve(raw.size());
    for (RawLayer& r : raw) {
      Layer layer;
#if EMBEDSERVE_INT8
      // kFused: the activation and the residual adds run in the linear layers' epilogues.
      const bool fused = cpu_linear_ == CpuLinearKernel::kFused;
      const LinearEpilogue act = !fused ? LinearEpilogue::kBias
                                 : config_.hidden_act == "relu" ? LinearEpilogue::kBiasRelu
                                 : (config_.hidden_act == "gelu_new" ||
                                    config_.hidden_act == "gelu_pytorch_tanh")
                                     ? LinearEpilogue::kBiasGeluTanh
                                     : LinearEpilogue::kBiasGelu;
      const LinearEpilogue add = fused ? LinearEpilogue::kBiasAddInto : LinearEpilogue::kBias;
      if (int8_ || fused) {
        // The layer's four linear layers as prepacked oneDNN kernels (int8 or fp32).
        auto make = [&](auto* out, const torch::Tensor& w, const torch::Tensor& bias,
                        LinearEpilogue e) {
          using L = std::remove_const_t<typename std::remove_reference_t<decltype(*out)>::element_type>;
          auto l = L::Create(w, bias, e);
          if (!l.ok()) throw std::runtime_error(std::string(l.status().message()));
          *out = std::shared_ptr<const L>(*std::move(l));
        };
        const torch::Tensor qkv_w = torch::cat({r.q_w, r.k_w, r.v_w}, 0);
        const torch::Tensor qkv_b = torch::cat({r.q_b, r.k_b, r.v_b}, 0);
        if (int8_) {
          make(&layer.qkv_q, qkv_w, qkv_b, LinearEpilogue::kBias);
          make(&layer.attn_out_q, r.o_w, r.o_b, add);
          make(&layer.ffn_in_q, r.i_w, r.i_b, act);
          make(&layer.ffn_out_q, r.f_w, r.f_b, add);
        } else {
          make(&layer.qkv_f, qkv_w, qkv_b, LinearEpilogue::kBias);
          make(&layer.attn_out_f, r.o_w, r.o_b, add);
          make(&layer.ffn_in_f, r.i_w, r.i_b, act);
          make(&layer.ffn_out_f, r.f_w, r.f_b, add);
        }
        layer.ln1_w = conv_res(r.ln1_w);
        layer.ln1_b = conv_res(r.ln1_b);
        layer.ln2_w = conv_res(r.ln2_w);
        layer.ln2_b = conv_res(r.ln2_b);
        layers_.push_back(std::move(layer));
        r = RawLayer();
        continue;
      }
#endif
      layer.qkv_w = conv_linear_w(torch::cat({r.q_w, r.k_w, r.v_w}, 0));
      layer.qkv_b = conv(torch::cat({r.q_b, r.k_b, r.v_b}, 0));
      layer.attn_out_w = conv_linear_w(r.o_w);
      layer.attn_out_b = conv(r.o_b);
      layer.ln1_w = conv_res(r.ln1_w);
      layer.ln1_b = conv_res(r.ln1_b);
      layer.ffn_in_w = conv_linear_w(r.i_w);
      layer.ffn_in_b = conv(r.i_b);
      layer.ffn_out_w = conv_linear_w(r.f_w);
      layer.ffn_out_b = conv(r.f_b);
      layer.ln2_w = conv_res(r.ln2_w);
      layer.ln2_b = conv_res(r.ln2_b);
      layers_.push_back(std::move(layer));
      r = RawLayer();  // free the fp32 copies as we go
    }
  });
}

torch::Tensor BertBackend::Linear(const torch::Tensor& x, const torch::Tensor& w,
                                  const torch::Tensor& b,
                                  const std::shared_ptr<const Int8Linear>& int8) const {
#if EMBEDSERVE_INT8
  if (int8 != nullptr) return int8->Forward(x);
#else
  (void)int8;
#endif
  if (cpu_linear_ == CpuLinearKernel::kOneDnn && device_.is_cpu()) {
    return at::mkldnn_linear(x.to_mkldnn(), w, b).to_dense();
  }
  return at::linear(x, w, b);
}

bool BertBackend::FusedAttentionRuns(const PackedBatch& in) const {
#if defined(EMBEDSERVE_CUDA_KERNELS)
  if (!fused_.attention || !device_.is_cuda() ||
      !cuda_kernels::PackedAttentionRuns(head_dim_, in.longest)) {
    return false;
  }
  // Where it was measured faster (graph_buckets_bench, fp16, on an H200): padded graph
  // buckets (no offsets; against the masked memory-efficient kernel, e.g. 128 x 64 holding
  // short texts 0.72 against 0.97 ms with the SIMT form) and eager batches of short
  // sequences. The SIMT form won up to 16 tokens a sequence on average (1,024 x 16: 1.83
  // against 2.07 ms) and lost to the unmasked kernel on uniform batches of 32 and 64
  // tokens (1,024 x 32: 3.31 against 2.90 ms): its blocks run their query rows in turn
  // (docs/results/gpu-h200/gemm-attn-20261204). The tensor-core form, in graph replays of
  // uniform batches, against PyTorch's kernel in the eager forward: 1,024 x 32 2.38
  // against 2.91 ms, 512 x 32 1.20 against 1.53, 512 x 64 2.64 against 2.46
  // (docs/results/gpu-h200/attn-mma-20261204).
  if (!in.offsets.defined()) return true;
  const bool simt = fused_.attention_simt || dtype_ == torch::kFloat;
  return in.total <= (simt ? kFusedAttentionSimtMaxMeanTokens : kFusedAttentionMaxMeanTokens) *
                         in.batch;
#else
  (void)in;
  return false;
#endif
}

torch::Tensor BertBackend::TunedLinear(const torch::Tensor& x, const torch::Tensor& w,
                                       const torch::Tensor& b,
                                       TunedGemm::Epilogue epilogue) const {
#if defined(EMBEDSERVE_CUDA_KERNELS)
  if (tuned_gemm_ != nullptr) return tuned_gemm_->Run(x, w, b, epilogue);
#else
  (void)x;
  (void)w;
  (void)b;
  (void)epilogue;
#endif
  return torch::Tensor();
}

BertBackend::PackedBatch BertBackend::Pack(absl::Span<const TokenIds* const> sequences,
                                           int64_t longest) const {
  PackedBatch in;
  in.batch = static_cast<int64_t>(sequences.size());
  in.longest = longest;
  in.uniform = true;
  for (const TokenIds* seq : sequences) {
    in.total += static_cast<int64_t>(seq->size());
    if (static_cast<int64_t>(seq->size()) != longest) in.uniform = false;
  }
  const int64_t t = in.total, b = in.batch, padded = b * longest;
  // One int64 host buffer: ids, positions, seq_index, pad_index [t each], offsets,
  // lengths [b each], mask [b * longest]; a single copy to the device.
  // Page-locked for a GPU: the upload then skips the driver's bounce buffer and need not
  // block (it is ordered before the forward on the same stream).
  const bool cuda = device_.is_cuda();
  torch::Tensor host = torch::empty({4 * t + 2 * b + padded},
                                    torch::TensorOptions().dtype(torch::kLong).pinned_memory(cuda));
  int64_t* ids = host.data_ptr<int64_t>();
  int64_t* positions = ids + t;
  int64_t* seq_index = positions + t;
  int64_t* pad_index = seq_index + t;
  int64_t* offsets = pad_index + t;
  int64_t* lengths = offsets + b;
  int64_t* mask = lengths + b;
  std::fill(mask, mask + padded, int64_t{0});
  int64_t row = 0;
  for (int64_t i = 0; i < b; ++i) {
    const TokenIds& seq = *sequences[i];
    const int64_t len = static_cast<int64_t>(seq.size());
    offsets[i] = row;
    lengths[i] = len;
    for (int64_t j = 0; j < len; ++j, ++row) {
      ids[row] = seq[j];
      positions[row] = j;
      seq_index[row] = i;
      pad_index[row] = i * longest + j;
      mask[i * longest + j] = 1;
    }
  }
  torch::Tensor dev = host.to(device_, /*non_blocking=*/cuda);
  in.ids = dev.narrow(0, 0, t);
  in.positions = dev.narrow(0, t, t);
  in.seq_index = dev.narrow(0, 2 * t, t);
  in.pad_index = dev.narrow(0, 3 * t, t);
  in.offsets = dev.narrow(0, 4 * t, b);
  in.lengths = dev.narrow(0, 4 * t + b, b);
  in.mask = dev.narrow(0, 4 * t + 2 * b, padded).view({b, longest});
  return in;
}

torch::Tensor BertBackend::PaddedSelfAttention(const PackedBatch& in, torch::Tensor qkv,
                                               const torch::Tensor& bias) const {
  const int64_t batch = in.batch, len = in.longest;
  const int64_t h = config_.hidden_size, heads = config_.num_attention_heads;
  if (!in.uniform) {
    qkv = torch::zeros({batch * len, 3 * h}, qkv.options()).index_copy_(0, in.pad_index, qkv);
  }
  qkv = qkv.view({batch, len, 3, heads, head_dim_}).permute({2, 0, 3, 1, 4});  // [3, B, heads, L, d]
  torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  torch::Tensor ctx;
#if TORCH_VERSION_MAJOR >= 2
  // Up to 64 tokens on CUDA, PyTorch's memory-efficient attention kernel, called
  // directly: SDPA's own pick on Hopper (cuDNN) is slower there (docs/gpu.md).
  if (kHasEfficientAttention && device_.is_cuda() && len <= kEfficientAttentionMaxTokens) {
    ctx = EfficientAttention(q, k, v, bias);
  } else {
    ctx = bias.defined() ? at::scaled_dot_product_attention(q, k, v, bias, 0.0, false)
                         : at::scaled_dot_product_attention(q, k, v, {}, 0.0, false);
  }
#else
  torch::Tensor scores =
      at::matmul(q, k.transpose(-1, -2)).to(residual_dtype_).mul_(attention_scale_);
  if (bias.defined()) scores.add_(bias);
  ctx = at::matmul(at::softmax(scores, -1).to(dtype_), v);
#endif
  ctx = ctx.permute({0, 2, 1, 3}).reshape({batch * len, h});
  if (!in.uniform) ctx = ctx.index_select(0, in.pad_index);  // back to [T, H]
  return ctx;
}

torch::Tensor BertBackend::Embeddings(const PackedBatch& in) const {
  const int64_t h = config_.hidden_size;
  const double eps = config_.layer_norm_eps;
  // Token type 0 everywhere, as sentence-transformers passes no type ids (pos_type_emb_
  // holds position + type-0 rows). Embed checked every id against the vocabulary, and
  // positions are below max_seq_length, so the fused kernel's unchecked gathers stay in
  // the tables.
#if defined(EMBEDSERVE_CUDA_KERNELS)
  if (fused_.layer_norm) {
    return FusedGatherAddLayerNorm(word_emb_, in.ids, pos_type_emb_, in.positions, emb_ln_w_,
                                   emb_ln_b_, eps);
  }
#endif
  torch::Tensor x = word_emb_.index_select(0, in.ids).add_(pos_type_emb_.index_select(0, in.positions));
  return at::layer_norm(x, {h}, emb_ln_w_, emb_ln_b_, eps);
}

torch::Tensor BertBackend::ProjectAddNorm(const torch::Tensor& x, const torch::Tensor& w,
                                          const torch::Tensor& b,
                                          const std::shared_ptr<const Int8Linear>& int8,
                                          const torch::Tensor& residual,
                                          const torch::Tensor& ln_w,
                                          const torch::Tensor& ln_b) const {
  const double eps = config_.layer_norm_eps;
#if defined(EMBEDSERVE_CUDA_KERNELS)
  if (fused_.layer_norm) {
    // One pass instead of three (bias epilogue write, residual add, LayerNorm): the GEMM
    // writes y, the kernel reads y and the residual and writes the result over y.
    torch::Tensor y = TunedLinear(x, w, b, TunedGemm::Epilogue::kNone);
    if (!y.defined()) y = at::mm(x, w.t());
    return FusedAddLayerNorm(y, residual, b, ln_w, ln_b, eps, /*out=*/y);
  }
#endif
  torch::Tensor y = Linear(x, w, b, int8).to(residual_dtype_);
  return at::layer_norm(y.add_(residual), {config_.hidden_size}, ln_w, ln_b, eps);
}

torch::Tensor BertBackend::FfnIn(const torch::Tensor& x, const Layer& layer) const {
  const bool relu = config_.hidden_act == "relu";
  const bool gelu_tanh =
      config_.hidden_act == "gelu_new" || config_.hidden_act == "gelu_pytorch_tanh";
#if defined(EMBEDSERVE_CUDA_KERNELS)
  using Act = FusedPath::Activation;
  if (fused_.activation == Act::kLtEpilogue) {
    torch::Tensor y = TunedLinear(
        x, layer.ffn_in_w, layer.ffn_in_b,
        relu ? TunedGemm::Epilogue::kBiasRelu : TunedGemm::Epilogue::kBiasGeluTanh);
    if (y.defined()) return y;
    // addmm with the activation in cuBLASLt's epilogue (use_gelu false means ReLU).
    return at::_addmm_activation(layer.ffn_in_b, x, layer.ffn_in_w.t(), 1, 1,
                                 /*use_gelu=*/!relu);
  }
  if (fused_.activation == Act::kKernel) {
    torch::Tensor y = at::mm(x, layer.ffn_in_w.t());
    return FusedBiasGelu_(y, layer.ffn_in_b, gelu_tanh);
  }
#endif
  torch::Tensor inter = Linear(x, layer.ffn_in_w, layer.ffn_in_b, layer.ffn_in_q);
  if (relu) return at::relu(inter);
  return at::gelu(inter, gelu_tanh ? "tanh" : "none");
}

#if EMBEDSERVE_INT8
namespace {

// The activations a layer makes besides the residual stream (the QKV projection, the
// attention context, the FFN's inner layer): one buffer each per calling thread, used by
// every layer and kept between calls. Allocated per layer instead, they cost ~490 page
// faults per batch-32 forward (glibc gave the freed megabytes back to the kernel and the
// next matmul faulted them in again; perf on embedserve-bench-inprocess, ~1% of the
// time). A thread's buffers grow to the most rows it has run (at max_batch_tokens' 8,192
// rows, 100 MB for minilm-l6) and are freed when the thread ends.
struct CpuLayerScratch {
  torch::Tensor qkv, ctx, inter;  // [capacity, 3H], [capacity, H], [capacity, I]

  // Makes the buffers hold at least `rows` rows of hidden width h and inner width i.
  void Reserve(int64_t rows, int64_t h, int64_t i) {
    if (!qkv.defined() || qkv.size(0) < rows || qkv.size(1) != 3 * h || inter.size(1) != i) {
      const int64_t capacity = std::max<int64_t>(rows, qkv.defined() ? qkv.size(0) : 0);
      qkv = torch::empty({capacity, 3 * h}, torch::kFloat);
      ctx = torch::empty({capacity, h}, torch::kFloat);
      inter = torch::empty({capacity, i}, torch::kFloat);
    }
  }
};

}  // namespace
#endif

torch::Tensor BertBackend::ForwardCpuFused(const PackedBatch& in) const {
#if EMBEDSERVE_INT8
  const int64_t heads = config_.num_attention_heads;
  const double eps = config_.layer_norm_eps;
  torch::Tensor x = EmbedLayerNormCpu(word_emb_, pos_type_emb_, in.ids, in.positions, emb_ln_w_,
                                      emb_ln_b_, eps);
  const int64_t rows = x.size(0);
  thread_local CpuLayerScratch scratch;
  scratch.Reserve(rows, config_.hidden_size, config_.intermediate_size);
  const torch::Tensor qkv = scratch.qkv.narrow(0, 0, rows);
  const torch::Tensor ctx = scratch.ctx.narrow(0, 0, rows);
  const torch::Tensor inter = scratch.inter.narrow(0, 0, rows);
  // One of the pair is set (int8 or fp32); `out` is the residual for the kBiasAddInto
  // layers, the buffer to write for the others.
  auto linear = [](const std::shared_ptr<const Int8Linear>& q,
                   const std::shared_ptr<const Fp32Linear>& f, const torch::Tensor& input,
                   const torch::Tensor& out) {
    return q != nullptr ? q->Forward(input, out) : f->Forward(input, out);
  };
  for (const Layer& layer : layers_) {
    linear(layer.qkv_q, layer.qkv_f, x, qkv);  // qkv = x W^T + b, [T, 3H]
    PackedSelfAttentionCpu(qkv, in.offsets, in.lengths, heads, attention_scale_, ctx);
    linear(layer.attn_out_q, layer.attn_out_f, ctx, x);  // x += ctx W^T + b
    LayerNormInPlaceCpu(x, layer.ln1_w, layer.ln1_b, eps);
    linear(layer.ffn_in_q, layer.ffn_in_f, x, inter);     // inter = act(x W^T + b)
    linear(layer.ffn_out_q, layer.ffn_out_f, inter, x);  // x += inter W^T + b
    LayerNormInPlaceCpu(x, layer.ln2_w, layer.ln2_b, eps);
  }
  return x;
#else
  (void)in;
  throw std::logic_error("ForwardCpuFused needs a build with oneDNN's headers");
#endif
}

torch::Tensor BertBackend::Forward(const PackedBatch& in) const {
  if (cpu_linear_ == CpuLinearKernel::kFused && device_.is_cpu()) return ForwardCpuFused(in);
  const int64_t batch = in.batch, len = in.longest;
  const int64_t heads = config_.num_attention_heads;
  torch::Tensor x = Embeddings(in);
  // CPU: attention straight on the packed rows (cpu_attention.h), so no padding mask.
  const bool packed_attention = device_.is_cpu();
  // Else an additive mask [B, 1, 1, L]: 0 for tokens, the dtype's lowest value for
  // padding (as transformers does), so padded keys get exactly zero attention weight.
  // None when no sequence is padded (lets 2.x pick its fused attention kernels).
  // CUDA with the fused attention kernel (short sequences): attention on the packed rows
  // as well, so no padding, mask or layout copies either.
  const bool fused_attention = FusedAttentionRuns(in);
  torch::Tensor bias;
  if (!in.uniform && !packed_attention && !fused_attention) {
    const double lowest = residual_dtype_ == torch::kHalf       ? -65504.0
                          : residual_dtype_ == torch::kBFloat16 ? -3.38e38
                                                                : -3.4028234663852886e38;
#if TORCH_VERSION_MAJOR >= 2
    // In the compute dtype, rows padded to 16 elements: the memory-efficient CUDA kernel
    // needs aligned bias rows (SDPA pads the same way when it picks that kernel).
    const int64_t row = (len + 15) / 16 * 16;
    bias = torch::empty({batch, row}, in.mask.options().dtype(dtype_)).narrow(1, 0, len);
    bias.copy_((1 - in.mask.to(residual_dtype_)).mul_(lowest));
    bias = bias.unsqueeze(1).unsqueeze(2);  // [B, 1, 1, L]
#else
    bias = (1 - in.mask.to(residual_dtype_)).mul_(lowest).view({batch, 1, 1, len});
#endif
  }
  for (const Layer& layer : layers_) {
    const torch::Tensor input = x.to(dtype_);
    torch::Tensor qkv = TunedLinear(input, layer.qkv_w, layer.qkv_b,
                                    TunedGemm::Epilogue::kBias);  // [T, 3H]
    if (!qkv.defined()) qkv = Linear(input, layer.qkv_w, layer.qkv_b, layer.qkv_q);
    torch::Tensor ctx;
    if (packed_attention) {
      ctx = PackedSelfAttentionCpu(qkv, in.offsets, in.lengths, heads, attention_scale_);
    } else if (fused_attention) {
#if defined(EMBEDSERVE_CUDA_KERNELS)
      ctx = FusedPackedAttention(qkv, in.offsets, in.lengths, in.longest, heads, attention_scale_,
                                 fused_.attention_simt);
#endif
    } else {
      ctx = PaddedSelfAttention(in, qkv, bias);
    }
    x = ProjectAddNorm(ctx, layer.attn_out_w, layer.attn_out_b, layer.attn_out_q, x, layer.ln1_w,
                       layer.ln1_b);
    torch::Tensor inter = FfnIn(x.to(dtype_), layer);
    x = ProjectAddNorm(inter, layer.ffn_out_w, layer.ffn_out_b, layer.ffn_out_q, x, layer.ln2_w,
                       layer.ln2_b);
  }
  return x;
}

torch::Tensor BertBackend::Pool(const PackedBatch& in, const torch::Tensor& hidden) const {
  const int64_t h = config_.hidden_size;
  if (pooling_ == Pooling::kCls) return hidden.index_select(0, in.offsets);
  if (pooling_ == Pooling::kMax) {
    if (in.uniform) return hidden.view({in.batch, in.longest, h}).amax(1);
    return torch::full({in.batch * in.longest, h}, -std::numeric_limits<float>::infinity(),
                       hidden.options())
        .index_copy_(0, in.pad_index, hidden)
        .view({in.batch, in.longest, h})
        .amax(1);
  }
  // mean over each sequence's tokens
  if (in.uniform) return hidden.view({in.batch, in.longest, h}).mean(1);
  return torch::zeros({in.batch, h}, hidden.options())
      .index_add_(0, in.seq_index, hidden)
      .div_(in.lengths.to(torch::kFloat).unsqueeze(1));
}

// ---------------------------------------------------------------------------------
// CUDA graphs for small batches (see bert_backend.h).

BertBackend::~BertBackend() = default;

int64_t BertBackend::FreeDeviceBytes() const {
#if defined(EMBEDSERVE_CUDA_GRAPHS)
  c10::cuda::CUDAGuard device_guard(device_);
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) == cudaSuccess) return static_cast<int64_t>(free);
#endif
  return 0;
}

BertBackend::GraphSlot* BertBackend::FindGraph(int64_t batch, int64_t longest) const {
  for (const auto& slot : graphs_) {
    if (slot->batch >= batch && slot->longest >= longest) return slot.get();
  }
  return nullptr;
}

void BertBackend::FillGraphInputs(GraphSlot& slot,
                                  absl::Span<const TokenIds* const> sequences) const {
  const int64_t b = slot.batch, len = slot.longest, t = b * len;
  int64_t* ids = slot.host.data_ptr<int64_t>();
  int64_t* positions = ids + t;
  int64_t* lengths = positions + t;
  int64_t* mask = lengths + b;
  std::fill(ids, ids + t, config_.pad_token_id);
  std::fill(positions, positions + t, int64_t{0});
  std::fill(mask, mask + t, int64_t{0});
  for (int64_t i = 0; i < b; ++i) {
    if (i < static_cast<int64_t>(sequences.size())) {
      const TokenIds& seq = *sequences[i];
      lengths[i] = static_cast<int64_t>(seq.size());
      for (int64_t j = 0; j < lengths[i]; ++j) {
        ids[i * len + j] = seq[j];
        positions[i * len + j] = j;
        mask[i * len + j] = 1;
      }
    } else {
      lengths[i] = 1;  // a filler: one pad token, its row is dropped
      mask[i * len] = 1;
    }
  }
}

BertBackend::PackedBatch BertBackend::GraphInputs(const GraphSlot& slot) const {
  const int64_t b = slot.batch, len = slot.longest, t = b * len;
  PackedBatch in;
  in.batch = b;
  in.longest = len;
  in.total = t;
  in.uniform = false;  // attention gets the padding mask
  in.ids = slot.dev.narrow(0, 0, t);
  in.positions = slot.dev.narrow(0, t, t);
  in.lengths = slot.dev.narrow(0, 2 * t, b);
  in.mask = slot.dev.narrow(0, 2 * t + b, t).view({b, len});
  in.pad_index = slot.pad_index;  // every row is already in the padded layout
  return in;
}

torch::Tensor BertBackend::PaddedForwardAndPool(const PackedBatch& in) const {
  const int64_t h = config_.hidden_size;
  torch::Tensor x = Forward(in).to(torch::kFloat).view({in.batch, in.longest, h});
  if (pooling_ == Pooling::kCls) return x.select(1, 0).contiguous();
  torch::Tensor valid = in.mask.unsqueeze(2);  // [B, L, 1]
  if (pooling_ == Pooling::kMax) {
    return x.masked_fill(valid == 0, -std::numeric_limits<float>::infinity()).amax(1);
  }
  return x.mul(valid.to(torch::kFloat)).sum(1).div_(in.lengths.to(torch::kFloat).unsqueeze(1));
}

void BertBackend::CaptureGraphs() {
#if defined(EMBEDSERVE_CUDA_GRAPHS)
  c10::InferenceMode inference_mode;
  c10::cuda::CUDAGuard device_guard(device_);
  // One memory pool for all graphs: each holds only its output, and the largest
  // bucket's intermediates are shared (Embed replays under graph_mu_).
  const at::cuda::MempoolId_t pool = at::cuda::graph_pool_handle();
  // Captured on one side stream (capture is not allowed on the default one): each
  // stream would get its own cuBLAS workspace.
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, device_.index());
  const auto long_pinned = torch::TensorOptions().dtype(torch::kLong).pinned_memory(true);
  for (int64_t b : kGraphBatches) {
    for (int64_t tokens : kGraphTokens) {
      const int64_t len = std::min(tokens, info_.max_seq_length);
      if (!CaptureGraphBucket(b, len, graph_max_batch_, graph_max_slots_)) break;
      if (!graphs_.empty() && graphs_.back()->batch == b && graphs_.back()->longest == len) {
        continue;  // max_seq_length below this bucket: the last one already covers it
      }
      auto slot = std::make_unique<GraphSlot>();
      slot->batch = b;
      slot->longest = len;
      const int64_t t = b * len;
      slot->host = torch::empty({3 * t + b}, long_pinned);
      FillGraphInputs(*slot, {});
      slot->dev = slot->host.to(device_);
      slot->pad_index = torch::arange(t, torch::TensorOptions().dtype(torch::kLong).device(device_));
      slot->host_out = torch::empty({b, config_.hidden_size},
                                    torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
      const PackedBatch in = GraphInputs(*slot);
      torch::cuda::synchronize();
      // One eager run first: it initialises cuBLAS and the kernels outside the capture.
      {
        c10::cuda::CUDAStreamGuard stream_guard(side);
        PaddedForwardAndPool(in);
        side.synchronize();
        slot->graph.capture_begin(pool);
        slot->out = PaddedForwardAndPool(in);
        slot->graph.capture_end();
      }
      side.synchronize();
      graphs_.push_back(std::move(slot));
    }
  }
  // The eager warm-up runs left blocks in the allocator's cache; give them back so that
  // the memory the log reports is the graphs' own.
  c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

#if defined(EMBEDSERVE_CUDA_GRAPHS)
// The calling thread's own stream on `device`, taken from LibTorch's pool on first use (the
// pool hands its 32 streams out in turn, so a few batcher workers get one each). On one
// shared stream a worker's kernels wait behind every kernel queued before them; on its own
// they run beside another worker's, and its host work (checks, packing, launches, the copy
// back) overlaps theirs: BM_Embed fp16 1,024 x 16 with 3 callers 946k-955k sentences/s on
// the default stream, 1.016M-1.022M on streams of their own, one H200
// (docs/results/gpu-h200/model-rate-20261204).
c10::cuda::CUDAStream CallerStream(c10::DeviceIndex device) {
  thread_local std::vector<std::optional<c10::cuda::CUDAStream>> streams;
  const auto i = static_cast<size_t>(device);
  if (streams.size() <= i) streams.resize(i + 1);
  if (!streams[i].has_value()) streams[i] = c10::cuda::getStreamFromPool(false, device);
  return *streams[i];
}
#endif

absl::StatusOr<EmbeddingMatrix> BertBackend::EmbedWith(absl::Span<const TokenIds* const> sequences,
                                                       const CallOptions& call) {
  EmbeddingMatrix result;
  result.dim = config_.hidden_size;
  if (sequences.empty()) return result;
  int64_t longest = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const TokenIds* seq = sequences[i];
    if (seq == nullptr || seq->empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " is empty"));
    }
    if (static_cast<int64_t>(seq->size()) > info_.max_seq_length) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " has ", seq->size(),
                                                     " tokens; the model's max_seq_length is ",
                                                     info_.max_seq_length));
    }
    for (size_t j = 0; j < seq->size(); ++j) {
      const int32_t id = (*seq)[j];
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " token ", j, ": id ", id,
                                                       " is outside the vocabulary [0, ",
                                                       config_.vocab_size, ")"));
      }
    }
    longest = std::max<int64_t>(longest, static_cast<int64_t>(seq->size()));
  }
  const int64_t batch = static_cast<int64_t>(sequences.size());
  result.rows = batch;
  absl::Status status = CatchTorch("embedding a batch", [&] {
    // The intra-op thread count is per calling thread with OpenMP (oneDNN's too): set
    // it here, on the batcher worker that runs the batch.
    const int threads = call.cpu_threads > 0 ? call.cpu_threads : num_threads_;
    if (device_.is_cpu() && at::get_num_threads() != threads) at::set_num_threads(threads);
    const int nice = call.cpu_nice >= 0 ? call.cpu_nice : cpu_nice_;
    if (device_.is_cpu() && nice > 0) LowerTeamPriority(nice);
    if (device_.is_cpu() && cpu_sched_idle_ && call.cpu_nice < 0) IdleTeamPriority();
    if (device_.is_cpu() && cpu_pin_threads_ && threads > 1) PinTeamToCpus();
#if defined(EMBEDSERVE_CUDA_GRAPHS)
    std::optional<c10::cuda::CUDAStreamGuard> stream_guard;
    if (device_.is_cuda() && caller_streams_) stream_guard.emplace(CallerStream(device_.index()));
#endif
    c10::InferenceMode inference_mode;
    result.values.resize(static_cast<size_t>(batch * result.dim));
    if (GraphSlot* slot = FindGraph(batch, longest)) {
      // One replay at a time, output copied before the next: the graphs share one
      // memory pool, so a replay may overwrite another graph's intermediates and output.
      std::lock_guard<std::mutex> lock(graph_mu_);
      FillGraphInputs(*slot, sequences);
      slot->dev.copy_(slot->host, /*non_blocking=*/true);  // same stream as the replay
#if defined(EMBEDSERVE_CUDA_GRAPHS)
      slot->graph.replay();
#endif
      slot->host_out.copy_(slot->out);  // blocking: waits for the replay
      std::memcpy(result.values.data(), slot->host_out.data_ptr<float>(),
                  result.values.size() * sizeof(float));
      return;
    }
    const PackedBatch in = Pack(sequences, longest);
    torch::Tensor hidden = Forward(in).to(torch::kFloat);  // pooling in fp32
    torch::Tensor pooled = Pool(in, hidden);
    if (device_.is_cuda()) {
      // Into page-locked memory: a pageable destination costs the driver a staging copy
      // (about 0.15 ms more for 1,024 x 384 floats on the H100 machine, docs/gpu.md).
      torch::Tensor host = torch::empty(
          pooled.sizes(), torch::TensorOptions().dtype(torch::kFloat).pinned_memory(true));
      host.copy_(pooled);  // blocking: waits for the forward
      pooled = host;
    } else {
      pooled = pooled.to(torch::kCPU).contiguous();
    }
    std::memcpy(result.values.data(), pooled.data_ptr<float>(),
                result.values.size() * sizeof(float));
  });
  if (!status.ok()) return status;
  return result;
}

#if defined(__x86_64__) || defined(__i386__)
bool CpuHasFastBf16() {
  // The condition LibTorch's oneDNN bf16 kernels need (mkldnn_bf16_device_check);
  // without it bf16 matmuls take a slow reference path.
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
}
bool CpuHasNativeBf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
}
#else
bool CpuHasFastBf16() { return true; }
bool CpuHasNativeBf16() { return true; }
#endif

#if EMBEDSERVE_INT8
bool HasInt8Linear() { return CpuHasInt8Dot(); }
#else
bool HasInt8Linear() { return false; }
#endif

}  // namespace internal_model
}  // namespace embedserve
