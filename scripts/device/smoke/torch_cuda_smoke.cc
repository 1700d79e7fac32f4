// LibTorch CUDA smoke test: runs an fp16 matmul and scaled_dot_product_attention on the
// GPU, compares them with fp32 CPU results, and exits non-zero on any mismatch.
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>

int main() {
  std::printf("libtorch %s, cuda available %d, devices %d\n", TORCH_VERSION,
              static_cast<int>(torch::cuda::is_available()),
              static_cast<int>(torch::cuda::device_count()));
  if (!torch::cuda::is_available()) return 1;
  try {
    torch::InferenceMode guard;
    torch::manual_seed(0);
    auto a = torch::randn({256, 384});
    auto b = torch::randn({384, 1536});
    auto ref = torch::matmul(a, b);
    auto got = torch::matmul(a.to(torch::kCUDA, torch::kHalf), b.to(torch::kCUDA, torch::kHalf))
                   .to(torch::kCPU, torch::kFloat);
    double rel = ((got - ref).norm() / ref.norm()).item<double>();
    std::printf("fp16 matmul rel err %.2e\n", rel);
    auto q = torch::randn({4, 12, 16, 32});
    auto mask = torch::ones({4, 1, 1, 16}, torch::kBool);
    auto att_ref = torch::softmax(torch::matmul(q, q.transpose(-1, -2)) / std::sqrt(32.0), -1)
                       .matmul(q);
#if TORCH_VERSION_MAJOR >= 2
    auto qc = q.to(torch::kCUDA, torch::kHalf);
    auto att = at::scaled_dot_product_attention(qc, qc, qc, mask.to(torch::kCUDA))
                   .to(torch::kCPU, torch::kFloat);
    double rel2 = ((att - att_ref).norm() / att_ref.norm()).item<double>();
    std::printf("fp16 sdpa rel err %.2e\n", rel2);
    if (rel2 > 1e-2) return 1;
#endif
    return rel < 1e-2 ? 0 : 1;
  } catch (const c10::Error& e) {
    std::printf("c10::Error: %s\n", e.what());
    return 1;
  }
}
