#include "embedserve/client/load_generator.h"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "embedserve/common/status_macros.h"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace embedserve {
namespace client {

namespace v1 = ::embedserve::v1;
using Clock = std::chrono::steady_clock;

struct LoadGenerator::Impl {
  std::shared_ptr<grpc::Channel> channel;  // the first of `channels`
  std::unique_ptr<v1::EmbeddingService::Stub> stub;
  // Every channel (one HTTP/2 connection each) and its stub; calls go round-robin.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::EmbeddingService::Stub>> stubs;
};

namespace {

std::vector<v1::EmbeddingService::Stub*> StubsOf(const LoadGenerator::Impl& impl) {
  std::vector<v1::EmbeddingService::Stub*> stubs;
  for (const auto& s : impl.stubs) stubs.push_back(s.get());
  return stubs;
}

double CpuSeconds() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

int64_t MicrosBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
}

// The shared state of one point's run: counters under `mu`, the recorder, and the
// loop's stop decision. Calls hold a pointer to it; RunPoint waits until none is left.
struct RunState {
  std::mutex mu;
  std::condition_variable cv;
  // Fixed before the first call.
  bool closed_loop = true;
  Clock::time_point warm_end;
  Clock::time_point measure_end;  // duration mode; time_point::max() in request mode
  int64_t requests_target = 0;    // request mode when > 0
  // Duration mode: when fewer completions than this fell inside the window (requests
  // slower than the window), the window is extended until this many are recorded.
  int64_t min_requests = 1;
  // Guarded by mu.
  bool measure_done = false;
  Clock::time_point last_recorded;
  bool extended = false;  // the window ran past measure_end (see min_requests)
  int64_t outstanding = 0;
  int64_t requests_ok = 0;
  int64_t requests_failed = 0;
  int64_t items_ok = 0;
  int64_t prompt_tokens = 0;
  std::map<std::string, int64_t> errors;
  LatencyRecorder recorder;
  LatencyRecorder refused;  // RESOURCE_EXHAUSTED and UNAVAILABLE: latency only
};

// Runs one point for one RPC type. Request/Response: the proto pair; Call: the async
// stub method.
template <typename Request, typename Response>
class PointRunner {
 public:
  using AsyncMethod = void (v1::EmbeddingService::StubInterface::async_interface::*)(
      grpc::ClientContext*, const Request*, Response*, std::function<void(grpc::Status)>);

  PointRunner(std::vector<v1::EmbeddingService::Stub*> stubs, AsyncMethod method,
              std::vector<Request> pool, std::vector<int32_t> items, int64_t timeout_ms,
              int64_t backoff_ms, RunState* state)
      : stubs_(std::move(stubs)),
        method_(method),
        pool_(std::move(pool)),
        items_(std::move(items)),
        timeout_ms_(timeout_ms),
        backoff_(std::chrono::milliseconds(backoff_ms)),
        state_(state) {
    if (backoff_ms > 0) delayer_ = std::thread([this] { RunDelayed(); });
  }
  PointRunner(const PointRunner&) = delete;
  PointRunner& operator=(const PointRunner&) = delete;
  // Runs after Drive has seen every call end, so nothing is delayed any more.
  ~PointRunner() {
    if (!delayer_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(delay_mu_);
      stop_ = true;
    }
    delay_cv_.notify_all();
    delayer_.join();
  }

  // Sends one request; `scheduled` is when it was due (the latency origin). The
  // caller has already counted it in state_->outstanding. `again`: the pool index of a
  // refused request to send again as it was (what a client that retries does), else
  // kNext for the next one.
  static constexpr size_t kNext = SIZE_MAX;
  void Issue(Clock::time_point scheduled, size_t again = kNext) {
    const uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
    const size_t index = again != kNext ? again : n % pool_.size();
    v1::EmbeddingService::Stub* stub = stubs_[n % stubs_.size()];
    auto* call = new Call;
    call->scheduled = scheduled;
    call->index = index;
    call->items = items_[index];
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(timeout_ms_));
    (stub->async()->*method_)(&call->context, &pool_[index], &call->response,
                               [this, call](grpc::Status status) {
                                 OnDone(call, status);
                               });
  }

 private:
  struct Call {
    grpc::ClientContext context;
    Response response;
    Clock::time_point scheduled;
    int32_t items = 0;
    size_t index = 0;  // in pool_
  };

  void OnDone(Call* call, const grpc::Status& status) {
    Clock::time_point now = Clock::now();
    bool reissue = false;
    bool notify = false;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      --state_->outstanding;
      int64_t count = state_->requests_ok + state_->requests_failed;
      if (now >= state_->warm_end && !state_->measure_done &&
          (now <= state_->measure_end || count < state_->min_requests)) {
        if (status.ok()) {
          const auto& t = call->response.timings();
          state_->recorder.Add(MicrosBetween(call->scheduled, now), t.tokenize_us(),
                               t.queue_us(), t.inference_us(), t.total_us());
          ++state_->requests_ok;
          state_->items_ok += call->items;
          state_->prompt_tokens += call->response.usage().prompt_tokens();
        } else {
          ++state_->requests_failed;
          ++state_->errors[StatusCodeName(static_cast<int>(status.error_code()))];
          if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
              status.error_code() == grpc::StatusCode::UNAVAILABLE) {
            state_->refused.Add(MicrosBetween(call->scheduled, now), 0, 0, 0, 0);
          }
        }
        state_->last_recorded = now;
        ++count;
        if (state_->requests_target > 0 && count >= state_->requests_target) {
          state_->measure_done = true;
          notify = true;
        }
        if (now > state_->measure_end && count >= state_->min_requests) {
          state_->extended = true;
          state_->measure_done = true;
          notify = true;
        }
      }
      if (now > state_->measure_end && count >= state_->min_requests) {
        state_->measure_done = true;
      }
      if (state_->closed_loop && !state_->measure_done) {
        reissue = true;
        ++state_->outstanding;
      }
      if (state_->outstanding == 0) notify = true;
      // Notify under the lock: once RunPoint sees outstanding == 0 it destroys the
      // state, so no call may touch it after releasing the lock.
      if (notify) state_->cv.notify_all();
    }
    const size_t index = call->index;
    delete call;
    if (!reissue) return;
    const grpc::StatusCode code = status.error_code();
    if (code == grpc::StatusCode::RESOURCE_EXHAUSTED || code == grpc::StatusCode::UNAVAILABLE) {
      // A closed-loop caller retries the refused request, after the backoff if any.
      if (backoff_.count() > 0) {
        {
          std::lock_guard<std::mutex> lock(delay_mu_);
          delayed_.push_back({now + backoff_, index});  // one backoff for all: in due order
        }
        delay_cv_.notify_one();
        return;
      }
      Issue(Clock::now(), index);
      return;
    }
    Issue(Clock::now());
  }

  // The backoff thread: issues each delayed request when it is due (its latency origin).
  void RunDelayed() {
    std::unique_lock<std::mutex> lock(delay_mu_);
    while (true) {
      if (stop_) return;
      if (delayed_.empty()) {
        delay_cv_.wait(lock);
        continue;
      }
      const Delayed next = delayed_.front();
      if (Clock::now() < next.due) {
        delay_cv_.wait_until(lock, next.due);
        continue;
      }
      delayed_.pop_front();
      lock.unlock();
      Issue(next.due, next.index);
      lock.lock();
    }
  }

  std::vector<v1::EmbeddingService::Stub*> stubs_;  // not owned; one per channel
  AsyncMethod method_;
  std::vector<Request> pool_;
  std::vector<int32_t> items_;
  int64_t timeout_ms_;
  Clock::duration backoff_;
  RunState* state_;
  std::mutex delay_mu_;
  std::condition_variable delay_cv_;
  struct Delayed {
    Clock::time_point due;
    size_t index;  // the refused request, in pool_
  };
  std::deque<Delayed> delayed_;  // guarded by delay_mu_
  bool stop_ = false;                      // guarded by delay_mu_
  std::thread delayer_;
  std::atomic<uint64_t> next_{0};
};

template <typename Request, typename Response>
PointResult Drive(PointRunner<Request, Response>& runner, RunState& state,
                  const BenchmarkPlan& plan, const GridPoint& point, Method method) {
  PointResult result;
  result.method = method;
  result.point = point;
  Clock::time_point start = Clock::now();
  auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  {
    std::lock_guard<std::mutex> lock(state.mu);
    state.closed_loop = point.rate_rps <= 0;
    state.warm_end = start + seconds(plan.warmup_s);
    state.requests_target = plan.requests;
    state.measure_end = plan.requests > 0 ? Clock::time_point::max()
                                          : state.warm_end + seconds(plan.duration_s);
    // Closed loop: every slot should complete once in the window; open loop: one.
    state.min_requests = point.rate_rps <= 0 ? point.concurrency : 1;
  }
  auto enough = [&state] {
    return state.requests_ok + state.requests_failed >= state.min_requests;
  };
  double cpu_start = -1;
  double cpu_end = 0;
  int64_t sent_in_window = 0;

  if (point.rate_rps <= 0) {
    {
      std::lock_guard<std::mutex> lock(state.mu);
      state.outstanding = point.concurrency;
    }
    for (int32_t i = 0; i < point.concurrency; ++i) runner.Issue(Clock::now());
    std::unique_lock<std::mutex> lock(state.mu);
    state.cv.wait_until(lock, state.warm_end, [&] { return state.measure_done; });
    lock.unlock();
    cpu_start = CpuSeconds();
    lock.lock();
    if (plan.requests > 0) {
      state.cv.wait(lock, [&] { return state.measure_done; });
    } else {
      state.cv.wait_until(lock, state.measure_end, [&] { return state.measure_done; });
      // Too few completions (each request takes longer than the window): go on until
      // min_requests are recorded; OnDone then ends the window.
      if (!enough()) state.cv.wait(lock, [&] { return state.measure_done; });
      state.measure_done = true;  // stop reissuing
    }
    lock.unlock();
    cpu_end = CpuSeconds();
  } else {
    // Open loop: one pacing thread (this one) sends at fixed intervals.
    Clock::duration interval = seconds(1.0 / point.rate_rps);
    for (int64_t k = 0;; ++k) {
      Clock::time_point due = start + interval * k;
      std::this_thread::sleep_until(due);
      if (cpu_start < 0 && due >= state.warm_end) cpu_start = CpuSeconds();
      bool send = false;
      {
        std::lock_guard<std::mutex> lock(state.mu);
        if (state.measure_done || due > state.measure_end) {
          if (enough() || state.outstanding == 0) state.measure_done = true;
          break;
        }
        bool in_window = due >= state.warm_end;
        if (state.outstanding < point.concurrency) {
          ++state.outstanding;
          send = true;
          if (in_window) ++sent_in_window;
        } else if (in_window) {
          ++result.not_sent;
        }
      }
      if (send) runner.Issue(due);
    }
    if (cpu_start < 0) cpu_start = CpuSeconds();
    {
      // As in closed loop: with nothing recorded yet, the in-flight requests end it.
      std::unique_lock<std::mutex> lock(state.mu);
      state.cv.wait(lock, [&] { return state.measure_done || state.outstanding == 0; });
      state.measure_done = true;
    }
    cpu_end = CpuSeconds();
  }
  // Drain: every call has a deadline, so this ends.
  std::unique_lock<std::mutex> lock(state.mu);
  state.cv.wait(lock, [&] { return state.outstanding == 0; });

  Clock::time_point window_end =
      plan.requests > 0 || state.extended ? state.last_recorded : state.measure_end;
  result.measured_s =
      std::max(0.0, std::chrono::duration<double>(window_end - state.warm_end).count());
  if (plan.requests == 0 && !state.extended) result.measured_s = plan.duration_s;
  result.requests_ok = state.requests_ok;
  result.requests_failed = state.requests_failed;
  result.items_ok = state.items_ok;
  result.errors = state.errors;
  if (result.measured_s > 0) {
    result.requests_per_s = static_cast<double>(state.requests_ok) / result.measured_s;
    result.items_per_s = static_cast<double>(state.items_ok) / result.measured_s;
    result.client_cpu_s = cpu_end - cpu_start;
    result.client_cpu_pct = 100.0 * result.client_cpu_s / result.measured_s;
    result.achieved_rate_rps = point.rate_rps > 0
                                   ? static_cast<double>(sent_in_window) / result.measured_s
                                   : result.requests_per_s;
  }
  result.latency = state.recorder.Summarize();
  result.refused_latency = state.refused.Summarize();
  result.stages = state.recorder.Stages();
  if (state.items_ok > 0) {
    result.tokens_per_item =
        static_cast<double>(state.prompt_tokens) / static_cast<double>(state.items_ok);
  }
  return result;
}

}  // namespace

std::string StatusCodeName(int code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",    "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",
      "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) return kNames[code];
  return absl::StrCat("CODE_", code);
}

absl::Status LoadGenerator::Options::Validate() const {
  if (target.empty()) {
    return absl::InvalidArgumentError("target must be host:port; was empty");
  }
  if (channels < 1 || channels > kMaxChannels) {
    return absl::InvalidArgumentError(absl::StrCat("channels must be in [1, ", kMaxChannels,
                                                   "]; was ", channels));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LoadGenerator>> LoadGenerator::Create(
    const Options& options) {
  ES_RETURN_IF_ERROR(options.Validate());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  // A private subchannel pool per channel: without it gRPC shares one connection among
  // channels of equal target and arguments, and every call would still go through one
  // HTTP/2 connection (one transport, whose reads and writes run one at a time).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int32_t i = 0; i < options.channels; ++i) {
    channels.push_back(
        grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args));
  }
  return CreateWithChannels(std::move(channels));
}

absl::StatusOr<std::unique_ptr<LoadGenerator>> LoadGenerator::CreateWithChannel(
    std::shared_ptr<grpc::Channel> channel) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  channels.push_back(std::move(channel));
  return CreateWithChannels(std::move(channels));
}

absl::StatusOr<std::unique_ptr<LoadGenerator>> LoadGenerator::CreateWithChannels(
    std::vector<std::shared_ptr<grpc::Channel>> channels) {
  if (channels.empty()) return absl::InvalidArgumentError("no channel given");
  auto impl = std::make_unique<Impl>();
  for (std::shared_ptr<grpc::Channel>& channel : channels) {
    if (channel == nullptr) return absl::InvalidArgumentError("channel must not be null");
    impl->stubs.push_back(v1::EmbeddingService::NewStub(channel));
  }
  impl->channels = std::move(channels);
  impl->channel = impl->channels.front();
  impl->stub = v1::EmbeddingService::NewStub(impl->channel);
  return std::unique_ptr<LoadGenerator>(new LoadGenerator(std::move(impl)));
}

int32_t LoadGenerator::channels() const {
  return static_cast<int32_t>(impl_->channels.size());
}


LoadGenerator::LoadGenerator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LoadGenerator::~LoadGenerator() = default;

absl::Status LoadGenerator::WaitReady(double timeout_s) {
  auto deadline = std::chrono::system_clock::now() +
                  std::chrono::duration_cast<std::chrono::system_clock::duration>(
                      std::chrono::duration<double>(timeout_s));
  grpc::GenericStub generic(impl_->channel);
  std::string last = "no answer yet";
  while (true) {
    auto now = std::chrono::system_clock::now();
    if (now >= deadline) break;
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    context.set_deadline(std::min(deadline, now + std::chrono::seconds(2)));
    grpc::Slice empty_slice("", 0);
    grpc::ByteBuffer request(&empty_slice, 1);  // HealthCheckRequest{service: ""}
    grpc::ByteBuffer response;
    grpc::CompletionQueue cq;
    std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader =
        generic.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
    reader->StartCall();
    grpc::Status status;
    reader->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    cq.Next(&tag, &ok);
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    if (status.ok()) {
      // HealthCheckResponse{status = 1 (SERVING)} is the two bytes 08 01.
      std::vector<grpc::Slice> slices;
      std::string bytes;
      if (response.Dump(&slices).ok()) {
        for (const grpc::Slice& s : slices) {
          bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
      }
      if (bytes.size() >= 2 && bytes[0] == 0x08 && bytes[1] == 0x01) {
        return absl::OkStatus();
      }
      last = "health status not SERVING";
    } else if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      absl::StatusOr<RunInfo> info = GetModelInfo();
      if (info.ok()) return absl::OkStatus();
      last = std::string(info.status().message());
    } else {
      last = absl::StrCat(StatusCodeName(status.error_code()), ": ", status.error_message());
    }
    // Wait a little before asking again (the server is still loading).
    std::this_thread::sleep_until(
        std::min(deadline, std::chrono::system_clock::now() + std::chrono::milliseconds(200)));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "server not SERVING after ", timeout_s, " s (last answer: ", last, ")"));
}

absl::StatusOr<RunInfo> LoadGenerator::GetModelInfo() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ModelInfo info;
  grpc::Status status =
      impl_->stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("GetModelInfo: ", status.error_message()));
  }
  RunInfo out;
  out["model.name"] = info.name();
  out["model.path"] = info.path();
  out["model.synthetic"] = info.synthetic() ? "true" : "false";
  out["model.dimension"] = absl::StrCat(info.dimension());
  out["model.max_seq_length"] = absl::StrCat(info.max_seq_length());
  out["model.pooling"] = info.pooling();
  out["model.device"] = info.device();
  out["model.precision"] = info.precision();
  out["model.max_texts_per_request"] = absl::StrCat(info.max_texts_per_request());
  const v1::BatchingInfo& b = info.batching();
  out["batching.enabled"] = b.enabled() ? "true" : "false";
  out["batching.max_batch_size"] = absl::StrCat(b.max_batch_size());
  out["batching.max_batch_tokens"] = absl::StrCat(b.max_batch_tokens());
  out["batching.max_queue_delay_us"] = absl::StrCat(b.max_queue_delay_us());
  out["batching.workers"] = absl::StrCat(b.workers());
  for (const auto& [k, v] : info.versions()) out["versions." + k] = v;
  return out;
}

absl::StatusOr<PointResult> LoadGenerator::RunPoint(const BenchmarkPlan& plan,
                                                    const GridPoint& point,
                                                    const std::vector<SentencePair>& data) {
  ES_RETURN_IF_ERROR(plan.Validate());
  if (data.empty()) return absl::InvalidArgumentError("no input pairs to send");
  if (point.batch_size < 1 || point.concurrency < 1 || point.rate_rps < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a point needs batch_size >= 1, concurrency >= 1 and rate_rps >= 0; was ",
        point.batch_size, ", ", point.concurrency, ", ", point.rate_rps));
  }
  RunState state;
  size_t cursor = 0;
  if (plan.method == Method::kSimilarity) {
    std::vector<v1::SimilarityRequest> pool(plan.pool_requests);
    for (v1::SimilarityRequest& request : pool) {
      for (int32_t i = 0; i < point.batch_size; ++i) {
        const SentencePair& pair = data[cursor++ % data.size()];
        v1::TextPair* p = request.add_pairs();
        p->set_text_a(pair.text_a);
        p->set_text_b(pair.text_b);
      }
    }
    std::vector<int32_t> items(pool.size(), point.batch_size);
    PointRunner<v1::SimilarityRequest, v1::SimilarityResponse> runner(
        StubsOf(*impl_),
        &v1::EmbeddingService::StubInterface::async_interface::Similarity, std::move(pool),
        std::move(items), plan.timeout_ms, plan.backoff_ms, &state);
    return Drive(runner, state, plan, point, plan.method);
  }
  std::vector<v1::EmbedRequest> pool(plan.pool_requests);
  for (v1::EmbedRequest& request : pool) {
    for (int32_t i = 0; i < point.batch_size; ++i) {
      size_t k = cursor++;
      const SentencePair& pair = data[(k / 2) % data.size()];
      request.add_texts(k % 2 == 0 ? pair.text_a : pair.text_b);
    }
  }
  std::vector<int32_t> items(pool.size(), point.batch_size);
  PointRunner<v1::EmbedRequest, v1::EmbedResponse> runner(
      StubsOf(*impl_), &v1::EmbeddingService::StubInterface::async_interface::Embed,
      std::move(pool), std::move(items), plan.timeout_ms, plan.backoff_ms, &state);
  return Drive(runner, state, plan, point, plan.method);
}

}  // namespace client
}  // namespace embedserve
