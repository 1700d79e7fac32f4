// The narrow interface between the serving stages (batcher, service, tools) and a
// model implementation: token ids in, pooled fp32 vectors out. This header never
// includes LibTorch; only src/model/ does. Implementations are thread-safe: Embed() may
// be called from several batcher workers at once.
#ifndef EMBEDSERVE_MODEL_BACKEND_H_
#define EMBEDSERVE_MODEL_BACKEND_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "embedserve/common/token_ids.h"
#include "embedserve/model/embedding_matrix.h"

namespace embedserve {

// What a loaded backend serves; fixed after load.
struct BackendInfo {
  std::string model_name;     // e.g. sentence-transformers/all-MiniLM-L6-v2
  std::string model_path;     // the folder it was loaded from
  bool synthetic = false;     // weights written by embedserve-make-model
  int64_t dimension = 0;      // embedding size (hidden size)
  int64_t max_seq_length = 0; // most tokens per sequence, [CLS]/[SEP] included
  std::string pooling;        // "mean", "cls" or "max"
  bool normalize = false;     // the folder has a Normalize module: default for requests
  std::string device;         // "cpu", "cuda:0", ...
  std::string precision;      // "fp32", "fp16" or "bf16"
  bool pads_inputs = true;    // a batch costs longest x count tokens (else the sum)
  int cuda_graphs = 0;        // CUDA graphs captured at load for small batches (0: none)
  std::string runtime;        // e.g. "libtorch 1.13.1"
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const BackendInfo& Info() const = 0;

  // Embeds `sequences` (each 1..max_seq_length ids) and returns one pooled row per
  // sequence, in order, NOT normalised (callers apply L2NormalizeInPlace as each
  // request asks). Fails with INVALID_ARGUMENT for an empty or too-long sequence or an
  // id outside the vocabulary, INTERNAL for a runtime failure (e.g. out of memory);
  // a failure affects only this call. Thread-safe.
  virtual absl::StatusOr<EmbeddingMatrix> Embed(
      absl::Span<const TokenIds* const> sequences) = 0;

  // What one caller asks of a call, beyond its inputs.
  struct CallOptions {
    // CPU: intra-op threads for this call (the batcher's express lane runs on one, beside
    // a batch in flight on all of them); 0: the backend's own setting. Ignored elsewhere.
    int32_t cpu_threads = 0;
    // CPU: the niceness added to the threads that run this call (ModelOptions::cpu_nice),
    // or -1 for the backend's own settings (cpu_nice and cpu_sched_idle). 0: the
    // process's own priority, neither: the express lane asks for it, so that its forward
    // gets a core before the workers'. Ignored elsewhere.
    int32_t cpu_nice = -1;
  };
  // Embed with `call`; a backend without per-call settings ignores them.
  virtual absl::StatusOr<EmbeddingMatrix> EmbedWith(absl::Span<const TokenIds* const> sequences,
                                                    const CallOptions& call) {
    (void)call;
    return Embed(sequences);
  }
};

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_BACKEND_H_
