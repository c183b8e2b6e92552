// The Swin blocks' pre-norm layers fused on the CPU: the attention's projection LN(x) W^T + b, and the residuals
// x += proj(attended), then x += W2 GELU(W1 LN(x) + b1) + b2 on (rows, C) tokens (in place in inference). As separate
// kernels (LayerNorm, the layers, GELU) each step streams a chunk's tokens or hidden layer (2 MB at 16384 tokens x 32)
// through L2 and beyond; here a block of rows goes through all the steps with its normalised rows and hidden layer in
// L1 (48 rows x 16-64 floats), and x is read (and in the residuals written) once. Under autograd both run the same
// way into new tensors and keep their inputs alone: their backwards recompute a block's sum, LayerNorm, hidden layer
// and GELU in L1 and go back through them there, each thread summing the weight gradients into its own copy (a
// block's training step at 16-32 channels 1.11-1.28x as fast as the separate kernels', which wrote and then read
// back four activations, and a training iteration 1.00-1.05x more with the output projection inside). In inference
// both also take a chunk of windows as rows of a map kept in raster order, read and written where they are (the
// LayerNorm's rows gathered, the residual's tiles by index: dcif::Indexed), so that no gather of the whole map runs
// between blocks (a 512 x 512 forward 1.07-1.08x). The steps are those kernels' own routines (layer_norm.h,
// token_linear.h, gelu.h), so the numbers are theirs. Compiled at first use by cpu_kernels.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

#include "gelu.h"
#include "layer_norm.h"
#include "parts.h"
#include "token_linear.h"

namespace {

using dcif::kLanes;
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

void check_weight(const torch::Tensor& weight, int64_t out, int64_t in, const char* name) {
  TORCH_CHECK(out % kPanel == 0 && in % kPanel == 0, "the fused layers take widths in multiples of 16, not ", name,
              " (", out, ", ", in, ")");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == out && weight.size(1) == in && weight.is_contiguous() &&
                  weight.scalar_type() == at::kFloat, name, " must be contiguous float32 (", out, ", ", in, ")");
}

void check_layer(const torch::Tensor& weight, const torch::Tensor& bias, int64_t out, int64_t in, const char* name) {
  check_weight(weight, out, in, name);
  check_vector(bias, out, name);
}

// count rows of x (channels floats each) normalised into normed, their means and rstds into stats (kBlockRows each).
void normalise(const float* x, int64_t count, int64_t channels, const float* nw, const float* nb, float eps,
               float* normed, float* stats) {
#define DCIF_NORMALISE(C) dcif::forward_rows<C>(x, nw, nb, normed, stats, stats + kBlockRows, channels, eps, 0, count)
  DCIF_BY_CHANNELS(channels, DCIF_NORMALISE)
#undef DCIF_NORMALISE
}

// For each block of count (at most kBlockRows) rows of a (rows, C) from row first: f(first, count, rows_u, normed,
// scratch), rows_u the block's rows that source(first, count, own) gives (a's own, or rows it computed into own,
// kBlockRows * C floats of the thread's own), normed their LayerNorm and scratch kBlockRows * scratch_row floats of the
// thread's own. Blocks go to threads.
template <typename Source, typename F>
void over_normed_blocks(int64_t rows, int64_t channels, const torch::Tensor& norm_weight,
                        const torch::Tensor& norm_bias, double eps, int64_t scratch_row, Source&& source, F&& f) {
  check_vector(norm_weight, channels, "norm_weight");
  check_vector(norm_bias, channels, "norm_bias");
  const float *nw = norm_weight.data_ptr<float>(), *nb = norm_bias.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, (rows + kBlockRows - 1) / kBlockRows, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> own(kBlockRows * channels), normed(kBlockRows * channels), stats(2 * kBlockRows);
    std::vector<float> scratch(kBlockRows * scratch_row);
    for (int64_t first = begin * kBlockRows; first < std::min(rows, end * kBlockRows); first += kBlockRows) {
      const int64_t count = std::min(kBlockRows, rows - first);
      const float* rows_u = source(first, count, own.data());
      normalise(rows_u, count, channels, nw, nb, e, normed.data(), stats.data());
      f(first, count, rows_u, normed.data(), scratch.data());
    }
  });
}

// Where a kernel's output rows go, and so where their gradient rows come from: row r at dest[r] (a permutation of
// the rows: the next block's window order, or the map's raster order), or at r where dest is empty. A block that
// writes its output in the order the next step reads saves the gather between them (a CPU training step 1.01-1.03x).
struct RowDest {
  const int64_t* dest;
  int64_t channels, rows;  // rows: the index's entries
  int64_t bound = rows;    // rows of the tensor its entries name

  // Where a block's rows from row first are written first: out's own rows, or own where dest permutes them.
  float* target(float* out, int64_t first, float* own) const { return dest ? own : out + first * channels; }

  // count rows written to target(out, first, own) to their places in out.
  void store(const float* from, int64_t first, int64_t count, float* out) const {
    if (!dest) return;
    for (int64_t i = 0; i < count; ++i) copy_row(from + i * channels, out + place(first + i) * channels);
  }

  // Rows first ... first + count of a tensor written by store, gathered into own where dest permutes them.
  const float* load(const float* from, int64_t first, int64_t count, float* own) const {
    if (!dest) return from + first * channels;
    for (int64_t i = 0; i < count; ++i) copy_row(from + place(first + i) * channels, own + i * channels);
    return own;
  }

  // Asks the cache for the places of rows first ... first + count (none past the last row) ahead of a load or store:
  // the rows are scattered, so no prefetcher foresees them, and a block's compute hides their latency.
  void prefetch(const float* at, int64_t first, int64_t count, bool write) const {
    if (!dest) return;
    for (int64_t i = first; i < std::min(rows, first + count); ++i) {
      for (int64_t c = 0; c < channels; c += 16) {  // a 64-byte line
        if (write) {
          __builtin_prefetch(at + dest[i] * channels + c, 1);
        } else {
          __builtin_prefetch(at + dest[i] * channels + c, 0);
        }
      }
    }
  }

  // dest[row], checked as it is used: a row of the output (prefetch may touch any address, a load or store not).
  int64_t place(int64_t row) const {
    const int64_t at = dest[row];
    TORCH_CHECK(static_cast<uint64_t>(at) < static_cast<uint64_t>(bound), "dest indices must be rows of the output");
    return at;
  }

  // A row a register at a time (channels are multiples of 16): std::copy's memmove per 64-byte row cost more than
  // the gather it replaced.
  void copy_row(const float* from, float* to) const {
    for (int64_t c = 0; c < channels; c += kLanes) dcif::store_lanes(to + c, dcif::load_lanes(from + c));
  }
};

// dest checked: empty, or one int64 index per row of rows, each naming one of bound rows (their values as they are
// used: RowDest::place).
RowDest row_dest(const torch::Tensor& dest, int64_t rows, int64_t channels, int64_t bound) {
  if (dest.numel() == 0) return {nullptr, channels, rows, bound};
  TORCH_CHECK(dest.dim() == 1 && dest.numel() == rows && dest.scalar_type() == at::kLong && dest.is_contiguous(),
              "dest must be contiguous int64 of one index per row");
  return {dest.data_ptr<int64_t>(), channels, rows, bound};
}

RowDest row_dest(const torch::Tensor& dest, int64_t rows, int64_t channels) {
  return row_dest(dest, rows, channels, rows);
}

// The backward of y = layer(LN(u)) [+ u] over blocks of kBlockRows rows, u = x or a function of x, the LayerNorm
// recomputed per block (as its kernel's forward has it) instead of saved: source(first, count, own) gives the block's
// rows of u (x's own, or its rows computed into own); f(sums, count, rows_g, normed, dnormed, scratch) adds the
// layer's weight gradients into sums (layer_floats, the thread's own) and writes dL/dnormed, rows_g being the block's
// rows of grad (read where grad_dest put them); then the LayerNorm's backward gives the rows of du, plus those of grad
// where u was added (residual) or else those of carry (rows, C; a gradient of x from elsewhere) if given, into dx, and
// after(sums, first, count, du) goes back from u to x there. Returns dx, dnorm_weight, dnorm_bias and the sum of every
// part's sums.
template <typename Source, typename F, typename After>
std::vector<torch::Tensor> normed_backward(const torch::Tensor& x, const torch::Tensor& grad, const RowDest& grad_dest,
                                           bool residual, const float* carry, const torch::Tensor& norm_weight,
                                           const torch::Tensor& norm_bias, double eps, int64_t layer_floats,
                                           int64_t scratch_row, Source&& source, F&& f, After&& after) {
  const int64_t rows = x.size(0), channels = x.size(1), blocks = (rows + kBlockRows - 1) / kBlockRows;
  check_vector(norm_weight, channels, "norm_weight");
  check_vector(norm_bias, channels, "norm_bias");
  const float* gp = grad.data_ptr<float>();
  const float *nw = norm_weight.data_ptr<float>(), *nb = norm_bias.data_ptr<float>();
  const float e = static_cast<float>(eps);
  const dcif::Parts parts(blocks);
  auto sums = torch::zeros({parts.count, layer_floats}, x.options());
  auto norm_sums = torch::zeros({parts.count, 2, channels}, x.options().dtype(at::kDouble));
  auto dx = torch::empty_like(x);
  float *sp = sums.data_ptr<float>(), *dxp = dx.data_ptr<float>();
  double* nsp = norm_sums.data_ptr<double>();
  parts.run(blocks, [&](int64_t part, int64_t begin, int64_t end) {
    const dcif::FlushDenormals flush;  // GELU's slope underflows to 2^-126 for |x| > 13
    std::vector<float> own(kBlockRows * channels), normed(kBlockRows * channels), stats(2 * kBlockRows);
    std::vector<float> dnormed(kBlockRows * channels), scratch(kBlockRows * scratch_row);
    std::vector<float> grad_own(kBlockRows * grad_dest.channels);
    float* part_sums = sp + part * layer_floats;
    double* dnw = nsp + part * 2 * channels;
    for (int64_t first = begin * kBlockRows; first < std::min(rows, end * kBlockRows); first += kBlockRows) {
      const int64_t count = std::min(kBlockRows, rows - first);
      const float* rows_u = source(first, count, own.data());
      normalise(rows_u, count, channels, nw, nb, e, normed.data(), stats.data());
      const float* rows_g = grad_dest.load(gp, first, count, grad_own.data());
      grad_dest.prefetch(gp, first + kBlockRows, kBlockRows, false);
      f(part_sums, count, rows_g, normed.data(), dnormed.data(), scratch.data());
      float* rows_dx = dxp + first * channels;
#define DCIF_NORM_BACKWARD(C)                                                                                      \
  dcif::backward_rows<C>(rows_u, nw, stats.data(), stats.data() + kBlockRows, dnormed.data(), rows_dx, dnw, \
                         dnw + channels, channels, 0, count)
      DCIF_BY_CHANNELS(channels, DCIF_NORM_BACKWARD)
#undef DCIF_NORM_BACKWARD
      const float* rows_carry = residual ? rows_g : carry ? carry + first * channels : nullptr;
      if (rows_carry) {
        for (int64_t i = 0; i < count * channels; i += kLanes) {
          dcif::store_lanes(rows_dx + i, dcif::load_lanes(rows_dx + i) + dcif::load_lanes(rows_carry + i));
        }
      }
      after(part_sums, first, count, rows_dx);
    }
  });
  const auto norm_totals = norm_sums.sum(0).to(at::kFloat);
  return {dx, norm_totals[0], norm_totals[1], sums.sum(0)};
}

// The layers' packed weights and biases, as the forward's tiles read them.
struct FeedForward {
  int64_t channels, hidden;
  std::vector<float> packed1, packed2;
  const float *b1, *b2;

  // pre = W1 normed + b1 of count rows: the hidden layer before its GELU.
  void first_layer(int64_t count, const float* normed, float* pre) const {
    rows_times<false>(count, normed, channels, packed1.data(), channels * kPanel, kPanel, hidden, b1, pre, nullptr);
  }
};

FeedForward feed_forward_layers(int64_t channels, const torch::Tensor& w1, const torch::Tensor& b1,
                                const torch::Tensor& w2, const torch::Tensor& b2) {
  const int64_t hidden = w1.size(0);
  check_layer(w1, b1, hidden, channels, "w1");
  check_layer(w2, b2, channels, hidden, "w2");
  return {channels,
          hidden,
          panels(w1.data_ptr<float>(), hidden, channels),
          panels(w2.data_ptr<float>(), channels, hidden),
          b1.data_ptr<float>(),
          b2.data_ptr<float>()};
}

// out = add + W2 GELU(W1 normed + b1) + b2 for count rows (out may be add; its rows where out_rows says), the hidden
// layer in inner.
template <typename OutRows>
void feed_forward_rows(const FeedForward& ff, int64_t count, const float* normed, float* inner, const float* add,
                       float* out, OutRows out_rows) {
  ff.first_layer(count, normed, inner);
  dcif::gelu_in_place(inner, count * ff.hidden);
  rows_times<true>(count, inner, ff.hidden, ff.packed2.data(), ff.hidden * kPanel, kPanel, ff.channels, ff.b2, out,
                   add, out_rows, dcif::Strided{ff.channels});
}

void feed_forward_rows(const FeedForward& ff, int64_t count, const float* normed, float* inner, const float* add,
                       float* out) {
  feed_forward_rows(ff, count, normed, inner, add, out, dcif::Strided{ff.channels});
}

}  // namespace

// LN(x) W^T + b for x (rows, C), LN by norm_weight, norm_bias and eps, W (out, C); C and out multiples of 16. Where
// rows (int64) is not empty, output row r is that of x's row rows[r] (a chunk of a map's tokens, gathered as read).
torch::Tensor norm_linear(torch::Tensor x, torch::Tensor norm_weight, torch::Tensor norm_bias, double eps,
                          torch::Tensor weight, torch::Tensor bias, torch::Tensor rows) {
  check_tokens(x);
  const int64_t channels = x.size(1), width = weight.size(0), count = rows.numel() ? rows.numel() : x.size(0);
  check_layer(weight, bias, width, channels, "weight");
  const RowDest from = row_dest(rows, count, channels, x.size(0));
  auto out = torch::empty({count, width}, x.options());
  const std::vector<float> packed = panels(weight.data_ptr<float>(), width, channels);
  float* op = out.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  over_normed_blocks(count, channels, norm_weight, norm_bias, eps, 0,
                     [&](int64_t first, int64_t n, float* own) {
                       from.prefetch(xp, first + kBlockRows, kBlockRows, false);
                       return from.load(xp, first, n, own);
                     },
                     [&](int64_t first, int64_t count, const float*, const float* normed, float*) {
                       rows_times<false>(count, normed, channels, packed.data(), channels * kPanel, kPanel, width, bp,
                                         op + first * width, nullptr);
                     });
  return out;
}

// The operands of a block's two residuals: its tokens x and the attention's output (rows, C), with the output
// projection's and the feed-forward's weights packed for the tiles.
struct Residuals {
  int64_t channels;
  const float *x, *attended, *wp, *bp;
  std::vector<float> packed_p;
  FeedForward ff;

  // u = x + attended Wp^T + bp of count rows from row first, into u: x's rows for them at x + x_rows.offset(r).
  template <typename XRows>
  void sum(int64_t first, int64_t count, const float* x_at, XRows x_rows, float* u) const {
    rows_times<true>(count, attended + first * channels, channels, packed_p.data(), channels * kPanel, kPanel,
                     channels, bp, u, x_at, dcif::Strided{channels}, x_rows);
  }

  void sum(int64_t first, int64_t count, float* u) const {
    sum(first, count, x + first * channels, dcif::Strided{channels}, u);
  }
};

// The operands checked: x, attended and other (out or grad, named in names) contiguous float32 (rows, C).
Residuals residual_operands(const torch::Tensor& x, const torch::Tensor& attended, const torch::Tensor& other,
                            const char* names, const torch::Tensor& wp, const torch::Tensor& bp,
                            const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                            const torch::Tensor& b2) {
  check_tokens(x);
  check_tokens(attended);
  check_tokens(other);
  TORCH_CHECK(attended.sizes() == x.sizes() && other.sizes() == x.sizes(), names, " must be (rows, C) as x");
  const int64_t channels = x.size(1);
  check_layer(wp, bp, channels, channels, "wp");
  return {channels,
          x.data_ptr<float>(),
          attended.data_ptr<float>(),
          wp.data_ptr<float>(),
          bp.data_ptr<float>(),
          panels(wp.data_ptr<float>(), channels, channels),
          feed_forward_layers(channels, w1, b1, w2, b2)};
}

// A Swin block's two residuals on its tokens x (rows, C): u = x + attended Wp^T + bp (the attention's output
// projection), then out = u + W2 GELU(W1 LN(u) + b1) + b2 (its feed-forward), LN by norm_weight, norm_bias and eps;
// attended (rows, C), Wp (C, C), W1 (hidden, C), W2 (C, hidden), C and hidden multiples of 16. Row r of the result
// goes to out's row dest[r] (see RowDest), or row r where dest is empty. out (rows, C) may be x itself (inference, in
// place, dest empty). With in_map, x and out (which may be x) are maps of the same rows, of which attended's are
// those dest names (a chunk of windows read from x's own order and written to out's, without autograd). Under
// autograd out is a new tensor and residuals_backward recomputes u and the rest from x and attended. Returns out.
torch::Tensor residuals(torch::Tensor x, torch::Tensor attended, torch::Tensor wp, torch::Tensor bp,
                        torch::Tensor norm_weight, torch::Tensor norm_bias, double eps, torch::Tensor w1,
                        torch::Tensor b1, torch::Tensor w2, torch::Tensor b2, torch::Tensor out, torch::Tensor dest,
                        bool in_map) {
  const auto& like_x = in_map ? attended : x;  // the operands' check takes x's rows as attended's in a map
  Residuals r = residual_operands(like_x, attended, in_map ? attended : out, "attended and out", wp, bp, w1, b1, w2,
                                  b2);
  check_tokens(x);
  TORCH_CHECK(x.size(1) == r.channels, "x must have attended's channels");
  TORCH_CHECK(!in_map || (dest.numel() > 0 && out.sizes() == x.sizes() && out.is_contiguous() &&
                          out.scalar_type() == at::kFloat),
              "rows of a map need dest, and out a map as x");
  r.x = x.data_ptr<float>();
  const int64_t rows = attended.size(0);
  const RowDest to = row_dest(dest, rows, r.channels, out.size(0));
  const float* xp = r.x;
  float* op = out.data_ptr<float>();
  if (in_map) {  // the tiles read and write the map's rows where they are, by index: checked first
    for (int64_t row = 0; row < rows; ++row) to.place(row);
  }
  over_normed_blocks(
      rows, r.channels, norm_weight, norm_bias, eps, r.ff.hidden + r.channels,
      [&](int64_t first, int64_t count, float* own) {
        if (in_map) {
          to.prefetch(xp, first + kBlockRows, kBlockRows, false);
          r.sum(first, count, xp, dcif::Indexed{r.channels, to.dest + first}, own);
        } else {
          r.sum(first, count, own);
        }
        return static_cast<const float*>(own);
      },
      [&](int64_t first, int64_t count, const float* rows_u, const float* normed, float* scratch) {
        to.prefetch(op, first, count, true);
        if (in_map) return feed_forward_rows(r.ff, count, normed, scratch, rows_u, op,
                                             dcif::Indexed{r.channels, to.dest + first});
        float* rows_out = to.target(op, first, scratch + kBlockRows * r.ff.hidden);
        feed_forward_rows(r.ff, count, normed, scratch, rows_u, rows_out);
        to.store(rows_out, first, count, op);
      });
  return out;
}

// The gradients of residuals for grad = dL/dout (rows, C): dx, dattended, dwp, dbp, dnorm_weight, dnorm_bias, dw1,
// db1, dw2, db2. Per block of rows: u, its LayerNorm, the hidden layer and its GELU recomputed in L1, then dW2, db2
// and dL/dGELU, dL/dhidden, dW1, db1 and dL/dLN, the LayerNorm's backward and the residual's share (du, which is dx),
// and the output projection's dWp, dbp and dattended. grad's rows are where residuals put them by dest.
std::vector<torch::Tensor> residuals_backward(torch::Tensor x, torch::Tensor attended, torch::Tensor grad,
                                              torch::Tensor wp, torch::Tensor bp, torch::Tensor norm_weight,
                                              torch::Tensor norm_bias, double eps, torch::Tensor w1, torch::Tensor b1,
                                              torch::Tensor w2, torch::Tensor b2, torch::Tensor dest) {
  const Residuals r = residual_operands(x, attended, grad, "attended and grad", wp, bp, w1, b1, w2, b2);
  const int64_t channels = r.channels, hidden = r.ff.hidden, layer = hidden * channels, square = channels * channels;
  const float *w1p = w1.data_ptr<float>(), *w2p = w2.data_ptr<float>();
  auto dattended = torch::empty_like(attended);
  float* dap = dattended.data_ptr<float>();
  const int64_t proj_at = 2 * layer + hidden + channels;  // each part's sums: dW1, db1, dW2, db2, then dWp, dbp
  auto grads = normed_backward(
      x, grad, row_dest(dest, x.size(0), channels), true, nullptr, norm_weight, norm_bias, eps,
      proj_at + square + channels, 2 * hidden,
      [&](int64_t first, int64_t count, float* own) {
        r.sum(first, count, own);
        return static_cast<const float*>(own);
      },
      [&](float* sums, int64_t count, const float* rows_g, const float* normed, float* dnormed, float* scratch) {
        float *pre = scratch, *act = scratch + kBlockRows * hidden;  // W1 LN(u) + b1, then its GELU
        r.ff.first_layer(count, normed, pre);
        std::copy(pre, pre + count * hidden, act);
        dcif::gelu_in_place(act, count * hidden);
        float *dw1 = sums, *db1 = dw1 + layer, *dw2 = db1 + hidden, *db2 = dw2 + layer;
        dcif::rows_backward(count, act, hidden, rows_g, channels, w2p, dw2, db2, act);
        dcif::gelu_slope_in_place(pre, act, count * hidden);
        dcif::rows_backward(count, normed, channels, act, hidden, w1p, dw1, db1, dnormed);
      },
      [&](float* sums, int64_t first, int64_t count, const float* du) {
        dcif::rows_backward(count, r.attended + first * channels, channels, du, channels, r.wp, sums + proj_at,
                            sums + proj_at + square, dap + first * channels);
      });
  const auto& sums = grads[3];
  return {grads[0],
          dattended,
          sums.narrow(0, proj_at, square).view({channels, channels}),
          sums.narrow(0, proj_at + square, channels),
          grads[1],
          grads[2],
          sums.narrow(0, 0, layer).view({hidden, channels}),
          sums.narrow(0, layer, hidden),
          sums.narrow(0, layer + hidden, layer).view({channels, hidden}),
          sums.narrow(0, 2 * layer + hidden, channels)};
}

// The gradients of norm_linear for grad = dL/dout (rows, out): dx, dnorm_weight, dnorm_bias, dweight, dbias, with
// LN(x) recomputed per block of rows. carry (rows, C), if not empty, is a gradient of x from elsewhere (the block's
// residual), added into dx as it is written instead of by a pass of its own.
std::vector<torch::Tensor> norm_linear_backward(torch::Tensor x, torch::Tensor grad, torch::Tensor norm_weight,
                                                torch::Tensor norm_bias, double eps, torch::Tensor weight,
                                                torch::Tensor carry) {
  check_tokens(x);
  check_tokens(grad);
  const int64_t channels = x.size(1), width = weight.size(0);
  check_weight(weight, width, channels, "weight");
  TORCH_CHECK(grad.size(0) == x.size(0) && grad.size(1) == width, "grad must be (rows, out) for x's rows");
  const bool carried = carry.numel() > 0;
  if (carried) {
    check_tokens(carry);
    TORCH_CHECK(carry.sizes() == x.sizes(), "carry must be (rows, C) as x");
  }
  const float *wp = weight.data_ptr<float>(), *xp = x.data_ptr<float>();
  auto grads = normed_backward(
      x, grad, RowDest{nullptr, width, x.size(0)}, false, carried ? carry.data_ptr<float>() : nullptr, norm_weight,
      norm_bias, eps, width * channels + width, 0,
      [&](int64_t first, int64_t, float*) { return xp + first * channels; },
      [&](float* sums, int64_t count, const float* rows_g, const float* normed, float* dnormed, float*) {
        dcif::rows_backward(count, normed, channels, rows_g, width, wp, sums, sums + width * channels, dnormed);
      },
      [](float*, int64_t, int64_t, const float*) {});
  const auto& sums = grads[3];
  return {grads[0], grads[1], grads[2], sums.narrow(0, 0, width * channels).view({width, channels}),
          sums.narrow(0, width * channels, width)};
}
