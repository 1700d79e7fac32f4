// fake-embedserve: a stand-in for the `embedserve` binary with the same command line
// (--config F [--port N] [--metrics-port N] [--print-config]) and gRPC surface (the
// EmbeddingService, grpc.health.v1, SIGTERM = graceful stop), but no model: each
// request holds one simulated device for 200 us + 20 us per item. Lets the launcher
// (scripts/run_experiment.sh) and the report be tested without LibTorch.
// --model and --precision are accepted and ignored. Extra flags for tests: --fail-after N (exit 3 after N requests, a crashing server),
// --no-ready (never report SERVING).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "embedserve/v1/embedding.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace {

namespace v1 = ::embedserve::v1;
using Clock = std::chrono::steady_clock;

// Self-pipe: the handler (any thread) writes the signal number, main() reads it.
int g_signal_pipe[2] = {-1, -1};
extern "C" void OnSignal(int sig) {
  unsigned char b = static_cast<unsigned char>(sig);
  (void)!write(g_signal_pipe[1], &b, 1);
}

int64_t Us(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

class FakeService final : public v1::EmbeddingService::Service {
 public:
  FakeService(bool batching, std::string precision, int64_t fail_after)
      : batching_(batching), precision_(std::move(precision)), fail_after_(fail_after) {}

  grpc::Status Similarity(grpc::ServerContext*, const v1::SimilarityRequest* request,
                          v1::SimilarityResponse* response) override {
    Run(request->pairs_size() * 2, response->mutable_usage(), response->mutable_timings());
    for (int i = 0; i < request->pairs_size(); ++i) response->add_scores(0.5f);
    return grpc::Status::OK;
  }
  grpc::Status Embed(grpc::ServerContext*, const v1::EmbedRequest* request,
                     v1::EmbedResponse* response) override {
    Run(request->texts_size(), response->mutable_usage(), response->mutable_timings());
    for (int i = 0; i < request->texts_size(); ++i) {
      response->add_embeddings()->add_values(1.0f);
    }
    return grpc::Status::OK;
  }
  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                            v1::ModelInfo* info) override {
    info->set_name("fake-model");
    info->set_synthetic(true);
    info->set_device("cpu");
    info->set_precision(precision_);
    info->set_dimension(1);
    info->mutable_batching()->set_enabled(batching_);
    (*info->mutable_versions())["libtorch"] = "none (fake)";
    return grpc::Status::OK;
  }

 private:
  void Run(int texts, v1::Usage* usage, v1::Timings* timings) {
    if (fail_after_ > 0 && ++served_ > fail_after_) {
      std::cerr << "fake-embedserve: simulated crash after " << fail_after_ << " requests\n";
      std::_Exit(3);
    }
    Clock::time_point start = Clock::now();
    std::this_thread::sleep_for(std::chrono::microseconds(5 * texts));  // "tokenize"
    Clock::time_point tokenized = Clock::now();
    std::lock_guard<std::mutex> lock(device_);
    Clock::time_point started = Clock::now();
    std::this_thread::sleep_for(std::chrono::microseconds(200 + 10 * texts));
    Clock::time_point done = Clock::now();
    usage->set_prompt_tokens(14 * texts);
    usage->set_total_tokens(14 * texts);
    timings->set_tokenize_us(Us(tokenized - start));
    timings->set_queue_us(Us(started - tokenized));
    timings->set_inference_us(Us(done - started));
    timings->set_total_us(Us(Clock::now() - start));
  }

  const bool batching_;
  const std::string precision_;
  const int64_t fail_after_;
  std::atomic<int64_t> served_{0};
  std::mutex device_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fake-embedserve (tests only)"};
  std::string config;
  int port = 50051, metrics_port = 0;
  int64_t fail_after = 0;
  bool print_config = false, no_ready = false;
  app.add_option("--config", config)->required();
  app.add_option("--port", port);
  app.add_option("--metrics-port", metrics_port);
  int http_port = -1;
  app.add_option("--http-port", http_port, "accepted and ignored (the fake has no HTTP)");
  std::string model, precision_flag;
  app.add_option("--model", model, "accepted and ignored (the fake has no model)");
  app.add_option("--precision", precision_flag, "accepted and ignored");
  app.add_option("--fail-after", fail_after);
  app.add_flag("--print-config", print_config);
  app.add_flag("--no-ready", no_ready);
  CLI11_PARSE(app, argc, argv);

  std::ifstream in(config);
  if (!in) {
    std::cerr << "fake-embedserve: cannot open config " << config << "\n";
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  if (print_config) {
    std::cout << text.str();
    return 0;
  }
  // Crude reads of the two facts the report shows; the real server parses the YAML.
  std::string yaml = text.str();
  bool batching = yaml.find("enabled: true") != std::string::npos;
  std::string precision = yaml.find("precision: bf16") != std::string::npos ? "bf16" : "fp32";

  if (pipe(g_signal_pipe) != 0) return 1;
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  FakeService service(batching, precision, fail_after);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port),
                           grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::cerr << "fake-embedserve: cannot listen on port " << port << "\n";
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(!no_ready);
  std::cerr << "fake-embedserve: listening on 127.0.0.1:" << port
            << " batching=" << batching << " precision=" << precision << "\n";
  unsigned char sig = 0;
  while (read(g_signal_pipe[0], &sig, 1) != 1) {
  }
  std::cerr << "fake-embedserve: signal " << static_cast<int>(sig) << ", shutting down\n";
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
