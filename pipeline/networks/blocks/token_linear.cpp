// The Swin blocks' linear layers on (tokens, C) rows on the CPU, forward and backward: Y = X W^T + b, dX = dY W, dW =
// dY^T X, db = column sums of dY. At 16-96 channels a layer is a GEMM tens of thousands of rows tall and a few dozen
// wide, a shape MKL's sgemm runs at 20-45 GFLOP/s on a 2-core AVX2 machine whose large square sgemm reaches 65: its
// blocking is made for large K. Here a register tile of rows x 16 columns (6 rows of two AVX2 registers, or 8 rows of
// one AVX-512 register: lanes.h) runs the whole contraction with its 16-column panel of the small operand in L1 and
// writes each output once, bias included: 50-53 GFLOP/s into new tensors on that machine (55-68 into reused ones),
// forward 1.2-1.5x and backward 1.25-2x MKL's. On a Xeon with AVX-512 the one-register rows ran the layers 1.24x faster
// forward and 1.27x backward than two 8-float halves, and with two panels a tile (token_linear.h) 1.09-1.11x forward
// and 1.08-1.15x backward at 32 channels and more. One tile routine serves all three products through strides. The
// backward walks blocks of rows that stay in L2, forming a block's share of dW and db, each thread into its own copy
// of those, added at the end, and then its rows of dX: dY is read from memory once (8-13 % faster than a dX pass over
// all rows before the dW pass). Columns come 16 at a time, so the kernel takes layers whose widths are multiples of 16
// and cpu_kernels.py leaves others to ATen. Compiled at first use by cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <vector>

#include "parts.h"
#include "token_linear.h"

namespace {

using dcif::kPanel;
using dcif::kRows;
using dcif::rows_times;

constexpr int64_t kBlock = 256;  // rows of X and dY per L2 block of the backward

// rows_times over all rows, which go to threads in runs of whole tiles; add (rows, width) may be out itself.
template <bool ACCUMULATE>
void all_rows_times(const float* a, int64_t rows, int64_t depth, const float* b, int64_t b_panel, int64_t b_row,
                    int64_t width, const float* bias, float* out, const float* add) {
  at::parallel_for(0, (rows + kRows - 1) / kRows, 64, [&](int64_t first, int64_t last) {
    const int64_t m = first * kRows;
    rows_times<ACCUMULATE>(std::min(rows, last * kRows) - m, a + m * depth, depth, b, b_panel, b_row, width, bias,
                           out + m * width, add ? add + m * width : nullptr);
  });
}

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous() && t.scalar_type() == at::kFloat && t.device().is_cpu(), name,
              " must be contiguous float32 (rows, channels) on the CPU");
}

void check_layer(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  check_rows(x, "x");
  check_rows(weight, "weight");
  TORCH_CHECK(weight.size(1) == x.size(1), "weight must be (out_features, in_features) of x");
  TORCH_CHECK(weight.size(0) % kPanel == 0 && weight.size(1) % kPanel == 0,
              "token linear kernel takes in_features and out_features in multiples of 16");
  TORCH_CHECK(bias.numel() == 0 || (bias.is_contiguous() && bias.numel() == weight.size(0) &&
                                    bias.scalar_type() == at::kFloat), "bias must be empty or (out_features,) float32");
}

}  // namespace

// out = x W^T + bias [+ add] for x (rows, in) and W (out, in), written into out (rows, out); add is empty or
// (rows, out), out itself to accumulate in place or a residual the layer's output is added to.
// W^T is packed into 16-column panels first (out x in floats, a few kB).
torch::Tensor token_linear(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, torch::Tensor out,
                           torch::Tensor add) {
  check_layer(x, weight, bias);
  const int64_t rows = x.size(0), depth = x.size(1), width = weight.size(0);
  check_rows(out, "out");
  TORCH_CHECK(out.size(0) == rows && out.size(1) == width, "out must be (rows, out_features)");
  const std::vector<float> packed = dcif::panels(weight.data_ptr<float>(), width, depth);
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  if (add.numel()) {
    check_rows(add, "add");
    TORCH_CHECK(add.sizes() == out.sizes(), "add must be (rows, out_features)");
    all_rows_times<true>(x.data_ptr<float>(), rows, depth, packed.data(), depth * kPanel, kPanel, width, bp,
                     out.data_ptr<float>(), add.data_ptr<float>());
  } else {
    all_rows_times<false>(x.data_ptr<float>(), rows, depth, packed.data(), depth * kPanel, kPanel, width, bp,
                      out.data_ptr<float>(), nullptr);
  }
  return out;
}

// dX = dY W (rows, in), or an empty tensor without need_input_grad; dW = dY^T X (out, in); db = column sums of dY.
std::vector<torch::Tensor> token_linear_backward(torch::Tensor x, torch::Tensor weight, torch::Tensor grad,
                                                 bool need_input_grad) {
  check_layer(x, weight, torch::empty({0}, x.options()));
  check_rows(grad, "grad");
  const int64_t rows = x.size(0), depth = x.size(1), width = weight.size(0);
  TORCH_CHECK(grad.size(0) == rows && grad.size(1) == width, "grad must be (rows, out_features)");
  const float* xp = x.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  const torch::Tensor dx = torch::empty({need_input_grad ? rows : 0, depth}, x.options());
  float* dxp = need_input_grad ? dx.data_ptr<float>() : nullptr;
  const float* wp = weight.data_ptr<float>();
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  const dcif::Parts parts(blocks);
  auto partial = torch::zeros({parts.count, width * depth + width}, x.options());  // each part's dW, then its db
  float* pp = partial.data_ptr<float>();
  parts.run(blocks, [&](int64_t part, int64_t first, int64_t last) {
    float* dw = pp + part * (width * depth + width);
    for (int64_t m = first * kBlock; m < std::min(rows, last * kBlock); m += kBlock) {
      dcif::rows_backward(std::min(kBlock, rows - m), xp + m * depth, depth, gp + m * width, width, wp, dw,
                          dw + width * depth, dxp ? dxp + m * depth : nullptr);
    }
  });
  auto sums = partial.sum(0);
  return {dx, sums.narrow(0, 0, width * depth).view({width, depth}), sums.narrow(0, width * depth, width)};
}
