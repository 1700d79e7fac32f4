// embedserve-make-model: writes a synthetic model folder (all-MiniLM-L6-v2 layout,
// deterministic random weights). Example:
//   embedserve-make-model --out models/minilm-l6-synthetic --preset minilm-l6 --seed 42
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "synthetic_model.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Writes a synthetic sentence-transformers model folder in the all-MiniLM-L6-v2 "
      "layout with deterministic random weights (same seed -> byte-identical files). The "
      "vectors it gives are correctly shaped but meaningless: for real embeddings use a "
      "real folder, e.g. huggingface-cli download sentence-transformers/all-MiniLM-L6-v2."};
  embedserve::SyntheticModelOptions options;
  std::string out;
  app.add_option("--out,-o", out, "Folder to write")->required();
  app.add_option("--preset", options.preset,
                 "One of " + absl::StrJoin(embedserve::SyntheticModelPresets(), ", "))
      ->capture_default_str();
  app.add_option("--seed", options.seed, "Weight generator seed")->capture_default_str();
  app.add_option("--vocab", options.vocab_path,
                 "vocab.txt to copy (default: the built-in BERT uncased vocabulary)");
  app.add_flag("--force", options.overwrite, "Overwrite the files of a non-empty folder");
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = embedserve::WriteSyntheticModel(options, out);
  if (!status.ok()) {
    std::fprintf(stderr, "embedserve-make-model: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::printf("wrote %s (preset %s, seed %llu; synthetic weights: meaningless vectors)\n",
              out.c_str(), options.preset.c_str(),
              static_cast<unsigned long long>(options.seed));
  return 0;
}
