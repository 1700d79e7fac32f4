// embedserve-embed: offline embeddings, and the reference for the server's output.
// Reads JSON Lines {"text": ...} on stdin, writes {"embedding": [...]} per line in order
// (L2-normalised when the folder has a Normalize module, as sentence-transformers does;
// texts longer than max_seq_length are truncated). A bad line gets {"error": "..."} and
// the tool goes on. Example:
//   printf '{"text": "hello world"}\n' | embedserve-embed --model models/minilm-l6
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "embedserve/model/embedding_matrix.h"
#include "embedserve/model/model_loader.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

struct Line {
  std::string error;  // non-empty: reply with this
  embedserve::TokenIds ids;
};

std::string ErrorJson(const std::string& message) {
  // The message may quote the bad input: replace invalid UTF-8 rather than throw.
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false,
                                                 nlohmann::json::error_handler_t::replace) +
         "\n";
}

Line ParseLine(const std::string& text_line, const embedserve::Tokenizer& tokenizer,
               int64_t max_len) {
  Line line;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text_line);
  } catch (const nlohmann::json::parse_error& e) {
    // e.g. "... syntax error while parsing value - invalid string: ill-formed UTF-8 byte"
    line.error = std::string("invalid JSON: ") + e.what();
    return line;
  }
  if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
    line.error = "expected an object with a string field \"text\"";
  } else {
    auto enc = tokenizer.Encode(j["text"].get_ref<const std::string&>(), max_len);
    if (!enc.ok()) {
      line.error = std::string(enc.status().message());
    } else {
      line.ids = std::move(enc->ids);
    }
  }
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Embeds JSON Lines {\"text\": ...} from stdin into {\"embedding\": [...]} lines"};
  embedserve::ModelOptions options;
  int batch_size = 32;
  std::string normalize = "auto";
  app.add_option("--model,-m", options.path, "Model folder")->required();
  app.add_option("--device", options.device, "cpu, cuda, cuda:N, mps, auto")->capture_default_str();
  app.add_option("--precision", options.precision, "fp32, fp16, bf16, int8")->capture_default_str();
  app.add_option("--batch-size", batch_size, "Lines per forward pass")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--threads", options.num_threads, "Intra-op threads (0 = usable cores)");
  app.add_option("--max-seq-length", options.max_seq_length, "Tokens per text (0 = folder's)");
  app.add_option("--normalize", normalize, "auto (the folder's Normalize module), true, false")
      ->check(CLI::IsMember({"auto", "true", "false"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // stdout carries the JSON Lines: logs go to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("embedserve-embed"));
  auto model = embedserve::LoadModel(options);
  if (!model.ok()) {
    std::fprintf(stderr, "embedserve-embed: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const embedserve::BackendInfo& info = model->backend->Info();
  const bool do_normalize = normalize == "auto" ? info.normalize : normalize == "true";

  std::ios::sync_with_stdio(false);
  std::vector<Line> lines;
  std::string out;
  auto flush = [&]() -> bool {
    std::vector<const embedserve::TokenIds*> ptrs;
    for (const Line& l : lines) {
      if (l.error.empty()) ptrs.push_back(&l.ids);
    }
    embedserve::EmbeddingMatrix m;
    std::string batch_error;
    if (!ptrs.empty()) {
      auto r = model->backend->Embed(ptrs);
      if (r.ok()) {
        m = *std::move(r);
      } else {
        batch_error = std::string(r.status().message());
      }
    }
    int64_t row = 0;
    char buf[32];
    for (const Line& l : lines) {
      if (!l.error.empty()) {
        out += ErrorJson(l.error);
        continue;
      }
      if (!batch_error.empty()) {
        out += ErrorJson(batch_error);
        continue;
      }
      float* v = m.MutableRow(row++);
      if (do_normalize) embedserve::L2NormalizeInPlace(v, m.dim);
      out += "{\"embedding\": [";
      for (int64_t k = 0; k < m.dim; ++k) {
        // %.9g round-trips every float exactly.
        const int n = std::snprintf(buf, sizeof(buf), k == 0 ? "%.9g" : ", %.9g", v[k]);
        out.append(buf, n);
      }
      out += "]}\n";
    }
    lines.clear();
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    out.clear();
    return true;
  };
  std::string text_line;
  while (std::getline(std::cin, text_line)) {
    lines.push_back(ParseLine(text_line, *model->tokenizer, info.max_seq_length));
    if (static_cast<int>(lines.size()) >= batch_size) flush();
  }
  if (!lines.empty()) flush();
  return 0;
}
