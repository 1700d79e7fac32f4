// Tokenizer throughput, one thread, on realistic English sentences.
// Build + run (Release):
//   cmake -S . -B build-tok -G Ninja -DEMBEDSERVE_WITH_TORCH=OFF -DEMBEDSERVE_WITH_GRPC=OFF \
//     -DEMBEDSERVE_BUILD_TESTS=OFF && cmake --build build-tok --target tokenizer_bench
//   build-tok/bench/tokenizer/tokenizer_bench [--sentences=FILE] [--vocab=FILE]
//       [--benchmark_filter=BM_EncodeEach] [--benchmark_min_time=2]
// FILE: one text per line (default bench/data/english_sentences.txt). BM_EncodeEach encodes
// each text with Encode(text, 0), like scripts/device/tokenizer_vs_hf.py does with Hugging
// Face `tokenizers` (one thread, encode per text), so the two texts/s and tokens/s figures
// compare 1:1. tokens = ids incl. [CLS]/[SEP]. The program also prints an FNV-1a fingerprint
// of all ids, which the script prints too: equal fingerprints = identical ids.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "embedserve/tokenizer/tokenizer.h"

namespace embedserve {
namespace {

std::string g_sentences = EMBEDSERVE_BENCH_DATA_DIR "/english_sentences.txt";
std::string g_vocab = EMBEDSERVE_VOCAB_FILE;

struct Corpus {
  std::unique_ptr<Tokenizer> tok;
  std::vector<std::string> texts;
  int64_t tokens = 0;  // ids per pass, [CLS]/[SEP] included
  int64_t bytes = 0;
};

const Corpus& GetCorpus() {
  static const Corpus* corpus = [] {
    auto* c = new Corpus;
    auto tok = Tokenizer::Create(Tokenizer::Options{}, g_vocab);
    if (!tok.ok()) {
      std::fprintf(stderr, "tokenizer_bench: %s\n", tok.status().ToString().c_str());
      std::exit(1);
    }
    c->tok = *std::move(tok);
    std::ifstream in(g_sentences);
    if (!in) {
      std::fprintf(stderr, "tokenizer_bench: cannot open %s\n", g_sentences.c_str());
      std::exit(1);
    }
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) c->texts.push_back(line);
    }
    uint64_t fnv = 1469598103934665603ull;
    for (const auto& t : c->texts) {
      auto enc = c->tok->Encode(t, 0);
      if (!enc.ok()) {
        std::fprintf(stderr, "tokenizer_bench: %s\n", enc.status().ToString().c_str());
        std::exit(1);
      }
      c->tokens += static_cast<int64_t>(enc->ids.size());
      c->bytes += static_cast<int64_t>(t.size());
      for (int32_t id : enc->ids) {
        fnv = (fnv ^ static_cast<uint32_t>(id)) * 1099511628211ull;
      }
    }
    std::fprintf(stderr, "tokenizer_bench: %zu texts, %lld tokens, %lld bytes from %s; ids fingerprint %016llx\n",
                 c->texts.size(), static_cast<long long>(c->tokens), static_cast<long long>(c->bytes),
                 g_sentences.c_str(), static_cast<unsigned long long>(fnv));
    return c;
  }();
  return *corpus;
}

void SetCounters(benchmark::State& state, const Corpus& c) {
  const double passes = static_cast<double>(state.iterations());
  state.counters["texts/s"] = benchmark::Counter(passes * c.texts.size(), benchmark::Counter::kIsRate);
  state.counters["tokens/s"] = benchmark::Counter(passes * c.tokens, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(state.iterations() * c.bytes);
}

// One Encode per text, no truncation: the figure compared with HF.
void BM_EncodeEach(benchmark::State& state) {
  const Corpus& c = GetCorpus();
  for (auto _ : state) {
    for (const auto& t : c.texts) {
      auto enc = c.tok->Encode(t, 0);
      benchmark::DoNotOptimize(enc);
    }
  }
  SetCounters(state, c);
}
BENCHMARK(BM_EncodeEach);

// Truncated to 256 (all-MiniLM-L6-v2's max_seq_length), as the server calls it.
void BM_EncodeEachMax256(benchmark::State& state) {
  const Corpus& c = GetCorpus();
  for (auto _ : state) {
    for (const auto& t : c.texts) {
      auto enc = c.tok->Encode(t, 256);
      benchmark::DoNotOptimize(enc);
    }
  }
  SetCounters(state, c);
}
BENCHMARK(BM_EncodeEachMax256);

// Word pieces appended into one reused buffer: the cost without per-call allocation.
void BM_AppendWordPieceIdsReused(benchmark::State& state) {
  const Corpus& c = GetCorpus();
  TokenIds ids;
  ids.reserve(4096);
  for (auto _ : state) {
    for (const auto& t : c.texts) {
      ids.clear();
      benchmark::DoNotOptimize(c.tok->AppendWordPieceIds(t, &ids));
    }
  }
  SetCounters(state, c);
}
BENCHMARK(BM_AppendWordPieceIdsReused);

}  // namespace
}  // namespace embedserve

int main(int argc, char** argv) {
  // Our flags first; the rest goes to Google Benchmark.
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--sentences=", 12) == 0) {
      embedserve::g_sentences = argv[i] + 12;
    } else if (std::strncmp(argv[i], "--vocab=", 8) == 0) {
      embedserve::g_vocab = argv[i] + 8;
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  embedserve::GetCorpus();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
