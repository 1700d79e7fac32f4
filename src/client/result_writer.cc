#include "embedserve/client/result_writer.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace embedserve {
namespace client {
namespace {

// Errors as CODE:count;CODE:count (no commas, so the CSV needs no quoting).
std::string ErrorsField(const std::map<std::string, int64_t>& errors) {
  return absl::StrJoin(errors, ";", absl::PairFormatter(":"));
}

std::string CsvQuote(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

nlohmann::json PointToJson(const PointResult& r) {
  nlohmann::json j;
  j["method"] = MethodName(r.method);
  j["item"] = ItemName(r.method);
  j["batch_size"] = r.point.batch_size;
  j["concurrency"] = r.point.concurrency;
  j["rate_rps"] = r.point.rate_rps;
  j["mode"] = r.point.rate_rps > 0 ? "open" : "closed";
  j["measured_s"] = r.measured_s;
  j["requests_ok"] = r.requests_ok;
  j["requests_failed"] = r.requests_failed;
  j["items_ok"] = r.items_ok;
  j["errors"] = nlohmann::json::object();
  for (const auto& [code, count] : r.errors) j["errors"][code] = count;
  j["requests_per_s"] = r.requests_per_s;
  j["items_per_s"] = r.items_per_s;
  j["latency_ms"] = {{"count", r.latency.count}, {"avg", r.latency.avg_ms},
                     {"p50", r.latency.p50_ms},  {"p95", r.latency.p95_ms},
                     {"p99", r.latency.p99_ms},  {"max", r.latency.max_ms}};
  j["refused_latency_ms"] = {{"count", r.refused_latency.count},
                             {"p50", r.refused_latency.p50_ms},
                             {"p99", r.refused_latency.p99_ms},
                             {"max", r.refused_latency.max_ms}};
  j["server_us"] = {{"samples", r.stages.samples},
                    {"tokenize", r.stages.tokenize_us},
                    {"queue", r.stages.queue_us},
                    {"inference", r.stages.inference_us},
                    {"total", r.stages.server_total_us},
                    {"rest", r.stages.rest_us}};
  j["tokens_per_item"] = r.tokens_per_item;
  j["client_cpu_s"] = r.client_cpu_s;
  j["client_cpu_pct"] = r.client_cpu_pct;
  j["not_sent"] = r.not_sent;
  j["achieved_rate_rps"] = r.achieved_rate_rps;
  return j;
}

}  // namespace

std::string CsvHeader() {
  return "experiment,method,batch_size,concurrency,rate_rps,measured_s,requests_ok,"
         "requests_failed,items_ok,requests_per_s,items_per_s,lat_avg_ms,lat_p50_ms,"
         "lat_p95_ms,lat_p99_ms,lat_max_ms,tokenize_us,queue_us,inference_us,"
         "server_total_us,rest_us,tokens_per_item,client_cpu_pct,not_sent,errors";
}

std::string CsvRow(const std::string& experiment, const PointResult& r) {
  return absl::StrFormat(
      "%s,%s,%d,%d,%.3f,%.3f,%d,%d,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.1f,%.1f,%.1f,"
      "%.1f,%.1f,%.2f,%.1f,%d,%s",
      CsvQuote(experiment), MethodName(r.method), r.point.batch_size,
      r.point.concurrency, r.point.rate_rps, r.measured_s, r.requests_ok,
      r.requests_failed, r.items_ok, r.requests_per_s, r.items_per_s, r.latency.avg_ms,
      r.latency.p50_ms, r.latency.p95_ms, r.latency.p99_ms, r.latency.max_ms,
      r.stages.tokenize_us, r.stages.queue_us, r.stages.inference_us,
      r.stages.server_total_us, r.stages.rest_us, r.tokens_per_item, r.client_cpu_pct,
      r.not_sent, ErrorsField(r.errors));
}

std::string ResultsToCsv(const std::string& experiment,
                         const std::vector<PointResult>& results) {
  std::string out = CsvHeader() + "\n";
  for (const PointResult& r : results) absl::StrAppend(&out, CsvRow(experiment, r), "\n");
  return out;
}

std::string ResultsToJson(const RunInfo& info, const std::vector<PointResult>& results) {
  nlohmann::json j;
  j["run"] = nlohmann::json::object();
  for (const auto& [k, v] : info) j["run"][k] = v;
  j["points"] = nlohmann::json::array();
  for (const PointResult& r : results) j["points"].push_back(PointToJson(r));
  return j.dump(2) + "\n";
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

}  // namespace client
}  // namespace embedserve
