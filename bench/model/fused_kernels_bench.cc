// Command: build-gpu/bench/model/fused_kernels_bench  (GPU build, a CUDA device)
//   Env: EMBEDSERVE_BENCH_ROWS (tokens per batch, default 16,384 = 1,024 x 16).
// Per-op GPU time of the encoder's pieces that the fused kernels replace, ATen's way and
// the fused way, at MiniLM-L6's shapes (hidden 384, intermediate 1,536), fp16 and bf16:
//   addnorm_*     residual add + LayerNorm of a [rows, 384] GEMM output (elementwise only)
//   attn_out_*    the attention output block: GEMM 384 -> 384 with its bias, + residual,
//                 LayerNorm (aten: addmm + add_ + layer_norm; fused: mm + one kernel)
//   ffn_out_*     the same for the FFN output (GEMM 1,536 -> 384)
//   gelu_*        bias + GELU of a [rows, 1536] tensor (aten: at::gelu after the bias
//                 epilogue; kernel: one bias + erf-GELU pass)
//   ffn_in_*      GEMM 384 -> 1,536 + bias + GELU: aten (addmm + at::gelu), kernel (mm +
//                 bias + erf GELU kernel), lt (at::_addmm_activation, cuBLASLt's tanh-GELU
//                 epilogue), gemm_only (addmm with bias, no activation: the floor)
// Each iteration times 50 back-to-back calls with CUDA events on the current stream;
// 20 iterations; the counter us_per_call is the mean GPU time of one call.
#include <cuda_runtime_api.h>
#include <torch/torch.h>

#include <c10/cuda/CUDAStream.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "fused_ops.h"

namespace embedserve {
namespace internal_model {
namespace {

constexpr int kCalls = 50;
constexpr int64_t kHidden = 384, kInter = 1536;

int64_t Rows() {
  const char* v = std::getenv("EMBEDSERVE_BENCH_ROWS");
  return v != nullptr ? std::atoll(v) : 16384;
}

torch::Tensor Rand(std::vector<int64_t> shape, torch::ScalarType t, double scale = 1.0) {
  return (torch::randn(shape, torch::TensorOptions().device(torch::kCUDA)) * scale).to(t);
}

void TimeCalls(benchmark::State& state, const std::function<void()>& fn) {
  for (int i = 0; i < 5; ++i) fn();  // warm-up (cuBLAS handles, workspaces, allocator)
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  double total_ms = 0.0;
  for (auto _ : state) {
    cudaEventRecord(start, stream);
    for (int i = 0; i < kCalls; ++i) fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);  // the iteration's kCalls calls
    total_ms += ms;
  }
  state.counters["us_per_call"] =
      total_ms * 1e3 / (static_cast<double>(state.iterations()) * kCalls);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

void Register(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->Iterations(20);  // 20 x 50 calls: ~50 ms per op at these shapes
}

void RegisterAll() {
  for (torch::ScalarType t : {torch::kHalf, torch::kBFloat16}) {
    const std::string dt = t == torch::kHalf ? "fp16" : "bf16";
    const int64_t rows = Rows();
    const double eps = 1e-12;
    // Shared inputs, made lazily on first use (no CUDA work before main).
    struct Inputs {
      torch::Tensor x, r, ctx, inter, y, g, beta, w_o, b_o, w_i, b_i, w_f, b_f, out, big;
    };
    auto inputs = std::make_shared<Inputs>();
    auto get = [inputs, t, rows]() -> Inputs& {
      Inputs& in = *inputs;
      if (!in.x.defined()) {
        in.x = Rand({rows, kHidden}, t);
        in.r = Rand({rows, kHidden}, t);
        in.ctx = Rand({rows, kHidden}, t);
        in.y = Rand({rows, kHidden}, t);
        in.inter = Rand({rows, kInter}, t);
        in.big = Rand({rows, kInter}, t);
        in.g = Rand({kHidden}, t, 0.1) + 1;
        in.beta = Rand({kHidden}, t, 0.1);
        in.w_o = Rand({kHidden, kHidden}, t, 0.05);
        in.b_o = Rand({kHidden}, t, 0.1);
        in.w_i = Rand({kInter, kHidden}, t, 0.05);
        in.b_i = Rand({kInter}, t, 0.1);
        in.w_f = Rand({kHidden, kInter}, t, 0.03);
        in.b_f = Rand({kHidden}, t, 0.1);
        in.out = torch::empty({rows, kHidden}, in.x.options());
      }
      return in;
    };
    Register("addnorm_aten/" + dt, [get, eps](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] { at::layer_norm(at::add(in.y, in.r), {kHidden}, in.g, in.beta, eps); });
    });
    Register("addnorm_fused/" + dt, [get, eps](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] { FusedAddLayerNorm(in.y, in.r, in.b_o, in.g, in.beta, eps, in.out); });
    });
    Register("attn_out_aten/" + dt, [get, eps](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] {
        at::layer_norm(at::linear(in.ctx, in.w_o, in.b_o).add_(in.r), {kHidden}, in.g, in.beta, eps);
      });
    });
    Register("attn_out_fused/" + dt, [get, eps](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] {
        torch::Tensor y = at::mm(in.ctx, in.w_o.t());
        FusedAddLayerNorm(y, in.r, in.b_o, in.g, in.beta, eps, y);
      });
    });
    Register("ffn_out_aten/" + dt, [get, eps](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] {
        at::layer_norm(at::linear(in.inter, in.w_f, in.b_f).add_(in.r), {kHidden}, in.g, in.beta, eps);
      });
    });
    Register("ffn_out_fused/" + dt, [get, eps](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] {
        torch::Tensor y = at::mm(in.inter, in.w_f.t());
        FusedAddLayerNorm(y, in.r, in.b_f, in.g, in.beta, eps, y);
      });
    });
    Register("gelu_aten/" + dt, [get](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] { at::gelu(in.big, "none"); });
    });
    Register("gelu_kernel/" + dt, [get](benchmark::State& s) {
      Inputs& in = get();
      // In place: GELU of GELU stays finite, so repeated calls time real data.
      TimeCalls(s, [&] { FusedBiasGelu_(in.big, in.b_i, false); });
    });
    Register("ffn_in_gemm_only/" + dt, [get](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] { at::linear(in.x, in.w_i, in.b_i); });
    });
    Register("ffn_in_aten/" + dt, [get](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] { at::gelu(at::linear(in.x, in.w_i, in.b_i), "none"); });
    });
    Register("ffn_in_kernel/" + dt, [get](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] {
        torch::Tensor y = at::mm(in.x, in.w_i.t());
        FusedBiasGelu_(y, in.b_i, false);
      });
    });
    Register("ffn_in_lt/" + dt, [get](benchmark::State& s) {
      Inputs& in = get();
      TimeCalls(s, [&] { at::_addmm_activation(in.b_i, in.x, in.w_i.t(), 1, 1, true); });
    });
  }
}

}  // namespace
}  // namespace internal_model
}  // namespace embedserve

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "fused_kernels_bench: no CUDA device\n");
    return 1;
  }
  torch::NoGradGuard no_grad;
  embedserve::internal_model::RegisterAll();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
