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

constexpr int64_t kGrain = 4096;  // vectors per task
constexpr int kGroup = 4;  // vectors evaluated side by side
constexpr float kSqrtHalf = 0.707106781186547524f;
constexpr float kInvSqrt2Pi = 0.398942280401432678f;

// erf(z) of N vectors in place, as z P(z^2) / Q(z^2) with z clamped to [-4, 4], beyond which erf is +-1 in float32:
// a least-squares fit of ours on Chebyshev nodes of [0, 4], reweighted towards its largest errors; absolute error
// 4e-7 evaluated in float32. Each step runs on all N vectors before the next, so the core overlaps N chains of
// dependent FMAs: with GELU as x Phi(x), the forward ran 1.3x and the backward 1.05x as fast as one vector at a time
// (AVX2 EPYC, 4 vectors).
template <int N>
inline void erf_lanes(Lanes (&z)[N]) {
  Lanes u[N], p[N], q[N];
  for (int k = 0; k < N; ++k) {
    z[k] = z[k] < 4.0f ? z[k] : Lanes{} + 4.0f;
    z[k] = z[k] > -4.0f ? z[k] : Lanes{} - 4.0f;
    u[k] = z[k] * z[k];
    p[k] = u[k] * 1.9217228697243627e-08f - 1.990346845559543e-06f;
    q[k] = u[k] * 1.0980830993503332e-03f + 1.5551447868347168e-02f;
  }
  for (int k = 0; k < N; ++k) p[k] = p[k] * u[k] + 1.5554156561847776e-04f, q[k] = q[k] * u[k] + 1.2080131471157074e-01f;
  for (int k = 0; k < N; ++k) p[k] = p[k] * u[k] + 4.293232690542936e-03f, q[k] = q[k] * u[k] + 5.229347944259644e-01f;
  for (int k = 0; k < N; ++k) p[k] = p[k] * u[k] + 5.243401974439621e-02f, q[k] = q[k] * u[k] + 1.0f;
  for (int k = 0; k < N; ++k) p[k] = p[k] * u[k] + 2.1394877135753632e-01f;
  for (int k = 0; k < N; ++k) p[k] = p[k] * u[k] + 1.1283786296844482f;
  for (int k = 0; k < N; ++k) z[k] = z[k] * p[k] / q[k];
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2 of N vectors: the costly part of GELU(x) = x Phi(x) and of its slope.
template <int N>
inline void normal_cdf_lanes(const Lanes (&x)[N], Lanes (&cdf)[N]) {
  for (int k = 0; k < N; ++k) cdf[k] = x[k] * kSqrtHalf;
  erf_lanes(cdf);
  for (int k = 0; k < N; ++k) cdf[k] = 0.5f + 0.5f * cdf[k];
}

// f.template operator()<N>(at, count, channel) on the kLanes-float vectors of (rows, C) floats: N vectors from float
// offset at, each of count floats (kLanes, or fewer for a row's last partial vector), the first at channel `channel`
// of its row (tracked here, not divided out of at by each call: that cost a biased GELU 7 %). Where C is a multiple
// of kLanes the rows are one run of whole vectors, taken kGroup at a time; otherwise each row one vector at a time.
template <typename F>
void over_vectors(int64_t rows, int64_t channels, F&& f) {
  if (channels % kLanes == 0) {
    at::parallel_for(0, rows * channels / kLanes, kGrain, [&](int64_t begin, int64_t end) {
      const dcif::FlushDenormals flush;  // the slope's density underflows to 2^-126 for |x| > 13
      int64_t v = begin;
      int64_t channel = v * kLanes % channels;
      for (; v + kGroup <= end; v += kGroup) {
        f.template operator()<kGroup>(v * kLanes, kLanes, channel);
        channel = (channel + kGroup * kLanes) % channels;
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
    Lanes cdf[N];
    normal_cdf_lanes(v, cdf);
    for (int k = 0; k < N; ++k) store_part(op + at + k * kLanes, v[k] * cdf[k], count);
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
    Lanes v[N];
    for (int k = 0; k < N; ++k) v[k] = load_part(xp + at + k * kLanes, count);
    Lanes cdf[N], density[N];  // d GELU / dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    for (int k = 0; k < N; ++k) density[k] = exp2_nonpositive(v[k] * v[k] * (-0.5f * kLog2e)) * kInvSqrt2Pi;
    normal_cdf_lanes(v, cdf);
    for (int k = 0; k < N; ++k) {
      store_part(dp + at + k * kLanes, load_part(gp + at + k * kLanes, count) * (cdf[k] + v[k] * density[k]), count);
    }
  });
  return dx;
}
