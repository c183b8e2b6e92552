// The Swin blocks' linear layers on (tokens, C) rows on the CPU, forward and backward: Y = X W^T + b, dX = dY W,
// dW = dY^T X, db = column sums of dY. At 16-96 channels a layer is a GEMM tens of thousands of rows tall and a few
// dozen wide, a shape MKL's sgemm runs at 20-45 GFLOP/s on a 2-core AVX2 machine whose large square sgemm reaches
// 65: its blocking is made for large K. Here a register tile of 6 rows x 16 columns (12 AVX2 registers) runs the
// whole contraction with its 16-column panel of the small operand in L1 and writes each output once, bias included:
// 50-53 GFLOP/s into new tensors on that machine (55-68 into reused ones), forward 1.2-1.5x and backward 1.25-2x
// MKL's. One tile routine serves all three products through strides. The backward walks blocks of rows that stay in
// L2, forming a block's rows of dX and then its share of dW and db, each thread into its own copy of those, added at
// the end: dY is read from memory once (8-13 % faster than a dX pass over all rows before the dW pass). Columns come
// 16 at a time, so the kernel takes layers whose widths are multiples of 16 and cpu_kernels.py leaves others to ATen.
// Compiled at first use by cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <vector>

namespace {

constexpr int kRows = 6;     // rows of a register tile
constexpr int kPanel = 16;   // columns of a register tile: two 8-float halves
constexpr int64_t kBlock = 256;  // rows of X and dY per L2 block of the backward
// Eight floats, an AVX2 register. A 16-float vector type would be one AVX-512 register, but on AVX2 GCC lowers it
// through the stack (4x slower): two halves compile to registers everywhere.
typedef float Half __attribute__((vector_size(32)));

inline Half load_half(const float* from) {
  Half x;
  std::memcpy(&x, from, sizeof(x));
  return x;
}

inline void store_half(float* to, const Half& x) { std::memcpy(to, &x, sizeof(x)); }

// C[r, 0:16] = init[r] + sum_k A(r, k) B(k, 0:16) for r < R, where A(r, k) = a[r * a_row + k * a_k] and
// B(k, :) = b + k * b_row. init is the bias (or zero), plus the rows of add (a residual, or C itself) when
// ACCUMULATE. The accumulators are named values, not an array: GCC kept an array of vectors on the stack and stored
// it back every iteration (2x slower).
template <int R, bool ACCUMULATE>
inline void tile(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_row, int64_t depth, float* c,
                 int64_t c_row, const float* bias, const float* add) {
  const Half lo = bias ? load_half(bias) : Half{}, hi = bias ? load_half(bias + 8) : Half{};
  Half c0 = lo, c1 = lo, c2 = lo, c3 = lo, c4 = lo, c5 = lo;
  Half d0 = hi, d1 = hi, d2 = hi, d3 = hi, d4 = hi, d5 = hi;
  if (ACCUMULATE) {
    c0 += load_half(add), d0 += load_half(add + 8);
    if (R > 1) c1 += load_half(add + c_row), d1 += load_half(add + c_row + 8);
    if (R > 2) c2 += load_half(add + 2 * c_row), d2 += load_half(add + 2 * c_row + 8);
    if (R > 3) c3 += load_half(add + 3 * c_row), d3 += load_half(add + 3 * c_row + 8);
    if (R > 4) c4 += load_half(add + 4 * c_row), d4 += load_half(add + 4 * c_row + 8);
    if (R > 5) c5 += load_half(add + 5 * c_row), d5 += load_half(add + 5 * c_row + 8);
  }
  for (int64_t k = 0; k < depth; ++k) {
    const Half left = load_half(b + k * b_row), right = load_half(b + k * b_row + 8);
    const float* ak = a + k * a_k;
    c0 += ak[0] * left, d0 += ak[0] * right;
    if (R > 1) c1 += ak[a_row] * left, d1 += ak[a_row] * right;
    if (R > 2) c2 += ak[2 * a_row] * left, d2 += ak[2 * a_row] * right;
    if (R > 3) c3 += ak[3 * a_row] * left, d3 += ak[3 * a_row] * right;
    if (R > 4) c4 += ak[4 * a_row] * left, d4 += ak[4 * a_row] * right;
    if (R > 5) c5 += ak[5 * a_row] * left, d5 += ak[5 * a_row] * right;
  }
  store_half(c, c0), store_half(c + 8, d0);
  if (R > 1) store_half(c + c_row, c1), store_half(c + c_row + 8, d1);
  if (R > 2) store_half(c + 2 * c_row, c2), store_half(c + 2 * c_row + 8, d2);
  if (R > 3) store_half(c + 3 * c_row, c3), store_half(c + 3 * c_row + 8, d3);
  if (R > 4) store_half(c + 4 * c_row, c4), store_half(c + 4 * c_row + 8, d4);
  if (R > 5) store_half(c + 5 * c_row, c5), store_half(c + 5 * c_row + 8, d5);
}

// tile<R> for the R = rows (1-6) left at an edge.
template <bool ACCUMULATE>
inline void edge_tile(int rows, const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_row,
                      int64_t depth, float* c, int64_t c_row, const float* bias, const float* add) {
  switch (rows) {
    case 6: tile<6, ACCUMULATE>(a, a_row, a_k, b, b_row, depth, c, c_row, bias, add); break;
    case 5: tile<5, ACCUMULATE>(a, a_row, a_k, b, b_row, depth, c, c_row, bias, add); break;
    case 4: tile<4, ACCUMULATE>(a, a_row, a_k, b, b_row, depth, c, c_row, bias, add); break;
    case 3: tile<3, ACCUMULATE>(a, a_row, a_k, b, b_row, depth, c, c_row, bias, add); break;
    case 2: tile<2, ACCUMULATE>(a, a_row, a_k, b, b_row, depth, c, c_row, bias, add); break;
    default: tile<1, ACCUMULATE>(a, a_row, a_k, b, b_row, depth, c, c_row, bias, add);
  }
}

// out[r, :] = a[r, :] B + bias [+ add[r, :]] for the rows r < count (at most kRows) of a (depth floats a row), out
// and add (width floats a row), B given as panels: panel p's row k at b + p * b_panel + k * b_row.
template <bool ACCUMULATE>
inline void row_tile(int count, const float* a, int64_t depth, const float* b, int64_t b_panel, int64_t b_row,
                     int64_t width, const float* bias, float* out, const float* add) {
  for (int64_t p = 0; p < width / kPanel; ++p) {
    edge_tile<ACCUMULATE>(count, a, depth, 1, b + p * b_panel, b_row, depth, out + p * kPanel, width,
                          bias ? bias + p * kPanel : nullptr, add ? add + p * kPanel : nullptr);
  }
}

// row_tile over all rows; add (rows, width) may be out itself. Rows go to threads in blocks of whole tiles.
template <bool ACCUMULATE>
void rows_times(const float* a, int64_t rows, int64_t depth, const float* b, int64_t b_panel, int64_t b_row,
                int64_t width, const float* bias, float* out, const float* add) {
  const int64_t tiles = (rows + kRows - 1) / kRows;
  at::parallel_for(0, tiles, 64, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t m = t * kRows;
      row_tile<ACCUMULATE>(static_cast<int>(std::min<int64_t>(kRows, rows - m)), a + m * depth, depth, b, b_panel,
                           b_row, width, bias, out + m * width, add ? add + m * width : nullptr);
    }
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
  auto packed = weight.view({width / kPanel, kPanel, depth}).transpose(1, 2).contiguous();  // panel, k, 16
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  if (add.numel()) {
    check_rows(add, "add");
    TORCH_CHECK(add.sizes() == out.sizes(), "add must be (rows, out_features)");
    rows_times<true>(x.data_ptr<float>(), rows, depth, packed.data_ptr<float>(), depth * kPanel, kPanel, width, bp,
                     out.data_ptr<float>(), add.data_ptr<float>());
  } else {
    rows_times<false>(x.data_ptr<float>(), rows, depth, packed.data_ptr<float>(), depth * kPanel, kPanel, width, bp,
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
  // Per block of rows: dX[m, :] = sum_n dY[m, n] W[n, :] (W's rows are panels' rows as they are, 16 of its columns per
  // panel), then dW[n, :] += sum_m dY[m, n] X[m, :] (a tile's A(r, k) is dY[k, n + r], its B rows X's rows).
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks));
  const int64_t per_part = (blocks + parts - 1) / parts;
  auto partial = torch::zeros({parts, width * depth + width}, x.options());  // each part's dW, then its db
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    for (int64_t part = first; part < last; ++part) {
      float* dw = pp + part * (width * depth + width);
      float* db = dw + width * depth;
      for (int64_t block = part * per_part; block < std::min(blocks, (part + 1) * per_part); ++block) {
        const int64_t m = block * kBlock, count = std::min(kBlock, rows - m);
        for (int64_t t = m; dxp && t < m + count; t += kRows) {
          row_tile<false>(static_cast<int>(std::min<int64_t>(kRows, m + count - t)), gp + t * width, width, wp, kPanel,
                          depth, depth, nullptr, dxp + t * depth, nullptr);
        }
        for (int64_t n = 0; n < width; n += kRows) {
          const int tile_rows = static_cast<int>(std::min<int64_t>(kRows, width - n));
          for (int64_t p = 0; p < depth / kPanel; ++p) {
            float* dw_tile = dw + n * depth + p * kPanel;
            edge_tile<true>(tile_rows, gp + m * width + n, 1, width, xp + m * depth + p * kPanel, depth, count,
                            dw_tile, depth, nullptr, dw_tile);
          }
        }
        for (int64_t k = 0; k < count; ++k) {  // db: the block's rows of dY, still in L2
          const float* row = gp + (m + k) * width;
          for (int64_t n = 0; n < width; n += 8) store_half(db + n, load_half(db + n) + load_half(row + n));
        }
      }
    }
  });
  auto sums = partial.sum(0);
  return {dx, sums.narrow(0, 0, width * depth).view({width, depth}), sums.narrow(0, width * depth, width)};
}
