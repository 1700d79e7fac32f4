#include "embedserve/model/backend_pool.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace embedserve {

absl::StatusOr<std::unique_ptr<BackendPool>> BackendPool::Create(
    std::vector<std::unique_ptr<Backend>> instances) {
  if (instances.empty()) return absl::InvalidArgumentError("BackendPool needs an instance");
  for (size_t i = 0; i < instances.size(); ++i) {
    if (instances[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("BackendPool: instance ", i, " is null"));
    }
  }
  const BackendInfo& first = instances[0]->Info();
  for (size_t i = 1; i < instances.size(); ++i) {
    const BackendInfo& info = instances[i]->Info();
    auto differs = [&](const char* field, const auto& a, const auto& b) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model instance ", i, " (", info.device, ") differs from instance 0 (",
          first.device, ") in ", field, ": ", a, " vs ", b));
    };
    if (info.dimension != first.dimension) {
      return differs("dimension", info.dimension, first.dimension);
    }
    if (info.max_seq_length != first.max_seq_length) {
      return differs("max_seq_length", info.max_seq_length, first.max_seq_length);
    }
    if (info.pooling != first.pooling) return differs("pooling", info.pooling, first.pooling);
    if (info.normalize != first.normalize) {
      return differs("normalize", info.normalize ? "true" : "false",
                     first.normalize ? "true" : "false");
    }
    if (info.precision != first.precision) {
      return differs("precision", info.precision, first.precision);
    }
    if (info.pads_inputs != first.pads_inputs) {
      return differs("pads_inputs", info.pads_inputs ? "true" : "false",
                     first.pads_inputs ? "true" : "false");
    }
  }
  return std::unique_ptr<BackendPool>(new BackendPool(std::move(instances)));
}

BackendPool::BackendPool(std::vector<std::unique_ptr<Backend>> instances)
    : instances_(std::move(instances)),
      info_(instances_[0]->Info()),
      batches_(new std::atomic<int64_t>[instances_.size()]) {
  std::string devices;
  for (size_t i = 0; i < instances_.size(); ++i) {
    absl::StrAppend(&devices, i == 0 ? "" : ",", instances_[i]->Info().device);
    batches_[i].store(0, std::memory_order_relaxed);
    free_.push_back(static_cast<int>(i));
  }
  info_.device = devices;
}

absl::StatusOr<EmbeddingMatrix> BackendPool::EmbedWith(absl::Span<const TokenIds* const> sequences,
                                                       const CallOptions& call) {
  int instance;
  {
    MutexLock lock(&mu_);
    while (free_.empty()) free_cv_.Wait(&mu_);
    instance = free_.front();
    free_.pop_front();
  }
  batches_[instance].fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<EmbeddingMatrix> result = instances_[instance]->EmbedWith(sequences, call);
  {
    MutexLock lock(&mu_);
    free_.push_back(instance);
  }
  free_cv_.NotifyOne();
  return result;
}

std::vector<int64_t> BackendPool::BatchesPerInstance() const {
  std::vector<int64_t> out(instances_.size());
  for (size_t i = 0; i < instances_.size(); ++i) {
    out[i] = batches_[i].load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace embedserve
