#include "cpu_fp32_linear.h"

#include <ATen/Parallel.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace embedserve {
namespace internal_model {
namespace {

using dt = dnnl::memory::data_type;

// Rows per thread from which Forward splits the rows among the threads itself.
constexpr int64_t kMinRowsPerThread = 128;

const dnnl::engine& Engine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

}  // namespace

struct Fp32Linear::Impl {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul matmul;
  dnnl::memory weights;  // in the layout the primitive wants
  dnnl::memory bias;     // [1, N], over bias_
};

Fp32Linear::~Fp32Linear() = default;

absl::StatusOr<std::unique_ptr<Fp32Linear>> Fp32Linear::Create(const torch::Tensor& weight,
                                                               const torch::Tensor& bias,
                                                               LinearEpilogue epilogue) {
  if (weight.dim() != 2 || weight.scalar_type() != torch::kFloat || !weight.device().is_cpu()) {
    return absl::InvalidArgumentError("Fp32Linear: the weight must be a 2-d fp32 CPU tensor");
  }
  const int64_t n = weight.size(0), k = weight.size(1);
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fp32Linear: the bias must have ", n, " elements"));
  }
  std::unique_ptr<Fp32Linear> l(new Fp32Linear());
  l->n_ = n;
  l->k_ = k;
  l->epilogue_ = epilogue;
  l->bias_ = bias.defined() ? bias.to(torch::kFloat).contiguous().clone() : torch::zeros({n});
  const torch::Tensor w = weight.contiguous();
  try {
    const dnnl::engine& engine = Engine();
    // src [M, K] row-major with M known per call; weights [K, N] (our [N, K] read
    // transposed) in whatever layout the kernel prefers; dst [M, N] row-major.
    dnnl::memory::desc src_md({DNNL_RUNTIME_DIM_VAL, k}, dt::f32, dnnl::memory::dims{k, 1});
    dnnl::memory::desc wei_md({k, n}, dt::f32, dnnl::memory::format_tag::any);
    dnnl::memory::desc bias_md({1, n}, dt::f32, dnnl::memory::dims{n, 1});
    dnnl::memory::desc dst_md({DNNL_RUNTIME_DIM_VAL, n}, dt::f32, dnnl::memory::dims{n, 1});
    dnnl::post_ops ops;
    switch (epilogue) {
      case LinearEpilogue::kBias:
        break;
      case LinearEpilogue::kBiasGelu:
        break;  // no bias either: BiasGeluInPlaceCpu after the matmul (Forward)
      case LinearEpilogue::kBiasGeluTanh:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_tanh, 0.0f, 0.0f);
        break;
      case LinearEpilogue::kBiasRelu:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        break;
      case LinearEpilogue::kBiasAddInto:
        ops.append_sum(1.0f);  // dst = dst + (x W^T + b)
        break;
    }
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    auto impl = std::make_unique<Impl>();
    // kBiasGelu: a matmul without bias, whose output our pass reads once for bias + GELU
    // (with the bias, oneDNN adds it in a pass of its own over the output).
    impl->pd = epilogue == LinearEpilogue::kBiasGelu
                   ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md),
                                                  attr, engine)
                   : dnnl::matmul::primitive_desc(
                         dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md), attr, engine);
    impl->matmul = dnnl::matmul(impl->pd);
    dnnl::memory::desc user_md({k, n}, dt::f32, dnnl::memory::dims{1, k});
    dnnl::memory user(user_md, engine, w.data_ptr());
    impl->weights = dnnl::memory(impl->pd.weights_desc(), engine);
    dnnl::stream stream(engine);
    dnnl::reorder(user, impl->weights).execute(stream, user, impl->weights);
    stream.wait();
    impl->bias = dnnl::memory(bias_md, engine, l->bias_.data_ptr());
    l->impl_ = std::move(impl);
  } catch (const dnnl::error& e) {
    return absl::InternalError(
        absl::StrCat("oneDNN has no fp32 matmul for this cpu (", e.what(), ")"));
  }
  return l;
}

torch::Tensor Fp32Linear::Forward(const torch::Tensor& input, torch::Tensor out) const {
  TORCH_CHECK(input.device().is_cpu() && input.scalar_type() == torch::kFloat &&
                  input.dim() == 2 && input.size(1) == k_,
              "Fp32Linear: x must be an fp32 CPU matrix of ", k_, " columns");
  const torch::Tensor x = input.contiguous();
  const int64_t m = x.size(0);
  out = LinearOutput(std::move(out), m, n_, epilogue_, "Fp32Linear");
  if (m == 0) return out;
  // Rows [begin, end): the matmul, then our bias + GELU pass for kBiasGelu. Inside a
  // parallel region oneDNN and BiasGeluInPlaceCpu run on the calling thread alone.
  auto rows = [&](int64_t begin, int64_t end) {
    const int64_t count = end - begin;
    const dnnl::engine& engine = Engine();
    dnnl::memory src({{count, k_}, dt::f32, dnnl::memory::dims{k_, 1}}, engine,
                     x.data_ptr<float>() + begin * k_);
    dnnl::memory dst({{count, n_}, dt::f32, dnnl::memory::dims{n_, 1}}, engine,
                     out.data_ptr<float>() + begin * n_);
    dnnl::stream stream(engine);
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, impl_->weights}, {DNNL_ARG_DST, dst}};
    // Only a primitive made with a bias takes one: oneDNN refuses to execute the
    // bias-free one when given a bias argument ("could not execute a primitive").
    if (epilogue_ != LinearEpilogue::kBiasGelu) args.emplace(DNNL_ARG_BIAS, impl_->bias);
    impl_->matmul.execute(stream, args);
    stream.wait();
    if (epilogue_ == LinearEpilogue::kBiasGelu) {
      torch::Tensor part = out.narrow(0, begin, count);
      BiasGeluInPlaceCpu(part, bias_);
    }
  };
  // With enough rows each thread runs the matmul on its own contiguous share of them,
  // split as at::parallel_for splits the rows of LayerNormInPlaceCpu and
  // BiasGeluInPlaceCpu, so a thread reads rows that its core last wrote and applies the
  // bias + GELU while its rows are still in its cache. Alone on hot data this is as fast
  // as oneDNN's own split (within +-2% at 128-446 rows, 2 threads); in the forward, where
  // the activations come from the op before, it is faster (docs/model.md). Below
  // kMinRowsPerThread a thread's rows are too few (at 14 rows, 10-20% slower: each thread
  // then streams all the weights for a handful of rows), and oneDNN splits the work.
  const int64_t threads = at::get_num_threads();
  if (threads > 1 && m >= kMinRowsPerThread * threads && !at::in_parallel_region()) {
    at::parallel_for(0, m, (m + threads - 1) / threads, rows);
  } else {
    rows(0, m);
  }
  return out;
}

}  // namespace internal_model
}  // namespace embedserve
