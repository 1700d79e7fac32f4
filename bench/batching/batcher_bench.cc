// Batcher benchmarks with a no-op backend (the batcher's own cost, no model).
// Run:
//   cmake -S . -B build-batch -G Ninja -DEMBEDSERVE_WITH_TORCH=OFF -DEMBEDSERVE_WITH_GRPC=OFF
//   cmake --build build-batch --target batcher_bench
//   build-batch/bench/batching/batcher_bench [--benchmark_filter=OpenLoop]
//
// BM_ClosedLoop/<seqs per request>/<workers>/<window>: one producer keeps <window>
//   requests outstanding; reports sequences/s through the batcher (items_per_second) and
//   the process CPU time per sequence (cpu_ns_per_seq: producer + workers, all costs of
//   building, submitting, batching, answering and freeing a request).
// BM_OpenLoop/<seqs per request>/<workers>/<load %>/<idle_spin_us>: first measures capacity
//   closed-loop with the same request shape and options, then injects at a fixed rate of
//   <load %> of it for kOpenLoopSeconds; reports the added latency enqueue (Submit call) -> backend call
//   (p50/p99/p99.9, microseconds, per sequence), the batch-size histogram, and whether it
//   could inject at the asked rate (label "COULD NOT INJECT ..." if not), with the
//   injecting thread's lag behind schedule and its context switches.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "embedserve/batching/batcher.h"

namespace embedserve {
namespace {

constexpr int32_t kTokensPerSequence = 16;
constexpr double kOpenLoopSeconds = 0.5;
constexpr double kCapacityProbeSeconds = 0.3;
// An injection later than this behind its schedule counts as late.
constexpr int64_t kLateNs = 20'000;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Token ids carry the enqueue time: ids[0] = low 31 bits, ids[1] = the rest.
void Stamp(TokenIds* ids, int64_t t_ns) {
  (*ids)[0] = static_cast<int32_t>(t_ns & 0x7fffffff);
  (*ids)[1] = static_cast<int32_t>(t_ns >> 31);
}

TokenIds StampedSequence(int64_t t_ns) {
  TokenIds ids(kTokensPerSequence, 1);
  Stamp(&ids, t_ns);
  return ids;
}

// Returns 1 x dim zeros per sequence; optionally records enqueue -> call latency.
class NoOpBackend : public Backend {
 public:
  explicit NoOpBackend(size_t max_samples) : samples_(max_samples) {
    info_.model_name = "noop";
    info_.dimension = 1;
    info_.pads_inputs = true;
  }
  const BackendInfo& Info() const override { return info_; }
  absl::StatusOr<EmbeddingMatrix> Embed(absl::Span<const TokenIds* const> sequences) override {
    if (recording_.load(std::memory_order_relaxed)) {
      const int64_t now = NowNs();
      size_t at = next_.fetch_add(sequences.size(), std::memory_order_relaxed);
      for (const TokenIds* s : sequences) {
        if (at >= samples_.size()) break;
        const int64_t t = (static_cast<int64_t>((*s)[1]) << 31) | (*s)[0];
        samples_[at++] = now - t;
      }
    }
    EmbeddingMatrix m;
    m.rows = static_cast<int64_t>(sequences.size());
    m.dim = 1;
    m.values.assign(sequences.size(), 0.f);
    return m;
  }
  void StartRecording() {
    next_.store(0);
    recording_.store(true);
  }
  // Stops and returns the recorded latencies (ns), sorted.
  std::vector<int64_t> StopRecording() {
    recording_.store(false);
    std::vector<int64_t> out(samples_.begin(),
                             samples_.begin() + std::min(next_.load(), samples_.size()));
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  BackendInfo info_;
  std::vector<int64_t> samples_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> recording_{false};
};

// Batch-size histogram in powers of two: [1], [2,3], [4,7], ...
class HistogramObserver : public BatchObserver {
 public:
  static constexpr int kBins = 12;
  void OnBatch(const BatchStats& stats) override {
    int bin = 0;
    while ((2 << bin) <= stats.sequences && bin < kBins - 1) ++bin;
    bins_[bin].fetch_add(1, std::memory_order_relaxed);
  }
  void OnQueueDepth(int64_t) override {}
  void Reset() {
    for (auto& b : bins_) b.store(0);
  }
  int64_t bin(int i) const { return bins_[i].load(); }

 private:
  std::atomic<int64_t> bins_[kBins] = {};
};

// Counts requests in flight; Acquire blocks while `window` are outstanding, until half of
// them are answered (one wake-up per half window, not one per answer). std::mutex:
// Debian's absl::Mutex runs deadlock detection (GraphCycles) on every lock, which showed
// up at 4% of a closed-loop profile.
class Window {
 public:
  explicit Window(int64_t size) : size_(size) {}
  void Acquire() {
    std::unique_lock<std::mutex> l(mu_);
    if (outstanding_ >= size_) {
      ++waiters_;
      cv_.wait(l, [this] { return outstanding_ <= size_ / 2; });
      --waiters_;
    }
    ++outstanding_;
  }
  void Release() {
    bool wake;
    {
      std::lock_guard<std::mutex> l(mu_);
      --outstanding_;
      wake = waiters_ > 0 && (outstanding_ == size_ / 2 || outstanding_ == 0);
    }
    if (wake) cv_.notify_all();
  }
  void WaitEmpty() {
    std::unique_lock<std::mutex> l(mu_);
    ++waiters_;
    cv_.wait(l, [this] { return outstanding_ == 0; });
    --waiters_;
  }

 private:
  const int64_t size_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t outstanding_ = 0;  // guarded by mu_
  int waiters_ = 0;          // guarded by mu_
};

std::unique_ptr<Batcher> MakeBatcher(NoOpBackend* backend, BatchObserver* observer, int workers,
                                     int64_t idle_spin_us = Batcher::Options().idle_spin_us) {
  Batcher::Options o;
  o.num_workers = workers;
  o.idle_spin_us = idle_spin_us;
  o.max_batch_size = 64;
  o.max_queue_sequences = 8192;
  auto b = Batcher::Create(o, backend, observer);
  if (!b.ok()) {
    std::fprintf(stderr, "Batcher::Create: %s\n", b.status().ToString().c_str());
    std::abort();
  }
  return std::move(*b);
}

BatchRequest MakeRequest(int seqs, int64_t t_ns, Window* window) {
  BatchRequest r;
  r.sequences.reserve(static_cast<size_t>(seqs));
  for (int i = 0; i < seqs; ++i) r.sequences.push_back(StampedSequence(t_ns));
  r.done = [window](absl::StatusOr<EmbeddingMatrix>, const RequestTimings&) {
    if (window != nullptr) window->Release();
  };
  return r;
}

// CPU time (user + system) of the whole process, all threads, in ns.
int64_t ProcessCpuNs() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto ns = [](const timeval& t) { return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_usec * 1000; };
  return ns(u.ru_utime) + ns(u.ru_stime);
}

// The 1-minute load average, to judge how much CPU the run could get on a shared machine.
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "?" : one;
}

// Submits closed-loop for `seconds`; returns sequences per second.
double MeasureCapacity(Batcher* batcher, int seqs, int64_t window_size, double seconds) {
  Window window(window_size);
  int64_t sequences = 0;
  const int64_t start = NowNs();
  const int64_t end = start + static_cast<int64_t>(seconds * 1e9);
  while (NowNs() < end) {
    window.Acquire();
    if (!batcher->Submit(MakeRequest(seqs, 0, &window)).ok()) {
      window.Release();
      continue;
    }
    sequences += seqs;
  }
  window.WaitEmpty();
  return static_cast<double>(sequences) / (static_cast<double>(NowNs() - start) / 1e9);
}

void BM_ClosedLoop(benchmark::State& state) {
  const int seqs = static_cast<int>(state.range(0));
  const int workers = static_cast<int>(state.range(1));
  const int64_t window_size = state.range(2);
  NoOpBackend backend(0);
  HistogramObserver observer;
  std::unique_ptr<Batcher> batcher = MakeBatcher(&backend, &observer, workers);
  Window window(window_size);
  int64_t rejected = 0;
  const int64_t cpu_start = ProcessCpuNs();
  for (auto _ : state) {
    window.Acquire();
    if (!batcher->Submit(MakeRequest(seqs, 0, &window)).ok()) {
      window.Release();
      ++rejected;
    }
  }
  window.WaitEmpty();
  const int64_t cpu_ns = ProcessCpuNs() - cpu_start;
  const int64_t done = static_cast<int64_t>(state.iterations() - rejected) * seqs;
  state.SetItemsProcessed(done);
  // CPU the producer and the workers spent per sequence, whatever else ran on the machine:
  // 2e9 / this = sequences/s two dedicated cores could push through.
  state.counters["cpu_ns_per_seq"] = done > 0 ? static_cast<double>(cpu_ns) / static_cast<double>(done) : 0.0;
  int64_t batches = 0;
  for (int i = 0; i < HistogramObserver::kBins; ++i) batches += observer.bin(i);
  state.counters["batches"] = static_cast<double>(batches);
  state.counters["rejected"] = static_cast<double>(rejected);
  batcher->Shutdown();
}
BENCHMARK(BM_ClosedLoop)
    ->ArgNames({"seqs", "workers", "window"})
    ->Args({8, 1, 64})
    ->Args({32, 1, 16})
    ->Args({1, 1, 256})
    ->Args({8, 2, 64})
    ->UseRealTime()
    ->MinTime(1.0);

// The machine's own stalls, no batcher: one thread reads the clock in a loop for 0.5 s and
// adds up the gaps between reads (time this thread did not run: interrupts, the hypervisor
// taking the vCPU away, other threads). A worker stalled for more than 100 us in 1% of the
// time gives p99 > 100 us whatever the batcher does; read BM_OpenLoop's tails against it.
void BM_MachineStalls(benchmark::State& state) {
  for (auto _ : state) {
    constexpr int64_t kRunNs = 500'000'000;
    int64_t gaps_10 = 0, gaps_100 = 0, lost_10 = 0, lost_100 = 0, max_gap = 0;
    const int64_t start = NowNs();
    int64_t prev = start;
    while (prev - start < kRunNs) {
      const int64_t now = NowNs();
      const int64_t gap = now - prev;
      if (gap > 10'000) {
        ++gaps_10;
        lost_10 += gap;
        if (gap > 100'000) {
          ++gaps_100;
          lost_100 += gap;
        }
        max_gap = std::max(max_gap, gap);
      }
      prev = now;
    }
    const double run = static_cast<double>(prev - start);
    state.counters["gaps_over_10us"] = static_cast<double>(gaps_10);
    state.counters["gaps_over_100us"] = static_cast<double>(gaps_100);
    state.counters["lost_pct_over_10us"] = 100.0 * static_cast<double>(lost_10) / run;
    state.counters["lost_pct_over_100us"] = 100.0 * static_cast<double>(lost_100) / run;
    state.counters["max_gap_us"] = static_cast<double>(max_gap) / 1000.0;
    state.SetLabel(absl::StrCat("loadavg=", LoadAverage()));
  }
}
BENCHMARK(BM_MachineStalls)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// Sum of the "steal" column of /proc/stat's cpu line (USER_HZ ticks): the time the
// hypervisor says it ran something else on this guest's vCPUs.
int64_t StealTicks() {
  std::ifstream in("/proc/stat");
  std::string name;
  int64_t v[8] = {};
  in >> name;
  for (int64_t& x : v) in >> x;
  return name == "cpu" ? v[7] : -1;
}

// As BM_MachineStalls, but one spinning thread pinned to each CPU this process may use, at
// the same time: is a stall one vCPU's (the others run on) or the whole machine's? Per CPU
// it reports the share of time lost in gaps > 100 us and the longest gap; overlap_pct is
// the share of CPU 0's lost time during which another CPU was stalled too (100 = the whole
// VM stops at once, 0 = independent); steal_ticks is what the guest kernel was told.
void BM_MachineStallsPerCpu(benchmark::State& state) {
  struct Gap {
    int64_t start, end;
  };
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  sched_getaffinity(0, sizeof allowed, &allowed);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  for (auto _ : state) {
    constexpr int64_t kRunNs = 500'000'000;
    std::vector<std::vector<Gap>> gaps(cpus.size());
    const int64_t steal_before = StealTicks();
    const int64_t start = NowNs() + 1'000'000;
    std::vector<std::thread> threads;
    for (size_t i = 0; i < cpus.size(); ++i) {
      threads.emplace_back([&, i] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[i], &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
        int64_t prev = NowNs();
        while (prev < start) prev = NowNs();
        while (prev - start < kRunNs) {
          const int64_t now = NowNs();
          if (now - prev > 100'000) gaps[i].push_back({prev, now});
          prev = now;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    const int64_t steal = StealTicks() - steal_before;
    int64_t overlap = 0, lost0 = 0;
    for (size_t i = 0; i < cpus.size(); ++i) {
      int64_t lost = 0, max_gap = 0;
      for (const Gap& g : gaps[i]) {
        lost += g.end - g.start;
        max_gap = std::max(max_gap, g.end - g.start);
      }
      const std::string cpu = "cpu" + std::to_string(cpus[i]);
      state.counters[cpu + "_lost_pct_over_100us"] =
          100.0 * static_cast<double>(lost) / static_cast<double>(kRunNs);
      state.counters[cpu + "_max_gap_us"] = static_cast<double>(max_gap) / 1000.0;
      if (i == 0) lost0 = lost;
    }
    for (const Gap& g : gaps[0]) {
      // Time of this gap covered by a gap of any other CPU (gaps of one CPU don't overlap).
      for (size_t i = 1; i < cpus.size(); ++i) {
        for (const Gap& h : gaps[i]) {
          overlap += std::max<int64_t>(0, std::min(g.end, h.end) - std::max(g.start, h.start));
        }
      }
    }
    state.counters["overlap_pct"] =
        lost0 > 0 ? 100.0 * static_cast<double>(overlap) / static_cast<double>(lost0) : 0.0;
    state.counters["steal_ticks"] = static_cast<double>(steal);
    state.SetLabel(absl::StrCat(cpus.size(), " cpus, loadavg=", LoadAverage()));
  }
}
BENCHMARK(BM_MachineStallsPerCpu)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_OpenLoop(benchmark::State& state) {
  const int seqs = static_cast<int>(state.range(0));
  const int workers = static_cast<int>(state.range(1));
  const double load = static_cast<double>(state.range(2)) / 100.0;  // share of capacity
  const int64_t spin_us = state.range(3);
  NoOpBackend backend(8'000'000);
  HistogramObserver observer;
  std::unique_ptr<Batcher> batcher = MakeBatcher(&backend, &observer, workers, spin_us);
  for (auto _ : state) {
    const double capacity = MeasureCapacity(batcher.get(), seqs, 64, kCapacityProbeSeconds);
    const double target_seq_rate = capacity * load;
    const double request_interval_ns = 1e9 * seqs / target_seq_rate;
    const int64_t requests =
        static_cast<int64_t>(kOpenLoopSeconds * 1e9 / request_interval_ns);
    // Requests are built beforehand: the injecting thread only stamps and submits.
    std::vector<BatchRequest> prepared;
    prepared.reserve(static_cast<size_t>(requests));
    for (int64_t i = 0; i < requests; ++i) prepared.push_back(MakeRequest(seqs, 0, nullptr));
    observer.Reset();
    backend.StartRecording();
    int64_t late = 0, rejected = 0, max_lag_ns = 0;
    std::vector<int64_t> lags;
    lags.reserve(static_cast<size_t>(requests));
    const std::string load_before = LoadAverage();
    rusage ru_before{};
    getrusage(RUSAGE_THREAD, &ru_before);
    const int64_t start = NowNs() + 1000;
    for (int64_t i = 0; i < requests; ++i) {
      const int64_t due = start + static_cast<int64_t>(static_cast<double>(i) * request_interval_ns);
      int64_t now = NowNs();
      // Open loop: keep the schedule, never wait on answers. Yield while early so a worker
      // sharing this core can run.
      while (now < due) {
        std::this_thread::yield();
        now = NowNs();
      }
      const int64_t lag = now - due;
      max_lag_ns = std::max(max_lag_ns, lag);
      lags.push_back(lag);
      if (lag > kLateNs) ++late;
      BatchRequest& request = prepared[static_cast<size_t>(i)];
      for (TokenIds& ids : request.sequences) Stamp(&ids, now);
      if (!batcher->Submit(std::move(request)).ok()) ++rejected;
    }
    const double elapsed_s = static_cast<double>(NowNs() - start) / 1e9;
    rusage ru_after{};
    getrusage(RUSAGE_THREAD, &ru_after);
    // Wait until everything submitted reached the backend.
    while (batcher->QueueDepth() > 0) std::this_thread::yield();
    batcher->Shutdown();
    std::vector<int64_t> lat = backend.StopRecording();
    auto pct = [&](double p) {
      if (lat.empty()) return 0.0;
      const size_t i = std::min(lat.size() - 1, static_cast<size_t>(p * static_cast<double>(lat.size())));
      return static_cast<double>(lat[i]) / 1000.0;
    };
    const double achieved = static_cast<double>((requests - rejected) * seqs) / elapsed_s;
    state.counters["capacity_seq_per_s"] = capacity;
    state.counters["target_seq_per_s"] = target_seq_rate;
    state.counters["achieved_seq_per_s"] = achieved;
    state.counters["p50_us"] = pct(0.50);
    state.counters["p99_us"] = pct(0.99);
    state.counters["p999_us"] = pct(0.999);
    state.counters["max_us"] = lat.empty() ? 0.0 : static_cast<double>(lat.back()) / 1000.0;
    state.counters["late_injections"] = static_cast<double>(late);
    // How far behind schedule the injecting thread ran: scheduling noise of the machine.
    std::sort(lags.begin(), lags.end());
    state.counters["inject_lag_p99_us"] =
        lags.empty() ? 0.0 : static_cast<double>(lags[lags.size() * 99 / 100]) / 1000.0;
    state.counters["rejected"] = static_cast<double>(rejected);
    // The injecting thread's context switches while injecting: voluntary = it blocked
    // (in Submit: the batcher's lock), involuntary = it was preempted.
    state.counters["inject_vcsw"] = static_cast<double>(ru_after.ru_nvcsw - ru_before.ru_nvcsw);
    state.counters["inject_ivcsw"] = static_cast<double>(ru_after.ru_nivcsw - ru_before.ru_nivcsw);
    std::string hist = "batch sizes:";
    for (int b = 0; b < HistogramObserver::kBins; ++b) {
      if (observer.bin(b) == 0) continue;
      const int lo = 1 << b, hi = (2 << b) - 1;
      absl::StrAppend(&hist, " [", lo, lo == hi ? "" : absl::StrCat("-", hi), "]=", observer.bin(b));
    }
    const bool could_not_inject =
        achieved < 0.95 * target_seq_rate || late > requests / 100 || rejected > 0;
    std::string label = absl::StrCat(hist, "; latency samples=", lat.size(),
                                     "; max injection lag us=", max_lag_ns / 1000,
                                     "; loadavg=", load_before);
    if (could_not_inject) {
      label = absl::StrCat("COULD NOT INJECT AT THE ASKED RATE (", late, " late of ", requests,
                           ", ", rejected, " rejected); ", label);
    }
    state.SetLabel(label);
    std::fprintf(stderr, "BM_OpenLoop/%d/%d/%d/%d: %s\n", seqs, workers,
                 static_cast<int>(load * 100), static_cast<int>(spin_us), label.c_str());
  }
}
// spin_us: Batcher::Options::idle_spin_us (50 = the default; 0 = block at once, as before
// the option existed, for comparison within one run).
BENCHMARK(BM_OpenLoop)
    ->ArgNames({"seqs", "workers", "load_pct", "spin_us"})
    ->Args({4, 1, 50, 50})
    ->Args({1, 1, 50, 50})
    ->Args({32, 1, 50, 50})
    ->Args({4, 2, 50, 50})
    ->Args({4, 1, 10, 50})
    ->Args({4, 1, 1, 50})
    ->Args({4, 1, 50, 0})
    ->Args({1, 1, 50, 0})
    ->Args({4, 2, 50, 0})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace embedserve

BENCHMARK_MAIN();
