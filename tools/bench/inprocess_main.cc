// embedserve-bench-inprocess: the in-process reference for embedserve-bench. Loads the
// model an experiment YAML names, exactly as `embedserve` does (same folder lookup,
// precision / quantized, threads, max_seq_length), and runs the work of one Similarity
// (or Embed) request in a closed loop on one thread, without gRPC: tokenize the texts,
// one Backend::Embed call, L2-normalise, cosine. Writes the same CSV/JSON as
// embedserve-bench, so the report can put "over gRPC" next to "in process" (the served
// share: Similarity at batch 32 over gRPC against this). Example:
//   embedserve-bench-inprocess --config experiments/minilm_baseline.yaml \
//       --batch-sizes 32 --duration-s 10 --out-dir results/minilm_baseline/now
#include <algorithm>
#include <cstdio>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "embedserve/client/benchmark_plan.h"
#include "embedserve/client/latency_stats.h"
#include "embedserve/client/result_writer.h"
#include "embedserve/client/sentence_generator.h"
#include "embedserve/config/server_config.h"
#include "embedserve/model/cpu_environment.h"
#include "embedserve/model/embedding_matrix.h"
#include "embedserve/model/model_loader.h"

namespace {

using Clock = std::chrono::steady_clock;
volatile float g_sink = 0;
namespace client = embedserve::client;

int Fail(const absl::Status& status) {
  std::cerr << "embedserve-bench-inprocess: " << status.message() << "\n";
  return 1;
}

int64_t Us(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  // With the OpenBLAS kernels the server would run (cpu_environment.h); OpenMP as the
  // caller set it (in-process figures are the model's, not the server's).
  embedserve::ReexecWithCpuEnvironment(argv, embedserve::CpuEnvironmentOptions());
  CLI::App app{"embedserve-bench-inprocess: Similarity/Embed work without gRPC, for the "
               "over-gRPC efficiency figure"};
  std::string config_path, batch_sizes = "32", method = "similarity", sentence_length = "short",
                           out_dir, model_override, precision_override;
  double duration_s = 10, warmup_s = 2;
  uint64_t seed = 42;
  app.add_option("--config", config_path, "experiment YAML (model: section)")->required();
  app.add_option("--batch-sizes", batch_sizes, "comma list of pairs/texts per call (32)");
  app.add_option("--method", method, "similarity or embed (similarity)");
  app.add_option("--duration-s", duration_s, "measured seconds per batch size (10)");
  app.add_option("--warmup-s", warmup_s, "unmeasured seconds first (2)");
  app.add_option("--sentence-length", sentence_length, "short, 128, 256 or N (short)");
  app.add_option("--seed", seed, "generator seed (42), as embedserve-bench");
  app.add_option("--model", model_override, "model folder instead of the config's");
  app.add_option("--precision", precision_override, "fp32, fp16, bf16, int8 instead of the config's");
  app.add_option("--out-dir", out_dir, "writes inprocess.csv and inprocess.json there");
  std::string pairs_file;
  app.add_option("--pairs-file", pairs_file,
                 "TSV or JSON Lines file of pairs instead of generated ones (as embedserve-bench)");
  CLI11_PARSE(app, argc, argv);

  auto config = embedserve::LoadServerConfigFile(config_path);
  if (!config.ok()) return Fail(config.status());
  auto batches = client::ParsePositiveIntList(batch_sizes, "--batch-sizes");
  if (!batches.ok()) return Fail(batches.status());
  auto parsed_method = client::ParseMethod(method);
  if (!parsed_method.ok()) return Fail(parsed_method.status());
  auto tokens = client::ParseSentenceLength(sentence_length);
  if (!tokens.ok()) return Fail(tokens.status());

  embedserve::ModelOptions options;
  if (!model_override.empty()) {
    options.path = model_override;
  } else {
    auto path = embedserve::ResolveModelPath(config->model,
                                             embedserve::ModelLocatorEnv::FromEnvironment());
    if (!path.ok()) return Fail(path.status());
    options.path = *path;
  }
  options.device = config->model.device;
  // The precision the server would serve (its fallback included), unless overridden.
  const embedserve::PrecisionChoice precision = embedserve::ChoosePrecision(
      config->model.device, config->model.precision, config->model.quantized);
  options.precision = precision.precision;
  if (!precision.fallback_reason.empty()) {
    std::fprintf(stderr, "embedserve-bench-inprocess: %s\n", precision.fallback_reason.c_str());
  }
  if (!precision_override.empty()) options.precision = precision_override;
  options.num_threads = config->model.threads;
  options.max_seq_length = config->model.max_seq_length;
  options.cuda_graphs = config->model.cuda_graphs;
  options.cuda_graph_max_batch = config->model.cuda_graph_max_batch;
  options.tf32 = config->model.tf32;
  options.cpu_nice = config->model.cpu_nice;
  options.cpu_pin_threads = config->model.cpu_pin_threads;
  options.cpu_sched_idle = config->model.cpu_sched_idle;
  auto model = embedserve::LoadModel(options);
  if (!model.ok()) return Fail(model.status());
  const embedserve::BackendInfo& info = model->backend->Info();
  const int64_t max_len = info.max_seq_length;

  std::vector<client::SentencePair> data;
  if (!pairs_file.empty()) {
    auto loaded = client::LoadPairsFile(pairs_file);
    if (!loaded.ok()) return Fail(loaded.status());
    data = *std::move(loaded);
  } else {
    client::SentenceGenerator::Options gen_options;
    gen_options.seed = seed;
    gen_options.fixed_tokens = *tokens;
    auto gen = client::SentenceGenerator::Create(gen_options);
    if (!gen.ok()) return Fail(gen.status());
    for (int i = 0; i < 8192; ++i) data.push_back((*gen)->NextPair());
  }

  std::string name = std::filesystem::path(config_path).stem().string();
  client::RunInfo run;
  run["experiment"] = name;
  run["mode"] = "inprocess";
  run["method"] = client::MethodName(*parsed_method);
  run["item"] = client::ItemName(*parsed_method);
  run["model.name"] = info.model_name;
  run["model.path"] = info.model_path;
  run["model.synthetic"] = info.synthetic ? "true" : "false";
  run["model.device"] = info.device;
  run["model.precision"] = info.precision;
  run["versions.libtorch"] = info.runtime;
  run["duration_s"] = absl::StrCat(duration_s);
  run["warmup_s"] = absl::StrCat(warmup_s);
  run["seed"] = absl::StrCat(seed);
  run["sentence_tokens"] = sentence_length;
  run["pairs_file"] = pairs_file;

  std::vector<client::PointResult> results;
  size_t cursor = 0;
  for (int32_t batch : *batches) {
    client::LatencyRecorder recorder;
    int64_t requests = 0, prompt_tokens = 0;
    Clock::time_point start = Clock::now();
    Clock::time_point warm_end =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup_s));
    Clock::time_point end = warm_end + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(duration_s));
    std::vector<std::string> texts;
    std::vector<embedserve::TokenIds> ids;
    while (true) {
      Clock::time_point t0 = Clock::now();
      if (t0 >= end) break;
      texts.clear();
      for (int32_t i = 0; i < batch; ++i) {
        const client::SentencePair& pair = data[cursor++ % data.size()];
        texts.push_back(pair.text_a);
        if (*parsed_method == client::Method::kSimilarity) texts.push_back(pair.text_b);
      }
      ids.clear();
      int64_t request_tokens = 0;
      for (const std::string& text : texts) {
        auto enc = model->tokenizer->Encode(text, max_len);
        if (!enc.ok()) return Fail(enc.status());
        request_tokens += static_cast<int64_t>(enc->ids.size());
        ids.push_back(std::move(enc->ids));
      }
      Clock::time_point t1 = Clock::now();
      std::vector<const embedserve::TokenIds*> ptrs;
      for (const auto& v : ids) ptrs.push_back(&v);
      auto out = model->backend->Embed(ptrs);
      if (!out.ok()) return Fail(out.status());
      Clock::time_point t2 = Clock::now();
      float sink = 0;
      for (int64_t r = 0; r < out->rows; ++r) embedserve::L2NormalizeInPlace(out->MutableRow(r), out->dim);
      if (*parsed_method == client::Method::kSimilarity) {
        for (int64_t r = 0; r + 1 < out->rows; r += 2) {
          sink += embedserve::Cosine(out->Row(r), out->Row(r + 1), out->dim);
        }
      }
      Clock::time_point t3 = Clock::now();
      g_sink = sink;  // keeps the cosines from being optimised away
      if (t3 >= warm_end && t3 <= end) {
        recorder.Add(Us(t3 - t0), Us(t1 - t0), 0, Us(t2 - t1), Us(t3 - t0));
        ++requests;
        prompt_tokens += request_tokens;
      }
    }
    client::PointResult r;
    r.method = *parsed_method;
    r.point = client::GridPoint{batch, 1, 0};
    r.measured_s = duration_s;
    r.requests_ok = requests;
    r.items_ok = requests * batch;
    r.requests_per_s = static_cast<double>(requests) / duration_s;
    r.items_per_s = static_cast<double>(r.items_ok) / duration_s;
    r.latency = recorder.Summarize();
    r.stages = recorder.Stages();
    r.tokens_per_item = r.items_ok > 0 ? static_cast<double>(prompt_tokens) / r.items_ok : 0;
    std::cerr << absl::StrFormat(
        "[inprocess] %s batch=%d: %.1f %s/s %.1f calls/s | ms avg %.2f p50 %.2f p99 %.2f | "
        "tokenize %.0f us inference %.0f us | tokens/item %.1f\n",
        name, batch, r.items_per_s, client::ItemName(r.method), r.requests_per_s,
        r.latency.avg_ms, r.latency.p50_ms, r.latency.p99_ms, r.stages.tokenize_us,
        r.stages.inference_us, r.tokens_per_item);
    results.push_back(r);
  }
  if (!out_dir.empty()) {
    std::filesystem::create_directories(out_dir);
    absl::Status s = client::WriteFile(out_dir + "/inprocess.csv",
                                       client::ResultsToCsv(name, results));
    if (s.ok()) {
      s = client::WriteFile(out_dir + "/inprocess.json", client::ResultsToJson(run, results));
    }
    if (!s.ok()) return Fail(s);
  }
  return 0;
}
