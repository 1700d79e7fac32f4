// Command: graph_buckets_bench PRECISION [REPS]   (PRECISION: fp16, bf16, fp32, tf32)
//   Env: EMBEDSERVE_BENCH_DEVICE (default cuda:0), EMBEDSERVE_BENCH_MODEL (model folder;
//        default: a synthetic minilm-l6 written to a temp folder, seed 42).
// The measurements behind GraphMaxSlots (src/model/graph_buckets.h): when a CUDA graph
// bucket is cheaper than the eager packed forward. Three backends of one precision, all
// with model.cuda_graph_max_batch 1024: "graph" has every bucket up to 32,768 token slots
// (EMBEDSERVE_GRAPH_MAX_SLOTS=32768) and replays the first that holds a batch, "eager" has
// no graphs, "rule" the buckets of the precision's slot limit. One process per precision:
// TF32 is a per-process LibTorch setting. Each time is the median of REPS (default 9) closed-loop Embed calls
// (host packing, copies and the device sync included, as the server sees them), the
// three backends taking turns. Prints one line per batch:
//   part n tokens longest bucket slots slots/tokens graph_ms eager_ms rule_ms
// The bucket column is the "graph" backend's. Part "full": every bucket with all its
// slots real (its cost per slot against eager's);
// "short": n texts with embedserve-bench's short-sentence lengths (SentenceGenerator,
// mean ~14 tokens); "mixed": lengths uniform in 5..120.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "embedserve/client/sentence_generator.h"
#include "embedserve/model/model_loader.h"
#include "graph_buckets.h"
#include "synthetic_model.h"

namespace embedserve {
namespace {

// bert_backend.cc's buckets (kGraphBatches x kGraphTokens) of at most 32,768 token slots,
// in its order: the "graph" backend's.
struct Bucket {
  int64_t batch, longest;
};
std::vector<Bucket> Buckets() {
  std::vector<Bucket> out;
  for (int64_t b : {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}) {
    for (int64_t len : {16, 32, 64, 128}) {
      if (!internal_model::CaptureGraphBucket(b, len, 1024, 32768)) break;
      out.push_back({b, len});
    }
  }
  return out;
}

const Bucket* FirstBucket(const std::vector<Bucket>& buckets, int64_t n, int64_t longest) {
  for (const Bucket& b : buckets) {
    if (b.batch >= n && b.longest >= longest) return &b;
  }
  return nullptr;
}

std::unique_ptr<Backend> Load(const std::string& model, const std::string& precision,
                              bool graphs, const char* max_slots) {
  ModelOptions options;
  options.path = model;
  const char* device = std::getenv("EMBEDSERVE_BENCH_DEVICE");
  options.device = device != nullptr && *device != '\0' ? device : "cuda:0";
  options.precision = precision == "tf32" ? "fp32" : precision;
  options.tf32 = precision == "tf32";
  options.cuda_graphs = graphs;
  options.cuda_graph_max_batch = 1024;
  if (max_slots != nullptr) {
    setenv("EMBEDSERVE_GRAPH_MAX_SLOTS", max_slots, 1);
  } else {
    unsetenv("EMBEDSERVE_GRAPH_MAX_SLOTS");
  }
  auto backend = LoadBackend(options);
  unsetenv("EMBEDSERVE_GRAPH_MAX_SLOTS");
  if (!backend.ok()) {
    std::fprintf(stderr, "cannot load %s: %s\n", precision.c_str(),
                 backend.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(backend);
}

std::vector<TokenIds> Texts(const std::vector<int32_t>& lengths, uint64_t* x) {
  std::vector<TokenIds> seqs;
  for (int32_t len : lengths) seqs.push_back(SyntheticSequence(len, x));
  return seqs;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace
}  // namespace embedserve

int main(int argc, char** argv) {
  using namespace embedserve;
  if (argc < 2) {
    std::fprintf(stderr, "usage: graph_buckets_bench fp16|bf16|fp32|tf32 [REPS]\n");
    return 2;
  }
  const std::string precision = argv[1];
  const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 9;
  std::string model;
  if (const char* m = std::getenv("EMBEDSERVE_BENCH_MODEL"); m != nullptr && *m != '\0') {
    model = m;
  } else {
    model = (std::filesystem::temp_directory_path() /
             ("embedserve_graph_buckets_" + std::to_string(::getpid())))
                .string();
    SyntheticModelOptions options;  // minilm-l6, seed 42
    options.overwrite = true;
    if (absl::Status s = WriteSyntheticModel(options, model); !s.ok()) {
      std::fprintf(stderr, "cannot write the synthetic model: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::unique_ptr<Backend> backends[3] = {Load(model, precision, true, "32768"),
                                          Load(model, precision, false, nullptr),
                                          Load(model, precision, true, nullptr)};
  const int64_t max_slots = internal_model::GraphMaxSlots(
      precision == "tf32" ? "fp32" : precision, precision == "tf32");
  std::printf("# %s %s; rule: buckets of at most %lld slots\n", precision.c_str(),
              backends[2]->Info().runtime.c_str(), static_cast<long long>(max_slots));
  std::printf("%-5s %5s %6s %4s %9s %6s %6s %8s %8s %8s\n", "part", "n", "tokens", "max",
              "bucket", "slots", "ratio", "graph_ms", "eager_ms", "rule_ms");
  const std::vector<Bucket> buckets = Buckets();
  uint64_t x = 12345;
  auto run = [&](const char* part, const std::vector<int32_t>& lengths) {
    const std::vector<TokenIds> seqs = Texts(lengths, &x);
    std::vector<const TokenIds*> ptrs;
    int64_t tokens = 0, longest = 0;
    for (const TokenIds& s : seqs) {
      ptrs.push_back(&s);
      tokens += static_cast<int64_t>(s.size());
      longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
    }
    const int64_t n = static_cast<int64_t>(seqs.size());
    std::vector<double> ms[3];
    for (int i = 0; i < reps + 2; ++i) {
      for (int k = 0; k < 3; ++k) {
        const auto t0 = std::chrono::steady_clock::now();
        auto r = backends[k]->Embed(ptrs);
        const auto t1 = std::chrono::steady_clock::now();
        if (!r.ok()) {
          std::fprintf(stderr, "Embed failed: %s\n", r.status().ToString().c_str());
          std::exit(1);
        }
        if (i >= 2) ms[k].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
    }
    const Bucket* b = FirstBucket(buckets, n, longest);
    char bucket[32] = "-";
    int64_t slots = 0;
    if (b != nullptr) {
      slots = b->batch * b->longest;
      std::snprintf(bucket, sizeof(bucket), "%lldx%lld", static_cast<long long>(b->batch),
                    static_cast<long long>(b->longest));
    }
    std::printf("%-5s %5lld %6lld %4lld %9s %6lld %6.2f %8.3f %8.3f %8.3f\n", part,
                static_cast<long long>(n), static_cast<long long>(tokens),
                static_cast<long long>(longest), bucket, static_cast<long long>(slots),
                static_cast<double>(slots) / static_cast<double>(tokens), Median(ms[0]),
                Median(ms[1]), Median(ms[2]));
    std::fflush(stdout);
  };
  for (const Bucket& b : buckets) {
    run("full", std::vector<int32_t>(b.batch, static_cast<int32_t>(b.longest)));
  }
  client::SentenceGenerator::Options gen_options;  // seed 42, short sentences
  auto gen = client::SentenceGenerator::Create(gen_options);
  if (!gen.ok()) return 1;
  const int sizes[] = {1,   2,   3,   4,   6,   8,   12,  16,  24,  32,  40,  48,  64,
                       80,  96,  128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 1024};
  for (int n : sizes) {
    std::vector<int32_t> lengths;
    for (int i = 0; i < n; ++i) {
      int32_t t = 0;
      (*gen)->NextSentence(&t);
      lengths.push_back(t);
    }
    run("short", lengths);
  }
  for (int n : {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256}) {
    std::vector<int32_t> lengths;
    for (int i = 0; i < n; ++i) {
      lengths.push_back(static_cast<int32_t>(5 + SyntheticRandom(&x) % 116));
    }
    run("mixed", lengths);
  }
  if (std::getenv("EMBEDSERVE_BENCH_MODEL") == nullptr) std::filesystem::remove_all(model);
  return 0;
}
