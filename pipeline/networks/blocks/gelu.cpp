// GELU of the Swin feed-forward layers on the CPU, forward and backward:
// GELU(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, the exact (erf) form, torch's default. ATen's CPU GELU took a tenth
// of a 512 x 512 forward on an AVX2 CPU. Here erf is one rational polynomial (16384 x 32 floats on 2 threads: 0.51 ms
// in place against ATen's 0.70), and the forward can add the linear layer's bias and overwrite its input, so inference
// runs that layer as a bare GEMM with no broadcast bias written first and no second hidden layer.
// Compiled at first use by cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>

#include "gelu.h"

namespace {

using dcif::kGeluGroup;
using dcif::kLanes;
using dcif::Lanes;

constexpr int64_t kGrain = 4096;  // vectors per task

// f.template operator()<N>(at, count, channel) on the kLanes-float vectors of (rows, C) floats: N vectors from float
// offset at, each of count floats (kLanes, or fewer for a row's last partial vector), the first at channel `channel`
// of its row (tracked here, not divided out of at by each call: that cost a biased GELU 7 %). Where C is a multiple
// of kLanes the rows are one run of whole vectors, taken kGeluGroup at a time; otherwise each row one vector at a time.
template <typename F>
void over_vectors(int64_t rows, int64_t channels, F&& f) {
  if (channels % kLanes == 0) {
    at::parallel_for(0, rows * channels / kLanes, kGrain, [&](int64_t begin, int64_t end) {
      const dcif::FlushDenormals flush;  // the slope's density underflows to 2^-126 for |x| > 13
      int64_t v = begin;
      int64_t channel = v * kLanes % channels;
      for (; v + kGeluGroup <= end; v += kGeluGroup) {
        f.template operator()<kGeluGroup>(v * kLanes, kLanes, channel);
        channel = (channel + kGeluGroup * kLanes) % channels;
      }
      for (; v < end; ++v, channel = (channel + kLanes) % channels) f.template operator()<1>(v * kLanes, kLanes, channel);
    });
    return;
  }
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / channels), [&](int64_t begin, int64_t end) {
    const dcif::FlushDenormals flush;
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t c = 0; c < channels; c += kLanes) {
        f.template operator()<1>(row * channels + c, std::min<int64_t>(kLanes, channels - c), c);
      }
    }
  });
}

inline Lanes load_part(const float* from, int64_t count) {
  if (count == kLanes) return dcif::load_lanes(from);
  Lanes x{};
  std::memcpy(&x, from, sizeof(float) * count);
  return x;
}

inline void store_part(float* to, const Lanes& x, int64_t count) {
  if (count == kLanes) return dcif::store_lanes(to, x);
  std::memcpy(to, &x, sizeof(float) * count);
}

void check_rows(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(), name,
              " takes contiguous float32 CPU rows (rows, C)");
}

}  // namespace

// out = GELU(x + bias) for x (rows, C) and bias (C) or empty; out may be x itself. Returns out.
torch::Tensor gelu(torch::Tensor x, torch::Tensor bias, torch::Tensor out) {
  check_rows(x, "gelu");
  TORCH_CHECK(out.sizes() == x.sizes() && out.is_contiguous() && out.scalar_type() == at::kFloat,
              "gelu's out must be contiguous float32 like x");
  const bool biased = bias.numel() > 0;
  TORCH_CHECK(!biased || (bias.numel() == x.size(1) && bias.is_contiguous() && bias.scalar_type() == at::kFloat),
              "gelu's bias must be contiguous float32 of C values, or empty");
  const float* xp = x.data_ptr<float>();
  const float* bp = biased ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const int64_t channels = x.size(1);
  over_vectors(x.size(0), channels, [&]<int N>(int64_t at, int64_t count, int64_t channel) {
    Lanes v[N];
    for (int k = 0; k < N; ++k) {
      v[k] = load_part(xp + at + k * kLanes, count);
      if (bp) v[k] += load_part(bp + channel, count);
      channel = channel + kLanes == channels ? 0 : channel + kLanes;
    }
    dcif::gelu_lanes(v);
    for (int k = 0; k < N; ++k) store_part(op + at + k * kLanes, v[k], count);
  });
  return out;
}

// dL/dx = grad * GELU'(x) for the input x (rows, C) of gelu (its bias included).
torch::Tensor gelu_backward(torch::Tensor x, torch::Tensor grad) {
  check_rows(x, "gelu_backward");
  const auto grad_c = grad.to(at::kFloat).contiguous();
  TORCH_CHECK(grad_c.sizes() == x.sizes(), "gelu_backward: grad must match x");
  auto dx = torch::empty_like(x);
  const float *xp = x.data_ptr<float>(), *gp = grad_c.data_ptr<float>();
  float* dp = dx.data_ptr<float>();
  over_vectors(x.size(0), x.size(1), [&]<int N>(int64_t at, int64_t count, int64_t) {
    Lanes v[N], g[N];
    for (int k = 0; k < N; ++k) {
      v[k] = load_part(xp + at + k * kLanes, count);
      g[k] = load_part(gp + at + k * kLanes, count);
    }
    dcif::gelu_slope_lanes(v, g);
    for (int k = 0; k < N; ++k) store_part(dp + at + k * kLanes, g[k], count);
  });
  return dx;
}
