// Command: EMBEDSERVE_BENCH_THREADS=2 build/bench/model/forward_ops_bench
//   --benchmark_repetitions=4 --benchmark_enable_random_interleaving=true
// Where a batch-32 fp32 CPU forward spends its time (BertBackend::ForwardCpuFused), op
// by op, against the GEMM ceiling that bench/peers/run.sh reads (Fp32Linear, kBias,
// M 512, n 1536, k 384: linear_kernels_bench's kernel 3).
//
// BM_ForwardSteps runs the fused CPU forward's sequence of kernels (embeddings + 6
// layers of QKV, attention, attn-out + residual, LayerNorm, FFN-in + GELU, FFN-out +
// residual, LayerNorm; then mean pooling as Backend::Embed does) on minilm-l6 shapes with
// random weights, 32 sequences of 10-18 tokens (444 rows, the peers' ~14-token mean),
// and times each step where it runs (caches as in the real forward). Counters per
// forward: "<step> us", and for each linear shape its GF/s; "linear share" is the
// fraction of the forward's time spent in the four linear kernels. BM_Linear times one
// linear shape alone, hot, at the forward's M (and the ceiling's M 512), so a shape that
// runs below the ceiling in place can be told from one that runs below it alone.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "benchmark/benchmark.h"
#include "cpu_attention.h"
#include "cpu_fp32_linear.h"
#include "cpu_fused.h"

namespace {

namespace im = embedserve::internal_model;
using Clock = std::chrono::steady_clock;

constexpr int64_t kHidden = 384, kInter = 1536, kHeads = 12, kLayers = 6, kBatch = 32;
constexpr int64_t kVocab = 30522, kPositions = 512;

void SetThreads() {
  const char* t = std::getenv("EMBEDSERVE_BENCH_THREADS");
  at::set_num_threads(t != nullptr && std::atoi(t) > 0 ? std::atoi(t) : 2);
}

std::unique_ptr<im::Fp32Linear> MakeLinear(int64_t n, int64_t k, im::LinearEpilogue e) {
  auto l = im::Fp32Linear::Create(torch::randn({n, k}) * 0.02, torch::randn({n}) * 0.02, e);
  TORCH_CHECK(l.ok(), std::string(l.status().message()));
  return *std::move(l);
}

// The four linear layers of one encoder layer, as BertBackend builds them for fp32.
struct LayerWeights {
  std::unique_ptr<im::Fp32Linear> qkv, attn_out, ffn_in, ffn_out;
  torch::Tensor ln1_w, ln1_b, ln2_w, ln2_b;
};

struct Model {
  torch::Tensor word, pos, emb_ln_w, emb_ln_b;
  std::vector<LayerWeights> layers;
};

const Model& GetModel() {
  static const Model* model = [] {
    torch::manual_seed(42);
    auto* m = new Model();
    m->word = torch::randn({kVocab, kHidden}) * 0.05;
    m->pos = torch::randn({kPositions, kHidden}) * 0.05;
    m->emb_ln_w = torch::ones({kHidden});
    m->emb_ln_b = torch::zeros({kHidden});
    for (int64_t i = 0; i < kLayers; ++i) {
      LayerWeights l;
      l.qkv = MakeLinear(3 * kHidden, kHidden, im::LinearEpilogue::kBias);
      l.attn_out = MakeLinear(kHidden, kHidden, im::LinearEpilogue::kBiasAddInto);
      l.ffn_in = MakeLinear(kInter, kHidden, im::LinearEpilogue::kBiasGelu);
      l.ffn_out = MakeLinear(kHidden, kInter, im::LinearEpilogue::kBiasAddInto);
      l.ln1_w = torch::ones({kHidden});
      l.ln1_b = torch::zeros({kHidden});
      l.ln2_w = torch::ones({kHidden});
      l.ln2_b = torch::zeros({kHidden});
      m->layers.push_back(std::move(l));
    }
    return m;
  }();
  return *model;
}

// 32 sequences of 10..18 tokens (mean ~14), packed as Backend::Embed packs them.
struct Batch {
  torch::Tensor ids, positions, offsets, lengths, seq_index;
  int64_t total = 0;
};

Batch MakeBatch() {
  Batch b;
  std::vector<int64_t> lengths(kBatch), offsets(kBatch), ids, positions, seq_index;
  for (int64_t i = 0; i < kBatch; ++i) {
    lengths[i] = 14 + (i * 7) % 9 - 4;
    offsets[i] = b.total;
    for (int64_t j = 0; j < lengths[i]; ++j) {
      ids.push_back(j == 0 ? 101 : 1000 + (i * 131 + j * 17) % 29000);
      positions.push_back(j);
      seq_index.push_back(i);
    }
    b.total += lengths[i];
  }
  auto t = [](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); };
  b.ids = t(ids);
  b.positions = t(positions);
  b.offsets = t(offsets);
  b.lengths = t(lengths);
  b.seq_index = t(seq_index);
  return b;
}

enum Step { kEmbed, kQkv, kAttention, kAttnOut, kLn1, kFfnIn, kFfnOut, kLn2, kPool, kSteps };
const char* const kStepNames[kSteps] = {"embed", "qkv", "attention", "attn_out", "ln1",
                                        "ffn_in", "ffn_out", "ln2", "pool"};

void BM_ForwardSteps(benchmark::State& state) {
  SetThreads();
  c10::InferenceMode guard;
  const Model& model = GetModel();
  const Batch batch = MakeBatch();
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHidden / kHeads));
  double ns[kSteps] = {};
  double total_ns = 0;
  auto forward = [&](double* acc) {
    auto t = Clock::now();
    auto lap = [&](Step s) {
      const auto now = Clock::now();
      if (acc != nullptr) acc[s] += std::chrono::duration<double, std::nano>(now - t).count();
      t = now;
    };
    torch::Tensor x = im::EmbedLayerNormCpu(model.word, model.pos, batch.ids, batch.positions,
                                            model.emb_ln_w, model.emb_ln_b, 1e-12);
    lap(kEmbed);
    for (const LayerWeights& l : model.layers) {
      const torch::Tensor qkv = l.qkv->Forward(x);
      lap(kQkv);
      const torch::Tensor ctx =
          im::PackedSelfAttentionCpu(qkv, batch.offsets, batch.lengths, kHeads, scale);
      lap(kAttention);
      l.attn_out->Forward(ctx, x);
      lap(kAttnOut);
      im::LayerNormInPlaceCpu(x, l.ln1_w, l.ln1_b, 1e-12);
      lap(kLn1);
      const torch::Tensor inter = l.ffn_in->Forward(x);
      lap(kFfnIn);
      l.ffn_out->Forward(inter, x);
      lap(kFfnOut);
      im::LayerNormInPlaceCpu(x, l.ln2_w, l.ln2_b, 1e-12);
      lap(kLn2);
    }
    // Mean pooling of a batch of unequal lengths, as BertBackend::Pool, and the copy out.
    torch::Tensor pooled = torch::zeros({kBatch, kHidden})
                               .index_add_(0, batch.seq_index, x)
                               .div_(batch.lengths.to(torch::kFloat).unsqueeze(1))
                               .contiguous();
    benchmark::DoNotOptimize(pooled.data_ptr<float>());
    lap(kPool);
  };
  for (int i = 0; i < 3; ++i) forward(nullptr);
  for (auto _ : state) {
    const auto t0 = Clock::now();
    forward(ns);
    total_ns += std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  }
  const double iters = static_cast<double>(state.iterations());
  double steps_ns = 0;
  for (int s = 0; s < kSteps; ++s) {
    state.counters[std::string(kStepNames[s]) + " us"] = ns[s] / iters / 1e3;
    steps_ns += ns[s];
  }
  state.counters["other us"] = (total_ns - steps_ns) / iters / 1e3;
  state.counters["forward us"] = total_ns / iters / 1e3;
  const double t = static_cast<double>(batch.total);
  auto gfs = [&](Step s, int64_t n, int64_t k) {
    return 2.0 * t * n * k * kLayers * iters / ns[s];  // flop / ns = GF/s
  };
  state.counters["qkv GF/s"] = gfs(kQkv, 3 * kHidden, kHidden);
  state.counters["attn_out GF/s"] = gfs(kAttnOut, kHidden, kHidden);
  state.counters["ffn_in GF/s"] = gfs(kFfnIn, kInter, kHidden);
  state.counters["ffn_out GF/s"] = gfs(kFfnOut, kHidden, kInter);
  const double linear_flop =
      2.0 * t * kLayers * (3 * kHidden * kHidden + kHidden * kHidden + 2 * kInter * kHidden);
  state.counters["model GF/s"] = linear_flop * iters / total_ns;
  state.counters["linear share"] =
      (ns[kQkv] + ns[kAttnOut] + ns[kFfnIn] + ns[kFfnOut]) / total_ns;
  state.counters["tokens"] = t;
}
BENCHMARK(BM_ForwardSteps)->UseRealTime()->Unit(benchmark::kMillisecond);

// One linear shape alone, hot: kind 0 QKV (384->1152), 1 attn-out (384->384, += into a
// residual), 2 FFN-in (384->1536, GELU: a bias-free matmul, then bias + GELU in one pass
// of ours, as the model runs it), 3 FFN-out (1536->384, += into a residual), 4 the
// ceiling (384->1536, bias only: what run.sh reads), 5 FFN-in with the bias in oneDNN's
// matmul and then GeluInPlaceCpu (two passes over the output: kind 2's saving).
void BM_Linear(benchmark::State& state) {
  SetThreads();
  c10::InferenceMode guard;
  const int64_t kind = state.range(0), m = state.range(1);
  struct Shape {
    int64_t n, k;
    im::LinearEpilogue e;
    const char* name;
  };
  const Shape shapes[] = {{3 * kHidden, kHidden, im::LinearEpilogue::kBias, "qkv"},
                          {kHidden, kHidden, im::LinearEpilogue::kBiasAddInto, "attn_out"},
                          {kInter, kHidden, im::LinearEpilogue::kBiasGelu, "ffn_in"},
                          {kHidden, kInter, im::LinearEpilogue::kBiasAddInto, "ffn_out"},
                          {kInter, kHidden, im::LinearEpilogue::kBias, "ceiling"},
                          {kInter, kHidden, im::LinearEpilogue::kBias, "ffn_in_bias_then_gelu"}};
  const Shape& s = shapes[kind];
  torch::manual_seed(1);
  auto linear = MakeLinear(s.n, s.k, s.e);
  torch::Tensor x = torch::randn({m, s.k});
  torch::Tensor residual = torch::zeros({m, s.n});
  auto run = [&] {
    torch::Tensor y = linear->Forward(x, residual);
    if (kind == 5) im::GeluInPlaceCpu(y, /*tanh=*/false);
    return y;
  };
  for (int i = 0; i < 3; ++i) run();
  for (auto _ : state) benchmark::DoNotOptimize(run().data_ptr<float>());
  state.counters["GF/s"] = benchmark::Counter(2.0 * m * s.n * s.k / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(s.name);
}
BENCHMARK(BM_Linear)
    ->ArgNames({"kind", "m"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 5}, {448}})
    ->Args({4, 512})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

// main(): cpu_bench_main.cc.
