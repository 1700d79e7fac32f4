#include "test_util/fake_backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace embedserve {
namespace testing {

FakeBackend::FakeBackend(const Options& options) : options_(options) {
  info_.model_name = "fake";
  info_.dimension = options.dimension;
  info_.max_seq_length = 512;
  info_.pooling = "mean";
  info_.device = "cpu";
  info_.precision = "fp32";
  info_.pads_inputs = options.pads_inputs;
  info_.runtime = "fake";
}

std::vector<float> FakeBackend::Encode(const TokenIds& ids, int64_t dimension) {
  int64_t sum = 0;
  for (int32_t id : ids) sum = (sum + id) % 1000003;
  std::vector<float> row = {static_cast<float>(ids.size()),
                            ids.empty() ? 0.f : static_cast<float>(ids.front()),
                            ids.empty() ? 0.f : static_cast<float>(ids.back()),
                            static_cast<float>(sum)};
  row.resize(static_cast<size_t>(dimension), 0.f);
  return row;
}

absl::StatusOr<EmbeddingMatrix> FakeBackend::EmbedWith(absl::Span<const TokenIds* const> sequences,
                                                       const CallOptions& call) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    batch_sizes_.push_back(static_cast<int32_t>(sequences.size()));
    call_options_.emplace_back(call.cpu_threads, call.cpu_nice);
    if (options_.record_calls) {
      std::vector<TokenIds> copy;
      copy.reserve(sequences.size());
      for (const TokenIds* s : sequences) copy.push_back(*s);
      calls_.push_back(std::move(copy));
    }
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return !gate_closed_; });
    --waiting_;
  }
  if (options_.clock != nullptr) options_.clock->Advance(options_.call_us);
  for (const TokenIds* s : sequences) {
    if (s->empty()) return absl::InvalidArgumentError("fake backend: empty sequence");
    if (std::find(s->begin(), s->end(), options_.fail_token) != s->end()) {
      return absl::InternalError(absl::StrCat("fake backend: failed on token ", options_.fail_token));
    }
  }
  EmbeddingMatrix m;
  m.rows = static_cast<int64_t>(sequences.size()) + options_.wrong_rows;
  m.dim = options_.dimension;
  m.values.reserve(static_cast<size_t>(m.rows * m.dim));
  for (const TokenIds* s : sequences) {
    const std::vector<float> row = Encode(*s, options_.dimension);
    m.values.insert(m.values.end(), row.begin(), row.end());
  }
  m.values.resize(static_cast<size_t>(m.rows * m.dim), 0.f);
  return m;
}

void FakeBackend::CloseGate() {
  std::lock_guard<std::mutex> lock(mu_);
  gate_closed_ = true;
}

void FakeBackend::OpenGate() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    gate_closed_ = false;
  }
  cv_.notify_all();
}

void FakeBackend::WaitForWaitingCalls(int n) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this, n] { return waiting_ >= n; });
}

int64_t FakeBackend::num_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(batch_sizes_.size());
}

std::vector<std::vector<TokenIds>> FakeBackend::calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}

std::vector<int32_t> FakeBackend::batch_sizes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return batch_sizes_;
}

std::vector<std::pair<int32_t, int32_t>> FakeBackend::call_options() const {
  std::lock_guard<std::mutex> lock(mu_);
  return call_options_;
}

}  // namespace testing
}  // namespace embedserve
