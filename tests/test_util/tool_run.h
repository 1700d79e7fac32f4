// Runs one of the project's command-line tools (a built binary) on a given stdin and
// captures its exit code, stdout lines and stderr: what the tool tests check.
// Header-only; each call uses its own files under the test's temp dir (named by process
// id and call number: ctest runs several test binaries at once, all in the same /tmp).
#ifndef EMBEDSERVE_TESTS_TEST_UTIL_TOOL_RUN_H_
#define EMBEDSERVE_TESTS_TEST_UTIL_TOOL_RUN_H_

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace embedserve {
namespace testing {

struct ToolRun {
  int exit_code = -1;  // -1 when the tool did not exit normally
  std::vector<std::string> lines;  // stdout, one entry per line
  std::string stderr_text;
};

// `binary` reads `input` on stdin; `args` is appended to the command line as is.
inline ToolRun RunTool(const std::string& binary, const std::string& input,
                       const std::string& args) {
  static std::atomic<int> counter{0};
  const std::string base = ::testing::TempDir() + "/tool_run_" + std::to_string(::getpid()) +
                           "_" + std::to_string(counter++);
  const std::string in = base + "_in", out = base + "_out", err = base + "_err";
  std::ofstream(in, std::ios::binary) << input;
  const std::string cmd = "'" + binary + "' " + args + " < '" + in + "' > '" + out +
                          "' 2> '" + err + "'";
  ToolRun run;
  const int status = std::system(cmd.c_str());
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream o(out, std::ios::binary);
  for (std::string line; std::getline(o, line);) run.lines.push_back(line);
  std::stringstream e;
  e << std::ifstream(err).rdbuf();
  run.stderr_text = e.str();
  for (const std::string& f : {in, out, err}) std::remove(f.c_str());
  return run;
}

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_TEST_UTIL_TOOL_RUN_H_
