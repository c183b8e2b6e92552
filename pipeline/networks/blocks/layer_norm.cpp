// LayerNorm over the last dim of (rows, C) float32 tokens on the CPU, forward and backward.
// The blocks normalise 16-60 channels per token; ATen's kernel pays a per-row overhead that makes it
// 4-6 times slower than a loop with the channel count known at compile time. Where C is a multiple of the
// register's lanes (lanes.h: 16 or 8), as many rows go at once and their per-row sums reduce lane-parallel (at
// 16 channels 3-4 times faster than one row at a time, whose horizontal sums cost as much as the rest of its work);
// other channel counts and the last rows take the row loop. Rows are split across ATen's threads. Compiled by
// cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

#include "layer_norm.h"
#include "parts.h"

namespace {

using dcif::backward_rows;
using dcif::forward_rows;

constexpr int64_t kGrain = 2048;  // rows: the forward's per task, the backward's per part at least

void check(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "layer_norm takes contiguous float32 CPU tokens (rows, C)");
  TORCH_CHECK(weight.numel() == x.size(1) && bias.numel() == x.size(1) && weight.is_contiguous() &&
                  bias.is_contiguous() && weight.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat,
              "layer_norm weight and bias must be contiguous float32 of C values");
}

}  // namespace

// x: (rows, C) contiguous float32. Returns y (rows, C), mean (rows) and rstd (rows).
std::vector<torch::Tensor> layer_norm(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, double eps) {
  check(x, weight, bias);
  const int64_t rows = x.size(0), channels = x.size(1);
  auto y = torch::empty_like(x);
  auto mean = torch::empty({rows}, x.options()), rstd = torch::empty({rows}, x.options());
  const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>(), *bp = bias.data_ptr<float>();
  float *yp = y.data_ptr<float>(), *mp = mean.data_ptr<float>(), *sp = rstd.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
#define DCIF_FORWARD(C) forward_rows<C>(xp, wp, bp, yp, mp, sp, channels, e, begin, end)
    DCIF_BY_CHANNELS(channels, DCIF_FORWARD)
#undef DCIF_FORWARD
  });
  return {y, mean, rstd};
}

// The gradients of layer_norm for grad = dL/dy: dx (rows, C), dweight (C), dbias (C).
std::vector<torch::Tensor> layer_norm_backward(torch::Tensor x, torch::Tensor weight, torch::Tensor mean,
                                               torch::Tensor rstd, torch::Tensor grad) {
  check(x, weight, weight);
  const auto grad_c = grad.to(at::kFloat).contiguous();
  TORCH_CHECK(grad_c.sizes() == x.sizes() && mean.numel() == x.size(0) && rstd.numel() == x.size(0),
              "layer_norm_backward: grad must match x, mean and rstd one value per row");
  const int64_t rows = x.size(0), channels = x.size(1), blocks = (rows + kGrain - 1) / kGrain;
  const dcif::Parts parts(blocks);
  auto dx = torch::empty_like(x);
  auto sums = torch::zeros({parts.count, 2, channels}, x.options().dtype(at::kDouble));
  const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>(), *mp = mean.data_ptr<float>();
  const float *sp = rstd.data_ptr<float>(), *gp = grad_c.data_ptr<float>();
  float* dxp = dx.data_ptr<float>();
  double* sums_p = sums.data_ptr<double>();
  parts.run(blocks, [&](int64_t part, int64_t first, int64_t last) {
    const int64_t begin = first * kGrain, end = std::min(rows, last * kGrain);
    double* dw = sums_p + part * 2 * channels;
    double* db = dw + channels;
#define DCIF_BACKWARD(C) backward_rows<C>(xp, wp, mp, sp, gp, dxp, dw, db, channels, begin, end)
    DCIF_BY_CHANNELS(channels, DCIF_BACKWARD)
#undef DCIF_BACKWARD
  });
  auto totals = sums.sum(0).to(at::kFloat);
  return {dx, totals[0], totals[1]};
}
