// embedserve-bench: gRPC load generator for embedserve. Sweeps a grid of batch sizes x
// concurrencies (or arrival rates) of Similarity or Embed requests against a running
// server and writes one CSV row and one JSON record per point. See
// docs/benchmarking.md. Example:
//   embedserve-bench --config experiments/minilm_baseline.yaml --wait-ready 120 \
//       --out-dir results/minilm_baseline/now
//   embedserve-bench --target 127.0.0.1:50051 --batch-sizes 1,32 --concurrencies 1,4
// Exit codes: 0 sweep done; 1 bad flags/config/data; 2 server not ready; 3 cannot
// write results; 4 server unreachable mid-sweep (results so far are written).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "embedserve/client/benchmark_plan.h"
#include "embedserve/client/load_generator.h"
#include "embedserve/client/result_writer.h"
#include "embedserve/client/sentence_generator.h"
#include "nlohmann/json.hpp"

namespace {

using embedserve::client::BenchmarkPlan;
using embedserve::client::GridPoint;
using embedserve::client::PointResult;

constexpr int kExitBadInput = 1;
constexpr int kExitNotReady = 2;
constexpr int kExitWrite = 3;
constexpr int kExitUnavailable = 4;

std::string UtcNow() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string Hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

int Fail(const absl::Status& status, int code) {
  std::cerr << "embedserve-bench: " << status.message() << "\n";
  return code;
}

std::string ProgressLine(size_t index, size_t total, const PointResult& r,
                         const BenchmarkPlan& plan) {
  const char* item = embedserve::client::ItemName(r.method);
  std::string where =
      r.point.rate_rps > 0
          ? absl::StrFormat("batch=%d rate=%.1f/s", r.point.batch_size, r.point.rate_rps)
          : absl::StrFormat("batch=%d conc=%d", r.point.batch_size, r.point.concurrency);
  std::string errors = r.errors.empty()
                           ? "0"
                           : absl::StrJoin(r.errors, ",", absl::PairFormatter("="));
  return absl::StrFormat(
      "[bench] %d/%d %s %s: %.1f %s/s %.1f req/s | lat ms avg %.2f p50 %.2f p95 %.2f "
      "p99 %.2f max %.2f | server us tok %.0f queue %.0f inf %.0f rest %.0f | "
      "tokens/item %.1f | ok %d errors %s | client cpu %.1f%%%s",
      index + 1, total, embedserve::client::MethodName(r.method), where, r.items_per_s,
      item, r.requests_per_s, r.latency.avg_ms, r.latency.p50_ms, r.latency.p95_ms,
      r.latency.p99_ms, r.latency.max_ms, r.stages.tokenize_us, r.stages.queue_us,
      r.stages.inference_us, r.stages.rest_us, r.tokens_per_item, r.requests_ok, errors,
      r.client_cpu_pct,
      (r.refused_latency.count > 0
           ? absl::StrFormat(" | refused ms p50 %.2f p99 %.2f max %.2f",
                             r.refused_latency.p50_ms, r.refused_latency.p99_ms,
                             r.refused_latency.max_ms)
           : "") +
          (r.not_sent > 0 ? absl::StrFormat(" | NOT SENT %d (could not inject at the rate)",
                                       r.not_sent)
                          : "")) +
         (plan.requests == 0 && r.measured_s > plan.duration_s * 1.001
              ? absl::StrFormat(" | window extended to %.1f s: requests are slower than "
                                "duration_s",
                                r.measured_s)
              : "");
}

}  // namespace

int main(int argc, char** argv) {
  // gRPC's absl::Mutex locks skip the deadlock detector Debian's abseil runs on each
  // lock (see tools/server/main.cc): the load generator's CPU is taken from the server's
  // on a shared host.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{"embedserve-bench: sweeps batch size x concurrency against an embedserve "
               "server and writes CSV/JSON results"};
  std::string config_path, target, method, batch_sizes, concurrencies, rates,
      sentence_length, pairs_file, vocab, out_dir, csv_path, json_path, experiment;
  double duration_s = 0, warmup_s = 0, wait_ready_s = 0;
  int64_t requests = 0, timeout_ms = 0, backoff_ms = 0;
  int32_t max_outstanding = 0, pool_requests = 0, channels = 1;
  uint64_t seed = 0;
  std::vector<std::string> infos, extra_grids;
  bool print_plan = false;

  app.add_option("--config", config_path,
                 "experiment YAML: its benchmark: section is the plan and server.host/"
                 "port the target; flags below override it");
  app.add_option("--target", target, "server host:port (default: the config's, else "
                                     "127.0.0.1:50051)");
  auto* o_method = app.add_option("--method", method, "similarity (default) or embed");
  auto* o_batch = app.add_option("--batch-sizes", batch_sizes,
                                 "comma list of pairs/texts per request, e.g. 1,4,8,16,32");
  auto* o_conc = app.add_option("--concurrencies", concurrencies,
                                "comma list of requests in flight (closed loop)");
  auto* o_extra = app.add_option(
      "--extra-grid", extra_grids,
      "BATCHES/CONCURRENCIES swept after the main grid, e.g. 1/8,16,32,64,128,256 "
      "(repeatable; replaces the config's extra_grids)");
  auto* o_rates = app.add_option(
      "--rates", rates, "comma list of arrival rates in requests/s: open loop instead");
  auto* o_maxout = app.add_option("--max-outstanding", max_outstanding,
                                  "open loop: most requests in flight (default 1024)");
  auto* o_dur = app.add_option("--duration-s", duration_s,
                               "seconds measured per point (default 10)");
  auto* o_warm = app.add_option("--warmup-s", warmup_s,
                                "seconds of unmeasured load before each point (default 2)");
  auto* o_req = app.add_option("--requests", requests,
                               "measure exactly this many requests per point instead of "
                               "a duration");
  auto* o_len = app.add_option("--sentence-length", sentence_length,
                               "short (default: ~14 tokens mean, p95 ~24), 128, 256 or N");
  auto* o_seed = app.add_option("--seed", seed, "generator seed (default 42)");
  auto* o_timeout = app.add_option("--timeout-ms", timeout_ms,
                                   "per-request deadline (default 30000)");
  auto* o_backoff = app.add_option(
      "--backoff-ms", backoff_ms,
      "closed loop: wait after RESOURCE_EXHAUSTED/UNAVAILABLE, then send that request again "
      "(default 10; 0 = at once)");
  auto* o_pairs = app.add_option("--pairs-file", pairs_file,
                                 "TSV or JSON Lines file of pairs instead of generated ones");
  std::string write_pairs;
  app.add_option("--write-pairs", write_pairs,
                 "write the pairs the plan would send (generated or from --pairs-file) to "
                 "this JSON Lines file and exit, so other clients can send the same texts");
  auto* o_pool = app.add_option("--pool-requests", pool_requests,
                                "distinct prebuilt requests per point (default 64)");
  app.add_option("--vocab", vocab,
                 "vocab.txt: also draw whole words from it (default: built-in list)");
  app.add_option("--channels", channels,
                 "gRPC channels (HTTP/2 connections) the calls are spread over, round-robin "
                 "(default 1; small calls at high concurrency need several, see "
                 "docs/benchmarking.md)")
      ->check(CLI::Range(1, embedserve::client::LoadGenerator::kMaxChannels));
  app.add_option("--wait-ready", wait_ready_s,
                 "wait up to this many seconds for health SERVING first (0: don't)");
  app.add_option("--out-dir", out_dir, "write OUT_DIR/bench.csv and OUT_DIR/bench.json");
  app.add_option("--csv", csv_path, "CSV output path");
  app.add_option("--json", json_path, "JSON output path");
  app.add_option("--experiment", experiment,
                 "experiment name in the results (default: the config file name)");
  app.add_option("--info", infos, "KEY=VALUE added to the JSON run record (repeatable)");
  app.add_flag("--print-plan", print_plan, "print the sweep points and exit");
  CLI11_PARSE(app, argc, argv);

  embedserve::client::ExperimentFile file;
  file.host = "127.0.0.1";
  file.name = "adhoc";
  if (!config_path.empty()) {
    auto loaded = embedserve::client::LoadExperimentFile(config_path);
    if (!loaded.ok()) return Fail(loaded.status(), kExitBadInput);
    file = *std::move(loaded);
    for (const std::string& w : file.warnings) std::cerr << "embedserve-bench: " << w << "\n";
  }
  BenchmarkPlan& plan = file.plan;
  if (!experiment.empty()) file.name = experiment;
  if (target.empty()) target = absl::StrCat(file.host, ":", file.port);

  // Flags override the config.
  if (*o_method) {
    auto m = embedserve::client::ParseMethod(method);
    if (!m.ok()) return Fail(m.status(), kExitBadInput);
    plan.method = *m;
  }
  if (*o_batch) {
    auto v = embedserve::client::ParsePositiveIntList(batch_sizes, "--batch-sizes");
    if (!v.ok()) return Fail(v.status(), kExitBadInput);
    plan.grid.batch_sizes = *v;
    plan.extra_grids.clear();
  }
  if (*o_conc) {
    auto v = embedserve::client::ParsePositiveIntList(concurrencies, "--concurrencies");
    if (!v.ok()) return Fail(v.status(), kExitBadInput);
    plan.grid.concurrencies = *v;
    plan.extra_grids.clear();
  }
  if (*o_extra) {
    plan.extra_grids.clear();
    for (const std::string& g : extra_grids) {
      size_t slash = g.find('/');
      if (slash == std::string::npos) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
                        "--extra-grid must be BATCHES/CONCURRENCIES, e.g. 1/8,32; was '", g,
                        "'")),
                    kExitBadInput);
      }
      auto b = embedserve::client::ParsePositiveIntList(g.substr(0, slash),
                                                        "--extra-grid batch sizes");
      if (!b.ok()) return Fail(b.status(), kExitBadInput);
      auto c = embedserve::client::ParsePositiveIntList(g.substr(slash + 1),
                                                        "--extra-grid concurrencies");
      if (!c.ok()) return Fail(c.status(), kExitBadInput);
      plan.extra_grids.push_back({*b, *c});
    }
  }
  if (*o_rates) {
    auto v = embedserve::client::ParsePositiveDoubleList(rates, "--rates");
    if (!v.ok()) return Fail(v.status(), kExitBadInput);
    plan.rates_rps = *v;
  }
  if (*o_maxout) plan.max_outstanding = max_outstanding;
  if (*o_dur) plan.duration_s = duration_s;
  if (*o_warm) plan.warmup_s = warmup_s;
  if (*o_req) plan.requests = requests;
  if (*o_len) {
    auto v = embedserve::client::ParseSentenceLength(sentence_length);
    if (!v.ok()) return Fail(v.status(), kExitBadInput);
    plan.sentence_tokens = *v;
  }
  if (*o_seed) plan.seed = seed;
  if (*o_timeout) plan.timeout_ms = timeout_ms;
  if (*o_backoff) plan.backoff_ms = backoff_ms;
  if (*o_pairs) plan.pairs_file = pairs_file;
  if (*o_pool) plan.pool_requests = pool_requests;
  if (absl::Status s = plan.Validate(); !s.ok()) return Fail(s, kExitBadInput);

  std::vector<GridPoint> points = plan.Points();
  if (print_plan) {
    std::cout << "experiment " << file.name << " target " << target << " method "
              << embedserve::client::MethodName(plan.method) << " points " << points.size()
              << "\n";
    for (const GridPoint& p : points) {
      std::cout << "batch_size=" << p.batch_size << " concurrency=" << p.concurrency
                << " rate_rps=" << p.rate_rps << "\n";
    }
    return 0;
  }

  // Input data: enough pairs for the largest batch's request pool (capped).
  std::vector<embedserve::client::SentencePair> data;
  if (!plan.pairs_file.empty()) {
    auto loaded = embedserve::client::LoadPairsFile(plan.pairs_file);
    if (!loaded.ok()) return Fail(loaded.status(), kExitBadInput);
    data = *std::move(loaded);
  } else {
    embedserve::client::SentenceGenerator::Options gen_options;
    gen_options.seed = plan.seed;
    gen_options.fixed_tokens = plan.sentence_tokens;
    gen_options.vocab_path = vocab;
    auto gen = embedserve::client::SentenceGenerator::Create(gen_options);
    if (!gen.ok()) return Fail(gen.status(), kExitBadInput);
    int32_t max_batch = 1;
    for (const GridPoint& p : points) max_batch = std::max(max_batch, p.batch_size);
    int64_t wanted = std::clamp<int64_t>(int64_t{max_batch} * plan.pool_requests,
                                         max_batch, std::max<int64_t>(max_batch, 8192));
    data.reserve(wanted);
    for (int64_t i = 0; i < wanted; ++i) data.push_back((*gen)->NextPair());
  }

  if (!write_pairs.empty()) {
    std::string lines;
    for (const auto& pair : data) {
      lines += nlohmann::json({{"text_a", pair.text_a}, {"text_b", pair.text_b}}).dump();
      lines += "\n";
    }
    if (absl::Status s = embedserve::client::WriteFile(write_pairs, lines); !s.ok()) {
      return Fail(s, kExitBadInput);
    }
    std::cerr << "[bench] wrote " << data.size() << " pairs to " << write_pairs << "\n";
    return 0;
  }

  embedserve::client::LoadGenerator::Options lg_options;
  lg_options.target = target;
  lg_options.channels = channels;
  auto generator = embedserve::client::LoadGenerator::Create(lg_options);
  if (!generator.ok()) return Fail(generator.status(), kExitBadInput);
  if (wait_ready_s > 0) {
    std::cerr << "[bench] waiting up to " << wait_ready_s << " s for " << target
              << " to be SERVING\n";
    if (absl::Status s = (*generator)->WaitReady(wait_ready_s); !s.ok()) {
      return Fail(s, kExitNotReady);
    }
  }

  embedserve::client::RunInfo info;
  if (auto model = (*generator)->GetModelInfo(); model.ok()) {
    info = *model;
  } else {
    std::cerr << "embedserve-bench: warning: " << model.status().message() << "\n";
  }
  info["experiment"] = file.name;
  info["config"] = config_path;
  info["target"] = target;
  info["method"] = embedserve::client::MethodName(plan.method);
  info["item"] = embedserve::client::ItemName(plan.method);
  info["started_at"] = UtcNow();
  info["client_host"] = Hostname();
  info["duration_s"] = absl::StrCat(plan.duration_s);
  info["warmup_s"] = absl::StrCat(plan.warmup_s);
  info["requests"] = absl::StrCat(plan.requests);
  info["sentence_tokens"] = plan.sentence_tokens == 0 ? "short"
                                                      : absl::StrCat(plan.sentence_tokens);
  info["seed"] = absl::StrCat(plan.seed);
  info["channels"] = absl::StrCat(channels);
  info["pairs_file"] = plan.pairs_file;
  info["data_pairs"] = absl::StrCat(data.size());
  info["command"] = absl::StrJoin(std::vector<std::string>(argv, argv + argc), " ");
  for (const std::string& kv : infos) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      return Fail(absl::InvalidArgumentError(
                      absl::StrCat("--info must be KEY=VALUE; was '", kv, "'")),
                  kExitBadInput);
    }
    info[kv.substr(0, eq)] = kv.substr(eq + 1);
  }

  if (!out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) {
      return Fail(absl::InternalError(absl::StrCat("cannot create '", out_dir, "': ",
                                                   ec.message())),
                  kExitWrite);
    }
    if (csv_path.empty()) csv_path = out_dir + "/bench.csv";
    if (json_path.empty()) json_path = out_dir + "/bench.json";
  }

  std::vector<PointResult> results;
  auto write_all = [&]() -> absl::Status {
    if (!csv_path.empty()) {
      absl::Status s = embedserve::client::WriteFile(
          csv_path, embedserve::client::ResultsToCsv(file.name, results));
      if (!s.ok()) return s;
    }
    if (!json_path.empty()) {
      return embedserve::client::WriteFile(json_path,
                                           embedserve::client::ResultsToJson(info, results));
    }
    return absl::OkStatus();
  };

  std::cerr << "[bench] " << file.name << ": " << points.size() << " points against "
            << target << ", " << data.size() << " input pairs\n";
  int exit_code = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    auto result = (*generator)->RunPoint(plan, points[i], data);
    if (!result.ok()) return Fail(result.status(), kExitBadInput);
    std::cerr << ProgressLine(i, points.size(), *result, plan) << std::endl;
    results.push_back(*result);
    if (absl::Status s = write_all(); !s.ok()) return Fail(s, kExitWrite);
    if (result->requests_ok == 0 && result->errors.count("UNAVAILABLE") > 0) {
      std::cerr << "embedserve-bench: every request of this point failed UNAVAILABLE: "
                   "the server is gone; stopping the sweep\n";
      exit_code = kExitUnavailable;
      break;
    }
  }
  if (!csv_path.empty()) std::cerr << "[bench] wrote " << csv_path << "\n";
  if (!json_path.empty()) std::cerr << "[bench] wrote " << json_path << "\n";
  return exit_code;
}
