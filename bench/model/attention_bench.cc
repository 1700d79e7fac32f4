// Command: EMBEDSERVE_BENCH_THREADS=2 build/bench/model/attention_bench
// One layer's self-attention of minilm-l6 (12 heads x 32) on the CPU, from the packed
// fused-QKV rows [T, 3H] to the context rows [T, H]:
//   padded: what the encoder did before cpu_attention.cc (and still does on a GPU with
//           LibTorch 1.13): scatter to [B, longest] with zeros, permute, matmul, scale,
//           additive padding mask, softmax in fp32, matmul, permute back, gather;
//   packed: PackedSelfAttentionCpu (src/model/cpu_attention.h).
// Args: kernel (0 padded, 1 packed), dtype (0 fp32, 1 bf16), batch, longest, mixed (0:
// every sequence has `longest` tokens; 1: lengths spread evenly over 8..longest, as
// realistic sentence batches are). "GF/cpu-s" divides the attention FLOPs that the real
// tokens need (4 x sum(len^2) x H) by the process CPU time.
#include <time.h>

#include <cstdlib>
#include <vector>

#include <torch/torch.h>

#include "benchmark/benchmark.h"
#include "cpu_attention.h"

namespace {

using embedserve::internal_model::PackedSelfAttentionCpu;

constexpr int64_t kHeads = 12, kHeadDim = 32, kHidden = kHeads * kHeadDim;

double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct Batch {
  std::vector<int64_t> lengths;
  torch::Tensor offsets, lens, pad_index, bias, qkv;
  int64_t total = 0, longest = 0;
  bool uniform = true;
};

Batch MakeBatch(int64_t batch, int64_t longest, bool mixed, torch::ScalarType dtype) {
  Batch b;
  b.longest = longest;
  std::vector<int64_t> offsets, pad_index;
  std::vector<float> mask(static_cast<size_t>(batch * longest), 0.0f);
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t len =
        mixed && batch > 1 ? 8 + (longest - 8) * i / (batch - 1) : longest;
    b.lengths.push_back(len);
    offsets.push_back(b.total);
    for (int64_t j = 0; j < len; ++j) {
      pad_index.push_back(i * longest + j);
      mask[static_cast<size_t>(i * longest + j)] = 1.0f;
    }
    b.total += len;
    if (len != longest) b.uniform = false;
  }
  b.offsets = torch::tensor(offsets, torch::kLong);
  b.lens = torch::tensor(b.lengths, torch::kLong);
  b.pad_index = torch::tensor(pad_index, torch::kLong);
  b.bias = (1 - torch::tensor(mask).view({batch, 1, 1, longest})) * -3.4028234663852886e38;
  torch::manual_seed(1);
  b.qkv = torch::randn({b.total, 3 * kHidden}).to(dtype);
  return b;
}

torch::Tensor Padded(const Batch& b) {
  const int64_t batch = static_cast<int64_t>(b.lengths.size()), len = b.longest;
  torch::Tensor qkv = b.qkv;
  if (!b.uniform) {
    qkv = torch::zeros({batch * len, 3 * kHidden}, qkv.options()).index_copy_(0, b.pad_index, qkv);
  }
  qkv = qkv.view({batch, len, 3, kHeads, kHeadDim}).permute({2, 0, 3, 1, 4});
  torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  torch::Tensor scores =
      at::matmul(q, k.transpose(-1, -2)).to(torch::kFloat).mul_(1.0 / std::sqrt(32.0));
  if (!b.uniform) scores.add_(b.bias);
  torch::Tensor ctx = at::matmul(at::softmax(scores, -1).to(b.qkv.scalar_type()), v);
  ctx = ctx.permute({0, 2, 1, 3}).reshape({batch * len, kHidden});
  if (!b.uniform) ctx = ctx.index_select(0, b.pad_index);
  return ctx;
}

void BM_Attention(benchmark::State& state) {
  const char* t = std::getenv("EMBEDSERVE_BENCH_THREADS");
  at::set_num_threads(t != nullptr && std::atoi(t) > 0 ? std::atoi(t) : 2);
  c10::InferenceMode guard;
  const bool packed = state.range(0) == 1;
  const auto dtype = state.range(1) == 1 ? torch::kBFloat16 : torch::kFloat;
  const Batch b = MakeBatch(state.range(2), state.range(3), state.range(4) == 1, dtype);
  auto run = [&] {
    return packed ? PackedSelfAttentionCpu(b.qkv, b.offsets, b.lens, kHeads, 1.0 / std::sqrt(32.0))
                  : Padded(b);
  };
  for (int i = 0; i < 3; ++i) run();
  const double cpu0 = ProcessCpuSeconds();
  for (auto _ : state) benchmark::DoNotOptimize(run());
  const double cpu = ProcessCpuSeconds() - cpu0;
  double flops = 0;
  for (int64_t len : b.lengths) flops += 4.0 * static_cast<double>(len * len * kHidden);
  state.counters["GF/cpu-s"] = flops * static_cast<double>(state.iterations()) / cpu / 1e9;
  state.SetLabel(std::string(packed ? "packed " : "padded ") +
                 (dtype == torch::kFloat ? "fp32" : "bf16") + ", " +
                 std::to_string(at::get_num_threads()) + " threads");
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"packed", "bf16", "batch", "longest", "mixed"});
  for (int dtype : {0, 1}) {
    for (auto shape : std::vector<std::vector<int64_t>>{{32, 16, 0}, {32, 32, 1}, {32, 128, 0}}) {
      for (int kernel : {0, 1}) b->Args({kernel, dtype, shape[0], shape[1], shape[2]});
    }
  }
}
BENCHMARK(BM_Attention)->Apply(Args)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

// main(): cpu_bench_main.cc.
