#include "embedserve/client/benchmark_plan.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "embedserve/client/sentence_generator.h"
#include "embedserve/common/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace embedserve {
namespace client {
namespace {

absl::Status ValidateList(const std::vector<int32_t>& values, absl::string_view field) {
  if (values.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must not be empty"));
  }
  for (int32_t v : values) {
    if (v < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " values must be >= 1; was ", v));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> IntListFromYaml(const YAML::Node& node,
                                                     const std::string& field) {
  std::vector<int32_t> out;
  try {
    if (node.IsScalar()) {
      out.push_back(node.as<int32_t>());
    } else if (node.IsSequence()) {
      for (const YAML::Node& item : node) out.push_back(item.as<int32_t>());
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " must be a list of positive integers"));
    }
  } catch (const YAML::Exception&) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " must be a list of positive integers; was ", YAML::Dump(node)));
  }
  ES_RETURN_IF_ERROR(ValidateList(out, field));
  return out;
}

template <typename T>
absl::StatusOr<T> ScalarFromYaml(const YAML::Node& node, const std::string& field,
                                 const char* what) {
  try {
    if (node.IsScalar()) return node.as<T>();
  } catch (const YAML::Exception&) {
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be ", what, "; was ", YAML::Dump(node)));
}

std::string StripYamlExtension(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') == std::string::npos
                                     ? 0
                                     : path.find_last_of('/') + 1);
  for (const char* ext : {".yaml", ".yml"}) {
    if (absl::EndsWith(base, ext)) return base.substr(0, base.size() - strlen(ext));
  }
  return base;
}

absl::Status ApplyBenchmarkSection(const YAML::Node& bench, ExperimentFile* file) {
  BenchmarkPlan& plan = file->plan;
  for (const auto& kv : bench) {
    if (!kv.first.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "benchmark: keys must be plain names (batch_sizes, concurrencies, ...); found ",
          kv.first.IsSequence() ? "a list" : kv.first.IsMap() ? "a mapping" : "an empty key",
          " as a key"));
    }
    std::string key = kv.first.Scalar();
    const YAML::Node& v = kv.second;
    std::string field = "benchmark." + key;
    if (key == "batch_sizes") {
      ES_ASSIGN_OR_RETURN(plan.grid.batch_sizes, IntListFromYaml(v, field));
    } else if (key == "concurrencies") {
      ES_ASSIGN_OR_RETURN(plan.grid.concurrencies, IntListFromYaml(v, field));
    } else if (key == "extra_grids") {
      if (!v.IsSequence()) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, " must be a list of {batch_sizes: [...], concurrencies: [...]}"));
      }
      plan.extra_grids.clear();
      for (size_t i = 0; i < v.size(); ++i) {
        const YAML::Node& g = v[i];
        std::string gfield = absl::StrCat(field, "[", i, "]");
        if (!g.IsMap() || !g["batch_sizes"] || !g["concurrencies"]) {
          return absl::InvalidArgumentError(absl::StrCat(
              gfield, " must be a map with batch_sizes and concurrencies"));
        }
        Grid grid;
        ES_ASSIGN_OR_RETURN(grid.batch_sizes,
                            IntListFromYaml(g["batch_sizes"], gfield + ".batch_sizes"));
        ES_ASSIGN_OR_RETURN(grid.concurrencies, IntListFromYaml(g["concurrencies"],
                                                                gfield + ".concurrencies"));
        plan.extra_grids.push_back(std::move(grid));
      }
    } else if (key == "rates_rps") {
      plan.rates_rps.clear();
      try {
        if (v.IsScalar()) {
          plan.rates_rps.push_back(v.as<double>());
        } else {
          for (const YAML::Node& r : v) plan.rates_rps.push_back(r.as<double>());
        }
      } catch (const YAML::Exception&) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, " must be a list of positive numbers; was ", YAML::Dump(v)));
      }
    } else if (key == "max_outstanding") {
      ES_ASSIGN_OR_RETURN(plan.max_outstanding,
                          ScalarFromYaml<int32_t>(v, field, "an integer"));
    } else if (key == "duration_s") {
      ES_ASSIGN_OR_RETURN(plan.duration_s, ScalarFromYaml<double>(v, field, "a number"));
    } else if (key == "warmup_s") {
      ES_ASSIGN_OR_RETURN(plan.warmup_s, ScalarFromYaml<double>(v, field, "a number"));
    } else if (key == "requests") {
      ES_ASSIGN_OR_RETURN(plan.requests, ScalarFromYaml<int64_t>(v, field, "an integer"));
    } else if (key == "method") {
      ES_ASSIGN_OR_RETURN(std::string m, ScalarFromYaml<std::string>(v, field, "a string"));
      ES_ASSIGN_OR_RETURN(plan.method, ParseMethod(m));
    } else if (key == "sentence_length") {
      ES_ASSIGN_OR_RETURN(std::string s,
                          ScalarFromYaml<std::string>(v, field, "short, 128, 256 or N"));
      ES_ASSIGN_OR_RETURN(plan.sentence_tokens, ParseSentenceLength(s));
    } else if (key == "seed") {
      ES_ASSIGN_OR_RETURN(plan.seed, ScalarFromYaml<uint64_t>(v, field, "an integer"));
    } else if (key == "timeout_ms") {
      ES_ASSIGN_OR_RETURN(plan.timeout_ms, ScalarFromYaml<int64_t>(v, field, "an integer"));
    } else if (key == "backoff_ms") {
      ES_ASSIGN_OR_RETURN(plan.backoff_ms, ScalarFromYaml<int64_t>(v, field, "an integer"));
    } else if (key == "pairs_file") {
      ES_ASSIGN_OR_RETURN(plan.pairs_file, ScalarFromYaml<std::string>(v, field, "a path"));
    } else if (key == "pool_requests") {
      ES_ASSIGN_OR_RETURN(plan.pool_requests,
                          ScalarFromYaml<int32_t>(v, field, "an integer"));
    } else {
      file->warnings.push_back(
          absl::StrCat(field, " is not a key embedserve-bench knows; ignored"));
    }
  }
  return plan.Validate();
}

}  // namespace

absl::StatusOr<Method> ParseMethod(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "similarity") return Method::kSimilarity;
  if (lower == "embed") return Method::kEmbed;
  return absl::InvalidArgumentError(
      absl::StrCat("method must be similarity or embed; was '", text, "'"));
}

const char* MethodName(Method method) {
  return method == Method::kSimilarity ? "similarity" : "embed";
}

const char* ItemName(Method method) {
  return method == Method::kSimilarity ? "pairs" : "texts";
}

absl::Status BenchmarkPlan::Validate() const {
  ES_RETURN_IF_ERROR(ValidateList(grid.batch_sizes, "benchmark.batch_sizes"));
  ES_RETURN_IF_ERROR(ValidateList(grid.concurrencies, "benchmark.concurrencies"));
  for (size_t i = 0; i < extra_grids.size(); ++i) {
    ES_RETURN_IF_ERROR(ValidateList(extra_grids[i].batch_sizes,
                                    absl::StrCat("benchmark.extra_grids[", i, "].batch_sizes")));
    ES_RETURN_IF_ERROR(ValidateList(
        extra_grids[i].concurrencies,
        absl::StrCat("benchmark.extra_grids[", i, "].concurrencies")));
  }
  for (double r : rates_rps) {
    if (!(r > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("benchmark.rates_rps values must be > 0; was ", r));
    }
  }
  if (max_outstanding < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.max_outstanding must be >= 1; was ", max_outstanding));
  }
  if (requests < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.requests must be >= 0 (0: use duration_s); was ", requests));
  }
  if (requests == 0 && !(duration_s > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.duration_s must be > 0; was ", duration_s));
  }
  if (!(warmup_s >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.warmup_s must be >= 0; was ", warmup_s));
  }
  SentenceGenerator::Options gen;
  gen.fixed_tokens = sentence_tokens;
  ES_RETURN_IF_ERROR(gen.Validate());
  if (timeout_ms < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.timeout_ms must be >= 1; was ", timeout_ms));
  }
  if (backoff_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.backoff_ms must be >= 0; was ", backoff_ms));
  }
  if (pool_requests < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("benchmark.pool_requests must be >= 1; was ", pool_requests));
  }
  // Count before Points() builds them: YAML aliases let a few bytes name millions.
  uint64_t points = 0;
  if (!rates_rps.empty()) {
    points = uint64_t{grid.batch_sizes.size()} * rates_rps.size();
  } else {
    points = uint64_t{grid.batch_sizes.size()} * grid.concurrencies.size();
    for (const Grid& g : extra_grids) {
      points += uint64_t{g.batch_sizes.size()} * g.concurrencies.size();
    }
  }
  if (points > kMaxPoints) {
    return absl::InvalidArgumentError(absl::StrCat(
        "benchmark: the grids name ", points, " points (batch sizes x concurrencies or "
        "rates); at most ", kMaxPoints, " are allowed"));
  }
  return absl::OkStatus();
}

std::vector<GridPoint> BenchmarkPlan::Points() const {
  std::vector<GridPoint> points;
  std::set<std::tuple<int32_t, int32_t, double>> seen;
  auto add = [&points, &seen](GridPoint p) {
    if (seen.emplace(p.batch_size, p.concurrency, p.rate_rps).second) points.push_back(p);
  };
  if (!rates_rps.empty()) {
    for (int32_t b : grid.batch_sizes) {
      for (double r : rates_rps) add(GridPoint{b, max_outstanding, r});
    }
    return points;
  }
  std::vector<Grid> grids = {grid};
  grids.insert(grids.end(), extra_grids.begin(), extra_grids.end());
  for (const Grid& g : grids) {
    for (int32_t b : g.batch_sizes) {
      for (int32_t c : g.concurrencies) add(GridPoint{b, c, 0});
    }
  }
  return points;
}

absl::StatusOr<ExperimentFile> ParseExperimentYaml(const std::string& yaml_text,
                                                   const std::string& name) {
  ExperimentFile file;
  file.name = name;
  file.host = "127.0.0.1";
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("experiment '", name, "': not valid YAML: ", e.what()));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat("experiment '", name, "': the top level must be a map"));
  }
  if (const YAML::Node server = root["server"]; server && server.IsMap()) {
    if (server["host"]) {
      ES_ASSIGN_OR_RETURN(file.host, ScalarFromYaml<std::string>(server["host"],
                                                                 "server.host", "a string"));
      if (file.host.empty() || file.host == "0.0.0.0" || file.host == "::" ||
          file.host == "[::]") {
        file.host = "127.0.0.1";
      }
    }
    if (server["port"]) {
      ES_ASSIGN_OR_RETURN(file.port,
                          ScalarFromYaml<int32_t>(server["port"], "server.port", "an integer"));
    }
  }
  const YAML::Node bench = root["benchmark"];
  if (!bench || !bench.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "experiment '", name, "' has no benchmark: section (a map with batch_sizes, "
        "concurrencies, duration_s, warmup_s, method)"));
  }
  ES_RETURN_IF_ERROR(ApplyBenchmarkSection(bench, &file));
  return file;
}

absl::StatusOr<ExperimentFile> LoadExperimentFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open experiment file '", path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseExperimentYaml(text.str(), StripYamlExtension(path));
}

absl::StatusOr<std::vector<int32_t>> ParsePositiveIntList(absl::string_view text,
                                                          absl::string_view field) {
  std::vector<int32_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int32_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " must be a comma-separated list of positive integers; '", part,
          "' in '", text, "' is not one"));
    }
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::vector<double>> ParsePositiveDoubleList(absl::string_view text,
                                                            absl::string_view field) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    double v = 0;
    if (!absl::SimpleAtod(part, &v) || !(v > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " must be a comma-separated list of positive numbers; '", part,
          "' in '", text, "' is not one"));
    }
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<int32_t> ParseSentenceLength(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "short" || lower == "default") return 0;
  if (lower == "long") return 128;
  int32_t v = 0;
  if (absl::SimpleAtoi(lower, &v)) {
    SentenceGenerator::Options gen;
    gen.fixed_tokens = v;
    if (v != 0) {
      ES_RETURN_IF_ERROR(gen.Validate());
      return v;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "sentence_length must be short, long (128) or a token count in [",
      SentenceGenerator::kMinTokens, ", ", SentenceGenerator::kMaxFixedTokens,
      "]; was '", text, "'"));
}

}  // namespace client
}  // namespace embedserve
