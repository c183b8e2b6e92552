// GELU of the Swin feed-forward layers on the CPU, forward and backward:
// GELU(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, the exact (erf) form, torch's default. ATen's CPU GELU took a tenth
// of a 512 x 512 forward on an AVX2 CPU. Here erf is one rational polynomial (16384 x 32 floats on 2 threads: 0.51 ms
// in place against ATen's 0.70), and the forward can add the linear layer's bias and overwrite its input, so inference
// runs that layer as a bare GEMM with no broadcast bias written first and no second hidden layer.
// Compiled at first use by cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>

#include "lanes.h"

namespace {

using dcif::exp2_nonpositive;
using dcif::kLanes;
using dcif::kLog2e;
using dcif::Lanes;

constexpr int64_t kGrain = 1024;  // rows per task
constexpr float kSqrtHalf = 0.707106781186547524f;
constexpr float kInvSqrt2Pi = 0.398942280401432678f;

// erf(z) as z P(z^2) / Q(z^2) with z clamped to [-4, 4], beyond which erf is +-1 in float32: a least-squares fit of
// ours on Chebyshev nodes of [0, 4], reweighted towards its largest errors; absolute error 4e-7 evaluated in float32.
inline Lanes erf_lanes(Lanes z) {
  z = z < 4.0f ? z : Lanes{} + 4.0f;
  z = z > -4.0f ? z : Lanes{} - 4.0f;
  const Lanes u = z * z;
  Lanes p = Lanes{} + 1.9217228697243627e-08f;
  p = p * u - 1.990346845559543e-06f;
  p = p * u + 1.5554156561847776e-04f;
  p = p * u + 4.293232690542936e-03f;
  p = p * u + 5.243401974439621e-02f;
  p = p * u + 2.1394877135753632e-01f;
  p = p * u + 1.1283786296844482f;
  Lanes q = Lanes{} + 1.0980830993503332e-03f;
  q = q * u + 1.5551447868347168e-02f;
  q = q * u + 1.2080131471157074e-01f;
  q = q * u + 5.229347944259644e-01f;
  q = q * u + 1.0f;
  return z * p / q;
}

inline Lanes gelu_lanes(Lanes x) {
  const Lanes half_x = x * 0.5f;
  return half_x + half_x * erf_lanes(x * kSqrtHalf);
}

// d GELU / dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
inline Lanes gelu_slope_lanes(Lanes x) {
  const Lanes phi = exp2_nonpositive(x * x * (-0.5f * kLog2e)) * kInvSqrt2Pi;
  return 0.5f + 0.5f * erf_lanes(x * kSqrtHalf) + x * phi;
}

// f on each row of (rows, C) floats, kLanes channels at a time; a row's last partial group goes through a padded copy.
template <typename F>
void over_rows(int64_t rows, int64_t channels, F&& f) {
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t c = 0; c < channels; c += kLanes) f(row * channels + c, std::min<int64_t>(kLanes, channels - c), c);
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
  over_rows(x.size(0), x.size(1), [&](int64_t at, int64_t count, int64_t channel) {
    Lanes v = load_part(xp + at, count);
    if (bp) v += load_part(bp + channel, count);
    store_part(op + at, gelu_lanes(v), count);
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
  over_rows(x.size(0), x.size(1), [&](int64_t at, int64_t count, int64_t) {
    store_part(dp + at, load_part(gp + at, count) * gelu_slope_lanes(load_part(xp + at, count)), count);
  });
  return dx;
}
