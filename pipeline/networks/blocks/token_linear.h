// The register tiles of the token linear kernel (token_linear.cpp), shared with the fused feed-forward
// (feed_forward.cpp): C[r, 0:16] of a few rows over the whole contraction, with B's 16-column panel in L1.
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

// C[r, 0:16] = init[r] + sum_k A(r, k) B(k, 0:16) for r < R, where A(r, k) = a[r * a_row + k * a_k] and
// B(k, :) = b + k * b_row. init is the bias (or zero), plus the rows of add (a residual, or C itself) when
// ACCUMULATE.
template <int R, bool ACCUMULATE>
inline void tile(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_row, int64_t depth, float* c,
                 int64_t c_row, const float* bias, const float* add) {
  Lanes acc[R][kVecs];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) {
      acc[r][v] = bias ? load_lanes(bias + v * kLanes) : Lanes{};
      if (ACCUMULATE) acc[r][v] += load_lanes(add + r * c_row + v * kLanes);
    }
  }
  for (int64_t k = 0; k < depth; ++k) {
    Lanes row[kVecs];
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) row[v] = load_lanes(b + k * b_row + v * kLanes);
    const float* ak = a + k * a_k;
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      const float s = ak[r * a_row];
#pragma GCC unroll 2
      for (int v = 0; v < kVecs; ++v) acc[r][v] += s * row[v];
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) store_lanes(c + r * c_row + v * kLanes, acc[r][v]);
  }
}

// tile<R> for the R = rows (1 to kRows) left at an edge.
template <bool ACCUMULATE, int R = kRows>
inline void edge_tile(int rows, const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_row,
                      int64_t depth, float* c, int64_t c_row, const float* bias, const float* add) {
  if constexpr (R > 1) {
    if (rows < R) return edge_tile<ACCUMULATE, R - 1>(rows, a, a_row, a_k, b, b_row, depth, c, c_row, bias, add);
  }
  tile<R, ACCUMULATE>(a, a_row, a_k, b, b_row, depth, c, c_row, bias, add);
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
