// Test double for embedserve::Backend: encodes each input sequence into its output row
// (length, first id, last id, id checksum), so a test can prove which sequence produced
// which row; records every call; can fail a batch on a marker token, advance a fake
// clock per call, or hold calls at a gate until the test releases them.
// Thread-safe, like a real backend: Embed may run on several threads at once.
#ifndef EMBEDSERVE_TESTS_TEST_UTIL_FAKE_BACKEND_H_
#define EMBEDSERVE_TESTS_TEST_UTIL_FAKE_BACKEND_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "embedserve/model/backend.h"
#include "test_util/fake_clock.h"

namespace embedserve {
namespace testing {

class FakeBackend : public Backend {
 public:
  struct Options {
    int64_t dimension = 4;              // rows carry Encode()'s first `dimension` values
    bool pads_inputs = true;            // reported in Info()
    int32_t fail_token = -1;            // a batch holding this id fails with INTERNAL
    FakeClock* clock = nullptr;         // if set, each call advances it by call_us
    int64_t call_us = 0;
    bool record_calls = true;           // keep a copy of every batch's inputs
    int64_t wrong_rows = 0;             // add this many rows to every result (a bad backend)
  };

  explicit FakeBackend(const Options& options);
  FakeBackend() : FakeBackend(Options()) {}

  const BackendInfo& Info() const override { return info_; }
  absl::StatusOr<EmbeddingMatrix> Embed(absl::Span<const TokenIds* const> sequences) override {
    return EmbedWith(sequences, CallOptions{});
  }
  absl::StatusOr<EmbeddingMatrix> EmbedWith(absl::Span<const TokenIds* const> sequences,
                                            const CallOptions& call) override;

  // The row Embed gives `ids`: {size, ids.front(), ids.back(), sum of ids mod 1000003,
  // 0, 0, ...}, truncated to `dimension`. All exact in float for ids < 2^24.
  static std::vector<float> Encode(const TokenIds& ids, int64_t dimension);

  // Gate: while closed, Embed waits (after counting the call) until Open().
  void CloseGate();
  void OpenGate();
  // Blocks until at least `n` calls are waiting at the closed gate.
  void WaitForWaitingCalls(int n);

  int64_t num_calls() const;
  // Each call's inputs, in call order (record_calls only).
  std::vector<std::vector<TokenIds>> calls() const;
  // Each call's batch size, in call order.
  std::vector<int32_t> batch_sizes() const;
  // Each call's CallOptions (cpu_threads, cpu_nice), in call order.
  std::vector<std::pair<int32_t, int32_t>> call_options() const;

 private:
  const Options options_;
  BackendInfo info_;
  // std::mutex: ThreadSanitizer cannot see Debian's uninstrumented absl::Mutex.
  mutable std::mutex mu_;
  std::condition_variable cv_;  // gate opened / a call started waiting
  bool gate_closed_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::vector<TokenIds>> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<int32_t, int32_t>> call_options_ ABSL_GUARDED_BY(mu_);
};

}  // namespace testing
}  // namespace embedserve

#endif  // EMBEDSERVE_TESTS_TEST_UTIL_FAKE_BACKEND_H_
