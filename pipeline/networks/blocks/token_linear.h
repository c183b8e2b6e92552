// The register tiles of the token linear kernel (token_linear.cpp), shared with the fused pre-norm layers
// (pre_norm.cpp): C[r, 0:16 P] of a few rows over the whole contraction, with B's P 16-column panels in L1.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "lanes.h"

namespace dcif {

constexpr int kPanel = 16;                // columns of a register tile
constexpr int kVecs = kPanel / kLanes;    // registers per tile row: 2 with AVX2, 1 with AVX-512
// Rows of a register tile. AVX2: 6 x 2 registers of accumulators. AVX-512: 8 x 1, as many as keep its two FMA units
// busy through their latency, and a divisor of every layer width and of the backward's row blocks; 12 and 16 rows ran
// the layers' backward 4-5 % slower, 24 rows 7 %.
constexpr int kRows = kVecs == 1 ? 8 : 6;

// Where row r of a tile's output (or of what it adds) is: r rows of stride floats on (Strided), or row index[r]
// (Indexed: rows of a map, read and written where they are, with no gather or scatter of their own).
struct Strided {
  int64_t stride;
  int64_t offset(int r) const { return r * stride; }
  int64_t shift(int64_t first) const { return first * stride; }  // the pointer's move to row first
  Strided from(int64_t) const { return *this; }                   // the rows from row first on
};

struct Indexed {
  int64_t stride;
  const int64_t* index;
  int64_t offset(int r) const { return index[r] * stride; }
  int64_t shift(int64_t) const { return 0; }
  Indexed from(int64_t first) const { return {stride, index + first}; }
};

// C[r, 0:16 P] = init[r] + sum_k A(r, k) B(k, 0:16 P) for r < R, where A(r, k) = a[r * a_row + k * a_k] and the
// 16 columns of panel p of B(k, :) are at b + p * b_panel + k * b_row; C's rows at c + c_rows.offset(r). init is the
// bias (or zero), plus the rows of add (a residual, or C itself; at add + add_rows.offset(r)) when ACCUMULATE.
template <int R, bool ACCUMULATE, int P, typename CRows, typename AddRows>
inline void tile(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_panel, int64_t b_row,
                 int64_t depth, float* c, CRows c_rows, const float* bias, const float* add, AddRows add_rows) {
  constexpr int V = P * kVecs;  // registers per tile row; the columns of register j at j * kLanes
  Lanes acc[R][V];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) {
      acc[r][j] = bias ? load_lanes(bias + j * kLanes) : Lanes{};
      if (ACCUMULATE) acc[r][j] += load_lanes(add + add_rows.offset(r) + j * kLanes);
    }
  }
  for (int64_t k = 0; k < depth; ++k) {
    Lanes row[V];
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) row[j] = load_lanes(b + j / kVecs * b_panel + k * b_row + j % kVecs * kLanes);
    const float* ak = a + k * a_k;
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      const float s = ak[r * a_row];
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) acc[r][j] += s * row[j];
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) store_lanes(c + c_rows.offset(r) + j * kLanes, acc[r][j]);
  }
}

// tile<R, ACCUMULATE, P> for the R = rows (1 to kRows) left at an edge.
template <bool ACCUMULATE, int P = 1, int R = kRows, typename CRows, typename AddRows>
inline void edge_tile(int rows, const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_panel,
                      int64_t b_row, int64_t depth, float* c, CRows c_rows, const float* bias, const float* add,
                      AddRows add_rows) {
  if constexpr (R > 1) {
    if (rows < R) {
      return edge_tile<ACCUMULATE, P, R - 1>(rows, a, a_row, a_k, b, b_panel, b_row, depth, c, c_rows, bias, add,
                                             add_rows);
    }
  }
  tile<R, ACCUMULATE, P>(a, a_row, a_k, b, b_panel, b_row, depth, c, c_rows, bias, add, add_rows);
}

// Panels a tile takes at once: two with AVX-512 (16 accumulators of 32 registers; each broadcast of A serves two
// FMAs), one with AVX2, whose 6 x 2 accumulators already fill most of its 16 registers.
constexpr int kPanels = kVecs == 1 ? 2 : 1;

// out[r, :] = sum_k A(r, k) B(k, :) + bias [+ add[r, :]] for the rows r < count (at most kRows), A(r, k) at
// a[r * a_row + k * a_k] for k < depth, out and add width floats a row (where out_rows and add_rows say), B given as
// panels: panel p's row k at b + p * b_panel + k * b_row.
template <bool ACCUMULATE, typename CRows, typename AddRows>
inline void row_tile(int count, const float* a, int64_t a_row, int64_t a_k, int64_t depth, const float* b,
                     int64_t b_panel, int64_t b_row, int64_t width, const float* bias, float* out, const float* add,
                     CRows out_rows, AddRows add_rows) {
  for (int64_t p = 0; p < width / kPanel; p += kPanels) {
    const int64_t o = p * kPanel;
    if (p + kPanels <= width / kPanel) {
      edge_tile<ACCUMULATE, kPanels>(count, a, a_row, a_k, b + p * b_panel, b_panel, b_row, depth, out + o, out_rows,
                                     bias ? bias + o : nullptr, add ? add + o : nullptr, add_rows);
    } else {
      edge_tile<ACCUMULATE, 1>(count, a, a_row, a_k, b + p * b_panel, b_panel, b_row, depth, out + o, out_rows,
                               bias ? bias + o : nullptr, add ? add + o : nullptr, add_rows);
    }
  }
}

// out[r, :] = a[r, :] B + bias [+ add[r, :]] for the rows r < count of a (depth floats a row), in tiles of kRows; out
// and add (or null) width floats a row, B as for row_tile. add may be out itself. out_rows and add_rows (Indexed) may
// put out's or add's rows elsewhere: row r at index[r] of a map.
template <bool ACCUMULATE, typename CRows, typename AddRows>
inline void rows_times(int64_t count, const float* a, int64_t depth, const float* b, int64_t b_panel, int64_t b_row,
                       int64_t width, const float* bias, float* out, const float* add, CRows out_rows,
                       AddRows add_rows) {
  for (int64_t t = 0; t < count; t += kRows) {
    row_tile<ACCUMULATE>(static_cast<int>(std::min<int64_t>(kRows, count - t)), a + t * depth, depth, 1, depth, b,
                         b_panel, b_row, width, bias, out + out_rows.shift(t), add ? add + add_rows.shift(t) : nullptr,
                         out_rows.from(t), add_rows.from(t));
  }
}

template <bool ACCUMULATE>
inline void rows_times(int64_t count, const float* a, int64_t depth, const float* b, int64_t b_panel, int64_t b_row,
                       int64_t width, const float* bias, float* out, const float* add) {
  rows_times<ACCUMULATE>(count, a, depth, b, b_panel, b_row, width, bias, out, add, Strided{width}, Strided{width});
}

// The backward of out = a W^T + b over count rows of a (depth floats a row) and of grad = dL/dout (width floats a row),
// W (width, depth) as it is: dw (width, depth) += grad^T a and db (width) += the column sums of grad, then, where da is
// given, da = grad W (count, depth; it may be a itself). The caller keeps the rows in cache across the three.
inline void rows_backward(int64_t count, const float* a, int64_t depth, const float* grad, int64_t width,
                          const float* weight, float* dw, float* db, float* da) {
  // dW[n, :] += sum_m dY[m, n] X[m, :]: a tile's A(r, k) is dY[k, n + r], its B rows X's rows
  for (int64_t n = 0; n < width; n += kRows) {
    row_tile<true>(static_cast<int>(std::min<int64_t>(kRows, width - n)), grad + n, 1, width, count, a, kPanel, depth,
                   depth, nullptr, dw + n * depth, dw + n * depth, Strided{depth}, Strided{depth});
  }
  for (int64_t k = 0; k < count; ++k) {
    const float* row = grad + k * width;
    for (int64_t n = 0; n < width; n += kLanes) store_lanes(db + n, load_lanes(db + n) + load_lanes(row + n));
  }
  // dX[m, :] = sum_n dY[m, n] W[n, :]: W's rows are panels' rows as they are, 16 of its columns a panel
  if (da) rows_times<false>(count, grad, width, weight, kPanel, depth, depth, nullptr, da, nullptr);
}

// W^T of W (width, depth) packed as 16-column panels: panel p's row k (16 floats) at p * depth * kPanel + k * kPanel.
// Loops, not ATen's view, transpose and copy, whose dispatch cost several times the copy of these few kB on each of a
// forward's hundreds of calls.
inline std::vector<float> panels(const float* weight, int64_t width, int64_t depth) {
  std::vector<float> packed(width * depth);
  for (int64_t n = 0; n < width; ++n) {
    for (int64_t k = 0; k < depth; ++k) packed[(n / kPanel * depth + k) * kPanel + n % kPanel] = weight[n * depth + k];
  }
  return packed;
}

}  // namespace dcif
