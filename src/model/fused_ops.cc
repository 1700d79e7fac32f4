#include "fused_ops.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "fused_kernels.h"

namespace embedserve {
namespace internal_model {
namespace {

namespace ck = ::embedserve::cuda_kernels;

ck::Dtype KernelDtype(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return ck::Dtype::kFloat32;
    case torch::kHalf: return ck::Dtype::kFloat16;
    case torch::kBFloat16: return ck::Dtype::kBFloat16;
    default: break;
  }
  TORCH_CHECK(false, "fused kernels take float32, float16 or bfloat16 tensors; got ",
              t.scalar_type());
  return ck::Dtype::kFloat32;
}

// `t` is a contiguous CUDA tensor of `like`'s dtype and device with `numel` elements
// (numel < 0: any).
void CheckOperand(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_cuda(), "fused kernels: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == like.device(), "fused kernels: ", name, " is on ", t.device(),
              ", expected ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "fused kernels: ", name, " has dtype ",
              t.scalar_type(), ", expected ", like.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "fused kernels: ", name, " must be contiguous");
}

void CheckVector(const torch::Tensor& t, const torch::Tensor& like, int64_t width,
                 const char* name) {
  CheckOperand(t, like, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == width, "fused kernels: ", name, " must be [", width,
              "], got ", t.sizes());
}

void CheckLaunch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": ", cudaGetErrorString(err));
}

}  // namespace

torch::Tensor FusedAddLayerNorm(const torch::Tensor& x, const torch::Tensor& residual,
                                const torch::Tensor& bias, const torch::Tensor& gamma,
                                const torch::Tensor& beta, double eps, torch::Tensor out) {
  TORCH_CHECK(x.dim() == 2, "FusedAddLayerNorm: x must be [rows, width], got ", x.sizes());
  CheckOperand(x, x, "x");
  const int64_t rows = x.size(0), width = x.size(1);
  if (residual.defined()) {
    CheckOperand(residual, x, "residual");
    TORCH_CHECK(residual.sizes() == x.sizes(), "FusedAddLayerNorm: residual is ",
                residual.sizes(), ", x is ", x.sizes());
  }
  if (bias.defined()) CheckVector(bias, x, width, "bias");
  CheckVector(gamma, x, width, "gamma");
  CheckVector(beta, x, width, "beta");
  if (out.defined()) {
    CheckOperand(out, x, "out");
    TORCH_CHECK(out.sizes() == x.sizes(), "FusedAddLayerNorm: out is ", out.sizes(), ", x is ",
                x.sizes());
  } else {
    out = torch::empty_like(x);
  }
  const c10::cuda::CUDAGuard guard(x.device());
  ck::AddLayerNormArgs a;
  a.dtype = KernelDtype(x);
  a.out = out.data_ptr();
  a.x = x.data_ptr();
  a.residual = residual.defined() ? residual.data_ptr() : nullptr;
  a.bias = bias.defined() ? bias.data_ptr() : nullptr;
  a.gamma = gamma.data_ptr();
  a.beta = beta.data_ptr();
  a.rows = rows;
  a.width = width;
  a.eps = static_cast<float>(eps);
  CheckLaunch(ck::AddLayerNorm(a, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
              "FusedAddLayerNorm");
  return out;
}

torch::Tensor FusedGatherAddLayerNorm(const torch::Tensor& table_a, const torch::Tensor& index_a,
                                      const torch::Tensor& table_b, const torch::Tensor& index_b,
                                      const torch::Tensor& gamma, const torch::Tensor& beta,
                                      double eps) {
  TORCH_CHECK(table_a.dim() == 2 && table_b.dim() == 2 && table_a.size(1) == table_b.size(1),
              "FusedGatherAddLayerNorm: tables must be [*, width] of one width, got ",
              table_a.sizes(), " and ", table_b.sizes());
  CheckOperand(table_a, table_a, "table_a");
  CheckOperand(table_b, table_a, "table_b");
  const int64_t width = table_a.size(1);
  TORCH_CHECK(index_a.dim() == 1 && index_b.sizes() == index_a.sizes(),
              "FusedGatherAddLayerNorm: indices must be two [rows] vectors, got ",
              index_a.sizes(), " and ", index_b.sizes());
  for (const torch::Tensor* idx : {&index_a, &index_b}) {
    TORCH_CHECK(idx->scalar_type() == torch::kLong && idx->device() == table_a.device(),
                "FusedGatherAddLayerNorm: indices must be int64 on ", table_a.device());
  }
  // Packed index vectors may be narrow() views into one buffer: contiguous, any offset.
  const torch::Tensor ia = index_a.contiguous(), ib = index_b.contiguous();
  CheckVector(gamma, table_a, width, "gamma");
  CheckVector(beta, table_a, width, "beta");
  const int64_t rows = ia.size(0);
  torch::Tensor out = torch::empty({rows, width}, table_a.options());
  const c10::cuda::CUDAGuard guard(table_a.device());
  ck::AddLayerNormArgs a;
  a.dtype = KernelDtype(table_a);
  a.out = out.data_ptr();
  a.x = table_a.data_ptr();
  a.x_index = ia.data_ptr<int64_t>();
  a.residual = table_b.data_ptr();
  a.residual_index = ib.data_ptr<int64_t>();
  a.gamma = gamma.data_ptr();
  a.beta = beta.data_ptr();
  a.rows = rows;
  a.width = width;
  a.eps = static_cast<float>(eps);
  CheckLaunch(
      ck::AddLayerNorm(a, c10::cuda::getCurrentCUDAStream(table_a.device().index()).stream()),
      "FusedGatherAddLayerNorm");
  return out;
}

torch::Tensor FusedBiasGelu_(torch::Tensor& x, const torch::Tensor& bias, bool tanh) {
  TORCH_CHECK(x.dim() == 2, "FusedBiasGelu_: x must be [rows, width], got ", x.sizes());
  CheckOperand(x, x, "x");
  if (bias.defined()) CheckVector(bias, x, x.size(1), "bias");
  const c10::cuda::CUDAGuard guard(x.device());
  CheckLaunch(ck::BiasActivation(KernelDtype(x), x.data_ptr(),
                                 bias.defined() ? bias.data_ptr() : nullptr, x.size(0), x.size(1),
                                 tanh ? ck::Activation::kGeluTanh : ck::Activation::kGeluErf,
                                 c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
              "FusedBiasGelu_");
  return x;
}

torch::Tensor FusedPackedAttention(const torch::Tensor& qkv, const torch::Tensor& offsets,
                                   const torch::Tensor& lengths, int64_t longest, int64_t heads,
                                   double scale, bool simt) {
  TORCH_CHECK(qkv.dim() == 2 && heads > 0 && qkv.size(1) % (3 * heads) == 0,
              "FusedPackedAttention: qkv must be [rows, 3 * heads * head_dim], got ", qkv.sizes(),
              " with ", heads, " heads");
  CheckOperand(qkv, qkv, "qkv");
  const int64_t hidden = qkv.size(1) / 3, head_dim = hidden / heads;
  TORCH_CHECK(ck::PackedAttentionRuns(head_dim, longest),
              "FusedPackedAttention: head_dim 32 or 64 and at most ",
              ck::kPackedAttentionMaxTokens, " tokens, got ", head_dim, " and ", longest);
  const int64_t batch = lengths.numel();
  for (const torch::Tensor* t : {&offsets, &lengths}) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->scalar_type() == torch::kLong && t->device() == qkv.device() &&
                    t->dim() == 1 && t->numel() == batch && t->is_contiguous(),
                "FusedPackedAttention: offsets and lengths must be int64 [batch] on ",
                qkv.device());
  }
  TORCH_CHECK(offsets.defined() || qkv.size(0) == batch * longest,
              "FusedPackedAttention: the padded layout needs batch x longest rows, got ",
              qkv.size(0));
  torch::Tensor out = torch::empty({qkv.size(0), hidden}, qkv.options());
  const c10::cuda::CUDAGuard guard(qkv.device());
  ck::PackedAttentionArgs a;
  a.dtype = KernelDtype(qkv);
  a.out = out.data_ptr();
  a.qkv = qkv.data_ptr();
  a.offsets = offsets.defined() ? offsets.data_ptr<int64_t>() : nullptr;
  a.lengths = lengths.data_ptr<int64_t>();
  a.batch = batch;
  a.longest = longest;
  a.heads = static_cast<int>(heads);
  a.head_dim = static_cast<int>(head_dim);
  a.scale = static_cast<float>(scale);
  a.form = simt ? ck::AttentionForm::kSimt : ck::AttentionForm::kAuto;
  a.rows = qkv.size(0);
  CheckLaunch(ck::PackedAttention(a, c10::cuda::getCurrentCUDAStream(qkv.device().index()).stream()),
              "FusedPackedAttention");
  return out;
}

}  // namespace internal_model
}  // namespace embedserve
