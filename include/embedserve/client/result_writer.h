// Writes benchmark results as CSV (one row a point, for spreadsheets and report.py)
// and JSON (run metadata + points, the full record). Pure functions; safe from any
// thread.
#ifndef EMBEDSERVE_CLIENT_RESULT_WRITER_H_
#define EMBEDSERVE_CLIENT_RESULT_WRITER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "embedserve/client/point_result.h"

namespace embedserve {
namespace client {

// Free-form facts about the run (target, experiment, model info, versions...).
using RunInfo = std::map<std::string, std::string>;

// The CSV header line (no newline) and one row per result; the columns are fixed and
// documented in docs/benchmarking.md. `experiment` fills the first column.
std::string CsvHeader();
std::string CsvRow(const std::string& experiment, const PointResult& result);
std::string ResultsToCsv(const std::string& experiment,
                         const std::vector<PointResult>& results);

// {"run": {...info...}, "points": [{...}, ...]}, pretty-printed.
std::string ResultsToJson(const RunInfo& info, const std::vector<PointResult>& results);

// Writes `contents` to `path` (truncating); INTERNAL naming the path on failure.
absl::Status WriteFile(const std::string& path, const std::string& contents);

}  // namespace client
}  // namespace embedserve

#endif  // EMBEDSERVE_CLIENT_RESULT_WRITER_H_
