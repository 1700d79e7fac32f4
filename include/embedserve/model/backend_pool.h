// Several copies of one model behind the Backend interface: model.devices and
// model.instances_per_device. The batcher's workers call Embed concurrently; each call
// runs on whichever copy is free (the one idle longest), so batches spread over the
// devices without the batcher knowing about them.
// Thread-safe: Embed may be called from any number of threads.
#ifndef EMBEDSERVE_MODEL_BACKEND_POOL_H_
#define EMBEDSERVE_MODEL_BACKEND_POOL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "embedserve/common/mutex.h"
#include "embedserve/model/backend.h"

namespace embedserve {

class BackendPool : public Backend {
 public:
  // Takes ownership of `instances` (at least one). They must serve the same model: equal
  // dimension, max_seq_length, pooling, normalize, precision and pads_inputs, else
  // INVALID_ARGUMENT naming the instance and the field.
  static absl::StatusOr<std::unique_ptr<BackendPool>> Create(
      std::vector<std::unique_ptr<Backend>> instances);

  BackendPool(const BackendPool&) = delete;
  BackendPool& operator=(const BackendPool&) = delete;

  // The first instance's info, with `device` listing every instance's device in order,
  // comma-separated (e.g. "cuda:0,cuda:1"): what the log and GetModelInfo show.
  const BackendInfo& Info() const override { return info_; }

  // Waits until an instance is free, runs the batch on it (the one idle longest) and
  // returns its result; the instance's errors are returned as they are.
  absl::StatusOr<EmbeddingMatrix> Embed(absl::Span<const TokenIds* const> sequences) override {
    return EmbedWith(sequences, CallOptions{});
  }
  absl::StatusOr<EmbeddingMatrix> EmbedWith(absl::Span<const TokenIds* const> sequences,
                                            const CallOptions& call) override;

  int num_instances() const { return static_cast<int>(instances_.size()); }
  // Batches each instance has run, by instance index.
  std::vector<int64_t> BatchesPerInstance() const;

 private:
  explicit BackendPool(std::vector<std::unique_ptr<Backend>> instances);

  const std::vector<std::unique_ptr<Backend>> instances_;
  BackendInfo info_;
  std::unique_ptr<std::atomic<int64_t>[]> batches_;  // per instance

  Mutex mu_;
  CondVar free_cv_;  // an instance returned to free_
  std::deque<int> free_ ABSL_GUARDED_BY(mu_);  // idle instances, longest idle first
};

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_BACKEND_POOL_H_
