// embedserve-tokenize: JSON Lines in, token ids out, with the server's tokenizer.
//   embedserve-tokenize --vocab FILE [--max-length N] < in.jsonl > out.jsonl
// Each input line {"text": "..."} gives one output line {"ids": [...]} ([CLS] ... [SEP]),
// in order. A line that is not valid JSON, has no string "text", or holds invalid UTF-8
// gives {"error": "..."} on its line, and the tool goes on. No --max-length: no truncation.
// Exit status: 0 when every line was read (even with per-line errors), 2 on bad arguments.
#include <iostream>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "embedserve/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

using embedserve::Tokenizer;
using nlohmann::json;

std::string ErrorLine(const std::string& message) {
  return json{{"error", message}}.dump();
}

// Returns the output line for one input line.
std::string ProcessLine(const Tokenizer& tok, const std::string& line, int64_t max_length) {
  // Check the raw bytes first so that bad UTF-8 is reported as such, with its position.
  const absl::Status utf8 = Tokenizer::CheckUtf8(line);
  if (!utf8.ok()) return ErrorLine("input line: " + std::string(utf8.message()));
  json parsed = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    try {
      json again = json::parse(line);  // parsed again to get the parser's message
      (void)again;
    } catch (const json::exception& e) {
      return ErrorLine(std::string("invalid JSON: ") + e.what());
    }
    return ErrorLine("invalid JSON");
  }
  if (!parsed.is_object()) return ErrorLine("expected a JSON object {\"text\": \"...\"}");
  auto it = parsed.find("text");
  if (it == parsed.end()) return ErrorLine("missing \"text\"");
  if (!it->is_string()) return ErrorLine("\"text\" must be a string; was " + it->dump());
  auto enc = tok.Encode(it->get<std::string>(), max_length);
  if (!enc.ok()) return ErrorLine(std::string(enc.status().message()));
  return json{{"ids", enc->ids}}.dump();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tokenize JSON Lines {\"text\": ...} into {\"ids\": [...]} (BERT WordPiece, HF-exact)"};
  std::string vocab;
  int64_t max_length = 0;
  app.add_option("--vocab", vocab, "vocab.txt (one token per line)")->required();
  app.add_option("--max-length", max_length,
                 "truncate to at most N ids, [SEP] kept (N >= 2); default: no truncation");
  CLI11_PARSE(app, argc, argv);
  if (max_length < 0 || max_length == 1) {
    std::cerr << "embedserve-tokenize: --max-length must be 0 (none) or >= 2; was " << max_length
              << "\n";
    return 2;
  }
  auto tok = Tokenizer::Create(Tokenizer::Options{}, vocab);
  if (!tok.ok()) {
    std::cerr << "embedserve-tokenize: " << tok.status().message() << "\n";
    return 2;
  }
  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::cout << ProcessLine(**tok, line, max_length) << '\n';
  }
  std::cout.flush();
  return std::cout ? 0 : 1;
}
