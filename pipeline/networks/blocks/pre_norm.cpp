// The Swin blocks' pre-norm layers in inference, fused on the CPU: the attention's projection LN(x) W^T + b, and the
// residuals x += proj(attended), then x += W2 GELU(W1 LN(x) + b1) + b2 on (rows, C) tokens in place. As separate
// kernels (LayerNorm, the layers, GELU) each step streams a chunk's tokens or hidden layer (2 MB at 16384 tokens x 32)
// through L2 and beyond; here a block of rows goes through all the steps with its normalised rows and hidden layer in
// L1 (48 rows x 16-64 floats), and x is read (and in the residuals written) once. The steps are those kernels' own
// routines (layer_norm.h, token_linear.h, gelu.h), so the numbers are theirs. Compiled at first use by cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

#include "gelu.h"
#include "layer_norm.h"
#include "token_linear.h"

namespace {

using dcif::kPanel;
using dcif::kRows;
using dcif::panels;
using dcif::rows_times;

// Rows a block takes through the steps: a multiple of the LayerNorm's lane rows (16 or 8) and of both tile heights
// (8 and 6), so that only a map's last block has edges.
constexpr int64_t kBlockRows = 48;
static_assert(kBlockRows % dcif::kLanes == 0 && kBlockRows % kRows == 0, "blocks of whole LayerNorm and tile rows");

void check_tokens(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "the fused layers take contiguous float32 CPU tokens (rows, C)");
}

void check_vector(const torch::Tensor& t, int64_t size, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.numel() == size && t.is_contiguous() && t.scalar_type() == at::kFloat, name,
              " must be contiguous float32 of ", size, " values");
}

void check_layer(const torch::Tensor& weight, const torch::Tensor& bias, int64_t out, int64_t in, const char* name) {
  TORCH_CHECK(out % kPanel == 0 && in % kPanel == 0, "the fused layers take widths in multiples of 16, not ", name,
              " (", out, ", ", in, ")");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == out && weight.size(1) == in && weight.is_contiguous() &&
                  weight.scalar_type() == at::kFloat, name, " must be contiguous float32 (", out, ", ", in, ")");
  check_vector(bias, out, name);
}

// For each block of count (at most kBlockRows) rows of x (rows, C) from row first: before(first, count), then
// f(first, count, normed, scratch), normed holding the rows' LayerNorm and scratch kBlockRows * scratch_row floats of
// the thread's own. Blocks go to threads.
template <typename B, typename F>
void over_normed_blocks(const torch::Tensor& x, const torch::Tensor& norm_weight, const torch::Tensor& norm_bias,
                        double eps, int64_t scratch_row, B&& before, F&& f) {
  const int64_t rows = x.size(0), channels = x.size(1);
  check_vector(norm_weight, channels, "norm_weight");
  check_vector(norm_bias, channels, "norm_bias");
  const float *xp = x.data_ptr<float>(), *nw = norm_weight.data_ptr<float>(), *nb = norm_bias.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, (rows + kBlockRows - 1) / kBlockRows, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> normed(kBlockRows * channels), stats(2 * kBlockRows), scratch(kBlockRows * scratch_row);
    for (int64_t first = begin * kBlockRows; first < std::min(rows, end * kBlockRows); first += kBlockRows) {
      const int64_t count = std::min(kBlockRows, rows - first);
      before(first, count);
#define DCIF_NORMALISE(C)                                                                                        \
  dcif::forward_rows<C>(xp + first * channels, nw, nb, normed.data(), stats.data(), stats.data() + kBlockRows, \
                        channels, e, 0, count)
      DCIF_BY_CHANNELS(channels, DCIF_NORMALISE)
#undef DCIF_NORMALISE
      f(first, count, normed.data(), scratch.data());
    }
  });
}

}  // namespace

// LN(x) W^T + b for x (rows, C), LN by norm_weight, norm_bias and eps, W (out, C); C and out multiples of 16.
torch::Tensor norm_linear(torch::Tensor x, torch::Tensor norm_weight, torch::Tensor norm_bias, double eps,
                          torch::Tensor weight, torch::Tensor bias) {
  check_tokens(x);
  const int64_t channels = x.size(1), width = weight.size(0);
  check_layer(weight, bias, width, channels, "weight");
  auto out = torch::empty({x.size(0), width}, x.options());
  const std::vector<float> packed = panels(weight.data_ptr<float>(), width, channels);
  float* op = out.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  over_normed_blocks(x, norm_weight, norm_bias, eps, 0, [](int64_t, int64_t) {},
                     [&](int64_t first, int64_t count, const float* normed, float*) {
                       rows_times<false>(count, normed, channels, packed.data(), channels * kPanel, kPanel, width, bp,
                                         op + first * width, nullptr);
                     });
  return out;
}

// A Swin block's two residuals on its tokens x (rows, C) in place: x += attended Wp^T + bp (the attention's output
// projection), then x += W2 GELU(W1 LN(x) + b1) + b2 (its feed-forward), LN by norm_weight, norm_bias and eps;
// attended (rows, C), Wp (C, C), W1 (hidden, C), W2 (C, hidden), C and hidden multiples of 16. Returns x.
torch::Tensor residuals_(torch::Tensor x, torch::Tensor attended, torch::Tensor wp, torch::Tensor bp,
                         torch::Tensor norm_weight, torch::Tensor norm_bias, double eps, torch::Tensor w1,
                         torch::Tensor b1, torch::Tensor w2, torch::Tensor b2) {
  check_tokens(x);
  check_tokens(attended);
  TORCH_CHECK(attended.sizes() == x.sizes(), "attended must be (rows, C) as x");
  const int64_t channels = x.size(1), hidden = w1.size(0);
  check_layer(wp, bp, channels, channels, "wp");
  check_layer(w1, b1, hidden, channels, "w1");
  check_layer(w2, b2, channels, hidden, "w2");
  const std::vector<float> packed_p = panels(wp.data_ptr<float>(), channels, channels);
  const std::vector<float> packed1 = panels(w1.data_ptr<float>(), hidden, channels);
  const std::vector<float> packed2 = panels(w2.data_ptr<float>(), channels, hidden);
  float* xp = x.data_ptr<float>();
  const float* ap = attended.data_ptr<float>();
  const float *bpp = bp.data_ptr<float>(), *b1p = b1.data_ptr<float>(), *b2p = b2.data_ptr<float>();
  over_normed_blocks(
      x, norm_weight, norm_bias, eps, hidden,
      [&](int64_t first, int64_t count) {
        float* rows_x = xp + first * channels;
        rows_times<true>(count, ap + first * channels, channels, packed_p.data(), channels * kPanel, kPanel, channels,
                         bpp, rows_x, rows_x);
      },
      [&](int64_t first, int64_t count, const float* normed, float* inner) {
        rows_times<false>(count, normed, channels, packed1.data(), channels * kPanel, kPanel, hidden, b1p, inner,
                          nullptr);
        dcif::gelu_in_place(inner, count * hidden);
        float* rows_x = xp + first * channels;
        rows_times<true>(count, inner, hidden, packed2.data(), hidden * kPanel, kPanel, channels, b2p, rows_x, rows_x);
      });
  return x;
}
